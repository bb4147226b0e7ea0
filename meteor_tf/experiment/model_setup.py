"""The model a fold starts from: the run's pretrained backbone file (resolved once) and the seeded classifier."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from meteor_tf import io
from meteor_tf.config import ExperimentConfig
from meteor_tf.run_dir import RunDir

log = logging.getLogger("meteor_tf")


def initial_backbone_path(config: ExperimentConfig, run: RunDir) -> Optional[Path]:
    """Pretrained backbone weights for this run, resolved once and stored in the run dir so every fold starts
    from the same file (and a resumed run does not need the original source again)."""
    from meteor_tf.models import weights as w

    if config.pretrain == "none":
        return None
    path = run.initial_backbone
    if path.exists():
        return path
    from meteor_tf.models.classifier import build_classifier_from_config

    model = build_classifier_from_config(config)
    backbone = model.get_layer("backbone")
    if config.pretrain == "imagenet":
        w.load_imagenet_weights(backbone, source=config.weights)
    else:
        source = Path(config.weights) if config.weights else fashion_mnist_source(config)
        w.load_backbone(backbone, str(source))
    with io.atomic_path(path, unique=True) as partial:  # unique: parallel workers (h5py locks the file)
        w.save_backbone(backbone, str(partial))
    return path


def fashion_mnist_source(config: ExperimentConfig) -> Path:
    """The Fashion-MNIST backbone file for --fmnist_backbone: the shipped preset (sha256-checked), or one pretrained
    and cached for these settings."""
    from meteor_tf.models import presets
    from meteor_tf.training import pretrain

    if config.fmnist_backbone == "shipped":
        preset = presets.fashion_mnist_preset_for(config.depth, config.layout)
        path = presets.preset_path(preset.name)
        log.info("Fashion-MNIST backbone: the shipped preset %s (%s)", preset.name, path)
        return path
    return pretrain.ensure_fashion_mnist_backbone(config)


def build_model(config: ExperimentConfig, backbone_path: Optional[Path], seed: int):
    import keras

    from meteor_tf.models import weights as w
    from meteor_tf.models.classifier import build_classifier_from_config

    keras.utils.set_random_seed(seed)
    model = build_classifier_from_config(config)
    if backbone_path is not None:
        w.load_backbone(model.get_layer("backbone"), str(backbone_path))
    return model
