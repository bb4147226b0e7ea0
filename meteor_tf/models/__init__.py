"""The paper's models: ResNet backbones (He et al. Table 1), the classifier head, freezing phases and weights."""

from meteor_tf.models.classifier import (
    Preprocess,
    build_classifier,
    build_classifier_from_config,
    build_head,
    flops_per_image,
)
from meteor_tf.models.freeze import first_convs, set_phase, trainable_report
from meteor_tf.models.resnet import build_backbone
from meteor_tf.models.weights import (
    WeightsNotFoundError,
    load_backbone,
    load_imagenet_weights,
    save_backbone,
)

__all__ = [
    "Preprocess",
    "WeightsNotFoundError",
    "build_backbone",
    "build_classifier",
    "build_classifier_from_config",
    "build_head",
    "first_convs",
    "flops_per_image",
    "load_backbone",
    "load_imagenet_weights",
    "save_backbone",
    "set_phase",
    "trainable_report",
]
