"""Fashion-MNIST pretraining (the paper's winning source of features), cached by depth and settings.

Fashion-MNIST's 28×28 grayscale objects on black are upscaled to `fmnist_image_size` (default 32 px: the smallest
input the ResNets take, which keeps a 2-core CPU pretraining in minutes; 224 px, as a GPU user may prefer, costs ~49×).
The images go through the same preprocessing as meteor captures (antialiased resize, gray → RGB inside the model,
"unit" normalisation), so the backbone sees the same input statistics in both stages.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """What a Fashion-MNIST pretraining computes (the shipped backbone's JSON records these)."""

    depth: int = 18
    layout: str = "torchvision"
    image_size: int = 64
    epochs: int = 7  # SGDR cycles 1 + 2 + 4: the schedule ends annealed
    lr: float = 0.01  # the paper's Fashion-MNIST LR (Adam)
    batch_size: int = 128
    examples: int = 0  # 0 = all 60,000
    flip: bool = True  # random horizontal flips (a mirrored garment is still that garment)
    seed: int = 0
    first_cycle_epochs: float = 1.0
    t_mul: float = 2.0
    min_lr: float = 1e-5
    data_dir: Optional[str] = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def settings_from_config(config: ExperimentConfig) -> PretrainSettings:
    fmnist, train, sgdr = config.fmnist, config.train, config.train.sgdr
    return PretrainSettings(depth=config.model.depth, layout=config.model.layout, image_size=fmnist.image_size,
                            epochs=fmnist.epochs, lr=fmnist.lr, batch_size=train.batch_size,
                            examples=fmnist.examples, flip=False, seed=train.seed,
                            first_cycle_epochs=sgdr.first_cycle_epochs, t_mul=sgdr.t_mul,
                            min_lr=sgdr.min_lr, data_dir=config.dataset.tfds_data_dir)


def pretrain_fashion_mnist(config: ExperimentConfig, out_path: Path) -> dict:
    """The runner's cached pretraining for settings the shipped backbone does not cover (`--fmnist_backbone=
    pretrain`): `pretrain_backbone` with the run's settings, no flips, nothing to resume from."""
    return pretrain_backbone(settings_from_config(config), Path(out_path), jit_compile=config.jit_compile)


HEAD_GROUP = "fashion_mnist_head"


def save_pretrained(model, out_path: Path) -> Path:
    """The backbone of a Fashion-MNIST classifier, with every weight of its 10-class head (BatchNorm included) under
    `_extra/fashion_mnist_head/`, so the file's Fashion-MNIST accuracy can be checked from it alone. Atomic."""
    import keras

    from meteor_tf.io import atomic_path
    from meteor_tf.models.weights import save_backbone

    head = model.get_layer("head")
    extra = {f"{HEAD_GROUP}/{layer.name}/{variable.name}": keras.ops.convert_to_numpy(variable)
             for layer in head.layers for variable in layer.weights}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as partial:  # a crash never leaves a half file where the cache is looked up
        save_backbone(model.get_layer("backbone"), str(partial), extra=extra)
    return out_path


def _accuracies(model, images, labels, batch_size: int = 256) -> dict:
    """Test accuracy on all `images` and on the first 1,000, from one prediction."""
    correct = np.argmax(model.predict(images, batch_size=batch_size, verbose=0), axis=1) == labels
    return {"all": float(np.mean(correct)), "first_1000": float(np.mean(correct[:1000]))}


def pretrain_backbone(settings: PretrainSettings, out_path: Path, work_dir: Optional[Path] = None,
                      jit_compile: Optional[bool] = False, verbose: int = 2) -> dict:
    """Trains ResNet-`depth` (GAP → Dense 10) on Fashion-MNIST with Adam and SGDR and saves its backbone.

    With `work_dir`, each epoch is backed up there (kill-safe) and a rerun continues after the last complete
    epoch; the per-epoch log is `work_dir/log.csv`. Writes `out_path` and `out_path.json`: the settings, test
    accuracy on all 10,000 test images and on the first 1,000, epochs, wall time (over all resumed processes),
    precision policy, provenance (CPU, packages, git commit) and the file's sha256. Returns that dict."""
    import keras
    import tensorflow as tf

    from meteor_tf.data.pipeline import make_dataset
    from meteor_tf.evaluation.provenance import provenance
    from meteor_tf.data.fashion_mnist import sha256_of
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.training.callbacks import AtomicBackupAndRestore
    from meteor_tf.training.phases import train_phase

    started = time.time()
    origin = provenance(settings.seed)  # at the start: the code that runs, not what is checked out when it ends
    out_path = Path(out_path)
    elapsed_path = Path(work_dir) / "seconds.json" if work_dir else None
    earlier = json.loads(elapsed_path.read_text())["seconds"] if elapsed_path and elapsed_path.exists() else 0.0
    keras.utils.set_random_seed(settings.seed)
    x_train, y_train = _arrays("train", settings.image_size, settings.examples, settings.data_dir)
    x_test, y_test = _arrays("test", settings.image_size, 0, settings.data_dir)
    log.info("Fashion-MNIST: %d training / %d test images at %d px, ResNet-%d %s, %d epochs, LR %g, batch %d, "
             "policy %s", len(x_train), len(x_test), settings.image_size, settings.depth, settings.layout,
             settings.epochs, settings.lr, settings.batch_size, keras.mixed_precision.global_policy().name)
    model = build_classifier(settings.depth, settings.layout, settings.image_size, normalization="unit",
                             head_units=(), head_dropout=(), num_classes=10)
    train_ds = make_dataset(x_train, y_train, settings.batch_size, training=True, seed=settings.seed)
    if settings.flip:
        flip = keras.layers.RandomFlip("horizontal", seed=settings.seed)
        train_ds = train_ds.map(lambda x, y: (flip(x, training=True), y)).prefetch(tf.data.AUTOTUNE)
    steps = int(np.ceil(len(x_train) / settings.batch_size))
    callbacks = []
    if work_dir is not None:
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)

        def _record_time(epoch, logs):
            from meteor_tf.io import write_json

            write_json(elapsed_path, {"seconds": earlier + time.time() - started, "epochs_done": epoch + 1})

        callbacks = [keras.callbacks.CSVLogger(str(work_dir / "log.csv"), append=True),
                     keras.callbacks.LambdaCallback(on_epoch_end=_record_time),
                     AtomicBackupAndRestore(str(work_dir / "backup"), save_freq="epoch", delete_checkpoint=False)]
    train_phase(model, train_ds, None, epochs=settings.epochs, lr=settings.lr, steps_per_epoch=steps,
                callbacks=callbacks, first_cycle_epochs=settings.first_cycle_epochs, t_mul=settings.t_mul,
                min_lr=settings.min_lr, jit_compile=jit_compile, verbose=verbose)
    accuracy = _accuracies(model, x_test, y_test)
    save_pretrained(model, out_path)
    info = {"name": f"resnet{settings.depth}_fashion_mnist", "settings": settings.to_dict(),
            "test_accuracy": accuracy["all"], "test_accuracy_first_1000": accuracy["first_1000"],
            "train_examples": int(len(x_train)), "test_examples": int(len(x_test)),
            "epochs": settings.epochs, "seconds": earlier + time.time() - started,
            "precision_policy": keras.mixed_precision.global_policy().name,
            "provenance": origin, "file": out_path.name, "sha256": sha256_of(out_path),
            # the runner's cached-file readers look for these flat keys
            "depth": settings.depth, "layout": settings.layout, "image_size": settings.image_size,
            "lr": settings.lr}
    from meteor_tf.io import write_json

    write_json(Path(str(out_path) + ".json"), info)
    log.info("Fashion-MNIST pretraining: test accuracy %.4f (first 1,000: %.4f) in %.0f s -> %s", accuracy["all"],
             accuracy["first_1000"], info["seconds"], out_path)
    return info


def evaluate_backbone_file(path, image_size: int, limit: int = 0, data_dir: Optional[str] = None,
                           depth: int = 18, layout: str = "torchvision") -> dict:
    """Fashion-MNIST test accuracy of a pretrained backbone file with its `_extra/fashion_mnist_head` layers, under
    the current precision policy: {"all": on the first `limit` test images (0 = all 10,000), "first_1000": …}."""
    from meteor_tf.models import weights as w
    from meteor_tf.models.classifier import build_classifier

    extra = w.read_extra(path)
    model = build_classifier(depth, layout, image_size, normalization="unit", head_units=(), head_dropout=(),
                             num_classes=10)
    w.load_backbone(model.get_layer("backbone"), str(path))
    head = model.get_layer("head")
    keys = [f"{HEAD_GROUP}/{layer.name}/{variable.name}" for layer in head.layers for variable in layer.weights]
    missing = [k for k in keys if k not in extra]
    if missing:
        raise ValueError(f"{path} lacks its Fashion-MNIST head ({', '.join(missing[:3])}): it cannot be evaluated")
    for key, variable in zip(keys, [v for layer in head.layers for v in layer.weights]):
        variable.assign(extra[key])
    x_test, y_test = _arrays("test", image_size, limit, data_dir)
    return _accuracies(model, x_test, y_test)
