"""Which layers train in each phase of the paper's transfer learning (section 4).

Phases:

* ``"head"`` — the whole backbone frozen (``trainable=False``, so its BatchNorms run in inference mode on their moving
  statistics, as Keras 3 does for a non-trainable BatchNormalization); only the head trains.
* ``"fine_tune"`` — everything trains except the first ``frozen_convs`` conv layers and their BatchNorms ("we kept the
  first 6 convolutional layers frozen"). "First" is forward order: the stem conv, then each block's main-path convs
  in order, then that block's shortcut (projection) conv. With the default six:

  - ResNet-18: conv1, layer1.0.conv1, layer1.0.conv2, layer1.1.conv1, layer1.1.conv2, layer2.0.conv1.
  - ResNet-34: conv1, layer1.0.conv1, layer1.0.conv2, layer1.1.conv1, layer1.1.conv2, layer1.2.conv1
    (its first stage has three blocks).
  - ResNet-50 / 101 (torchvision layout): conv1, layer1.0.conv1, layer1.0.conv2, layer1.0.conv3,
    layer1.0.downsample.0, layer1.1.conv1.
  - ResNet-50 / 101 (keras layout): conv1_conv, conv2_block1_1_conv, conv2_block1_2_conv, conv2_block1_3_conv,
    conv2_block1_0_conv, conv2_block2_1_conv.
* ``"all"`` — everything trains (training from scratch).

Changing ``trainable`` takes effect at the next ``compile()``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, List, Optional, Tuple

import keras

from meteor_tf.models import resnet

PHASES = ("head", "fine_tune", "all")


def set_phase(model: keras.Model, phase: str, frozen_convs: int = 6) -> keras.Model:
    """Set `trainable` on the classifier's layers for a training phase (see module docstring); returns the model."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if frozen_convs < 0:
        raise ValueError(f"frozen_convs must be >= 0, got {frozen_convs}")
    _set_trainable(model, True)  # start from "all trainable" every time
    backbone = _backbone_of(model)
    if phase == "head":
        backbone.trainable = False
    elif phase == "fine_tune":
        for conv_name in first_convs(backbone, frozen_convs):
            backbone.get_layer(conv_name).trainable = False
            backbone.batch_norm_for(conv_name).trainable = False
    return model


def _set_trainable(model, value):
    """`model.trainable = value` for the model and every layer inside it, nested models included.

    Not just the setter: on the TensorFlow backend assigning the value an attribute already holds is skipped
    (KerasAutoTrackable's short circuit), so `model.trainable = True` would not reach a frozen sub-model.
    """
    model.trainable = value
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _set_trainable(layer, value)
        else:
            layer.trainable = value


def first_convs(model_or_backbone: keras.Model, n: int) -> List[str]:
    """Names of the first `n` conv layers in forward order (stem, each block's main path, then its shortcut)."""
    convs = _backbone_of(model_or_backbone).conv_layers()
    if n > len(convs):
        raise ValueError(f"frozen_convs={n} but the backbone has only {len(convs)} conv layers")
    return [layer.name for layer in convs[:n]]


def _backbone_of(model) -> resnet.ResNetBackbone:
    """The `backbone` sub-model of a classifier, or the model itself when it is a bare backbone."""
    if isinstance(model, resnet.ResNetBackbone):
        return model
    try:
        backbone = model.get_layer("backbone")
    except ValueError:
        raise ValueError(f"model {model.name!r} has no 'backbone' sub-model") from None
    if not isinstance(backbone, resnet.ResNetBackbone):
        # A model saved before backbones knew their structure: its weights load into a freshly built classifier.
        raise ValueError(f"the backbone of {model.name!r} is a plain {type(backbone).__name__}, not a "
                         "meteor_tf ResNetBackbone: build the model with meteor_tf.models.build_classifier and load "
                         "its weights (model.load_weights) to train it in phases")
    return backbone


@dataclasses.dataclass
class TrainableReport:
    """Per weighted layer: (path, trainable, parameter count); totals of trainable / frozen parameters."""

    rows: List[Tuple[str, bool, int]]
    trainable_params: int
    non_trainable_params: int

    @property
    def trainable_layers(self) -> List[str]:
        return [path for path, trainable, _ in self.rows if trainable]

    @property
    def frozen_layers(self) -> List[str]:
        return [path for path, trainable, _ in self.rows if not trainable]

    def __str__(self) -> str:
        lines = [f"{'layer':<40} {'trains':>6} {'params':>12}"]
        lines += [f"{path:<40} {'yes' if trainable else 'no':>6} {count:>12,}" for path, trainable, count in self.rows]
        lines.append(f"trainable parameters: {self.trainable_params:,}; "
                     f"non-trainable (frozen + BatchNorm moving statistics): {self.non_trainable_params:,}")
        return "\n".join(lines)


def trainable_report(model: keras.Model, print_fn: Optional[Callable[[str], None]] = None) -> TrainableReport:
    """Which weighted layers train and how many parameters do; printed with `print_fn` when given."""
    rows = [(path, layer.trainable, _param_count(layer.weights)) for path, layer in _weighted_layers(model)]
    report = TrainableReport(rows, _param_count(model.trainable_weights), _param_count(model.non_trainable_weights))
    if print_fn is not None:
        print_fn(str(report))
    return report


def _weighted_layers(model, prefix=""):
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer, prefix=f"{path}/")
        elif layer.weights:
            yield path, layer


def _param_count(weights):
    return int(sum(math.prod(w.shape) for w in weights))
