"""Fashion-MNIST pretraining (the paper's winning source of features), cached by depth and settings.

Fashion-MNIST's 28×28 grayscale objects on black are upscaled to `fmnist_image_size` (default 32 px: the smallest
input the ResNets take, which keeps a 2-core CPU pretraining in minutes; 224 px, as a GPU user may prefer, costs ~49×).
The images go through the same preprocessing as meteor captures (antialiased resize, gray → RGB inside the model,
"unit" normalisation), so the backbone sees the same input statistics in both stages.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from meteor_tf.config import ExperimentConfig

log = logging.getLogger("meteor_tf")


def default_cache_dir() -> Path:
    return Path(os.environ.get("METEOR_TF_CACHE", Path.home() / ".cache" / "meteor_tf")) / "pretrained"


def backbone_cache_path(config: ExperimentConfig) -> Path:
    """Where the Fashion-MNIST backbone for these settings lives (one file per depth, layout and recipe)."""
    base = Path(config.pretrain_cache_dir) if config.pretrain_cache_dir else default_cache_dir()
    n = config.fmnist_examples or 60000
    name = (f"fashion_mnist-resnet{config.depth}-{config.layout}-{config.fmnist_image_size}px-"
            f"{config.fmnist_epochs}ep-{n}ex-lr{config.fmnist_lr:g}-bs{config.batch_size}-seed{config.seed}")
    return base / f"{name}.weights.h5"


def ensure_fashion_mnist_backbone(config: ExperimentConfig) -> Path:
    """The cached backbone path, pretraining first (with progress) when nothing is cached."""
    path = backbone_cache_path(config)
    if path.exists():
        log.info("Fashion-MNIST backbone: using the cached %s", path)
        return path
    log.info("Fashion-MNIST backbone: none cached at %s; pretraining ResNet-%d now (%d epochs at %d px)",
             path, config.depth, config.fmnist_epochs, config.fmnist_image_size)
    pretrain_fashion_mnist(config, path)
    return path


def _arrays(split: str, image_size: int, limit: int, data_dir: Optional[str]):
    import tensorflow as tf

    from meteor_tf.data.fashion_mnist import load_fashion_mnist
    from meteor_tf.data.preprocess import to_model_input

    ds = load_fashion_mnist(split, data_dir=data_dir)
    if limit:
        ds = ds.take(limit)
    ds = ds.map(lambda ex: (to_model_input(ex["image"], image_size), tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    xs, ys = [], []
    for x, y in ds.batch(4096):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def pretrain_fashion_mnist(config: ExperimentConfig, out_path: Path) -> dict:
    """Trains ResNet-`depth` (GAP → Dense 10) on Fashion-MNIST at the paper's LR with SGDR and saves its backbone.

    Writes `out_path` and `out_path.json` (test accuracy, time, settings); returns that dict."""
    import keras

    from meteor_tf.data.pipeline import make_dataset
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.weights import save_backbone
    from meteor_tf.training.phases import train_phase

    started = time.time()
    keras.utils.set_random_seed(config.seed)
    x_train, y_train = _arrays("train", config.fmnist_image_size, config.fmnist_examples, config.tfds_data_dir)
    x_test, y_test = _arrays("test", config.fmnist_image_size, 0, config.tfds_data_dir)
    log.info("Fashion-MNIST: %d training / %d test images at %d px", len(x_train), len(x_test),
             config.fmnist_image_size)
    model = build_classifier(config.depth, config.layout, config.fmnist_image_size, normalization="unit",
                             head_units=(), head_dropout=(), num_classes=10)
    train_ds = make_dataset(x_train, y_train, config.batch_size, training=True, seed=config.seed)
    test_ds = make_dataset(x_test, y_test, config.batch_size * 4, training=False)
    steps = int(np.ceil(len(x_train) / config.batch_size))
    train_phase(model, train_ds, None, epochs=config.fmnist_epochs, lr=config.fmnist_lr, steps_per_epoch=steps,
                first_cycle_epochs=config.sgdr_first_cycle_epochs, t_mul=config.sgdr_t_mul,
                m_mul=config.sgdr_m_mul, min_lr=config.sgdr_min_lr, jit_compile=config.jit_compile, verbose=1)
    test_accuracy = float(np.mean(np.argmax(model.predict(test_ds, verbose=0), axis=1) == y_test))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name.replace(".weights.h5", ".tmp.weights.h5"))
    save_backbone(model.get_layer("backbone"), str(tmp))
    tmp.replace(out_path)  # a crash never leaves a half file where the cache is looked up
    info = {"test_accuracy": test_accuracy, "seconds": time.time() - started, "train_examples": int(len(x_train)),
            "test_examples": int(len(x_test)), "depth": config.depth, "layout": config.layout,
            "image_size": config.fmnist_image_size, "epochs": config.fmnist_epochs, "lr": config.fmnist_lr}
    Path(str(out_path) + ".json").write_text(json.dumps(info, indent=2))
    log.info("Fashion-MNIST pretraining: test accuracy %.4f in %.0f s -> %s", test_accuracy, info["seconds"],
             out_path)
    return info
