"""The head phase on cached features: the frozen backbone's pooled features computed once for every capture, and
one compiled head that trains on them for every fold."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from meteor_tf import METEOR, io
from meteor_tf.config import ExperimentConfig
from meteor_tf.experiment.model_setup import build_model

log = logging.getLogger("meteor_tf")


def use_cached_features(config: ExperimentConfig) -> bool:
    # The head phase sees a frozen backbone in inference mode; without augmentation its features never change.
    return config.cache_features and config.pretrain != "none" and config.augment == "none"


def backbone_features(config: ExperimentConfig, images: np.ndarray, backbone_path: Optional[Path],
                      cache_path: Path, batch_size: int) -> np.ndarray:
    """Pooled features of the frozen pretrained backbone, computed once for every capture (all folds share them)."""
    import keras

    if cache_path.exists():
        feats = np.load(cache_path)
        if feats.dtype.kind == "f":
            return feats
        # written under mixed_bfloat16 before features were stored as float32: NumPy reads bfloat16 back as raw
        # 2-byte voids, and a head trained on those is at chance — recompute
        log.warning("%s holds %s values, not floats (a bfloat16 run's cache of an older meteor_tf): recomputing it",
                    cache_path, feats.dtype)
    model = build_model(config, backbone_path, config.seed)
    extractor = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    # float32 whatever the policy: np.save keeps bfloat16 as a dtype np.load cannot read back
    feats = np.asarray(extractor.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)
    with io.atomic_path(cache_path, unique=True) as partial:
        np.save(partial, feats)
    return feats


def predict_meteor(model, images, batch_size) -> np.ndarray:
    return model.predict(images, batch_size=batch_size, verbose=0)[:, METEOR]


class CachedHead:
    """One head model, compiled once, that trains on cached backbone features for every fold of a run.

    Each fold copies its own freshly seeded head weights in (`start`), trains this model, and copies the result back
    (`finish`); the optimizer's state is reset to its freshly built values per fold. Own code because Keras traces
    `fit`/`predict` functions again after every `compile` and for every new model: on cached features those traces
    (seconds) cost more than the head's few hundred training steps, and were most of a fold's time."""

    def __init__(self, config: ExperimentConfig, feature_dim: int):
        from meteor_tf.models.classifier import build_head
        from meteor_tf.training.phases import compile_for_phase

        self.model = build_head(feature_dim, tuple(config.head_units), tuple(config.head_dropout),
                                batch_norm=config.head_batch_norm)
        compile_for_phase(self.model, config.lr_head_value, weight_decay=config.weight_decay,
                          jit_compile=config.jit_compile, meteor_auc=True)
        self.model.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in self.model.optimizer.variables]

    def start(self, head) -> None:
        self.model.set_weights(head.get_weights())
        for variable, value in zip(self.model.optimizer.variables, self._optimizer_start):
            variable.assign(value)

    def finish(self, head) -> None:
        head.set_weights(self.model.get_weights())

    def predict_meteor(self, features: np.ndarray, batch_size: int) -> np.ndarray:
        return predict_meteor(self.model, features, batch_size)
