"""ResNet-18/34/50/101 backbones (He et al. 2016, Table 1; the paper's Table 1) in pure Keras 3.

Two layouts of the same network:

* ``"torchvision"`` (default, any depth) — the PyTorch model the paper fine-tuned: no conv biases, BatchNorm
  epsilon 1e-5, stride on the 3×3 conv of a bottleneck block ("ResNet v1.5"), PyTorch's symmetric padding on strided
  convs. Layer names are torchvision's module names (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer1.0.bn1``,
  ``layer2.0.downsample.0``, …), so a torchvision/timm state dict maps onto it key by key.
* ``"keras"`` (depth 50 and 101 only) — ``keras.applications.ResNet50/101``: conv biases, epsilon 1.001e-5, stride
  on the first 1×1 conv, and its layer names (``conv1_conv``, ``conv2_block1_1_conv``, …), so its ImageNet weights
  copy by name.

Both end at the last feature map (no pooling). Only ``keras.layers`` are used, so the builders run on any backend.

The backbone is a `ResNetBackbone` (a functional `keras.Model`, as keras-hub's `ResNetBackbone` is): it knows its
depth, layout and its conv layers in forward order with the BatchNorm after each, and serialises as
``{"depth", "layout", "input_shape", "input_channels"}`` through `get_config`, so freezing, weight loading and export
ask the model instead of parsing layer names or carrying depth and layout beside it.
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
from keras import layers

from meteor_tf.config import DEPTHS, LAYOUTS
from meteor_tf.models.conv import Conv2D
STAGE_FILTERS = (64, 128, 256, 512)
# depth -> (block type, blocks per stage), He et al. Table 1
ARCHITECTURES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
BOTTLENECK_EXPANSION = 4
TORCH_BN_EPSILON = 1e-5
KERAS_BN_EPSILON = 1.001e-5
# PyTorch's BatchNorm momentum 0.1 is Keras's 0.9 (Keras weights the old value).
TORCH_BN_MOMENTUM = 0.9
MIN_IMAGE_SIZE = 32


def check_architecture(depth: int, layout: str) -> None:
    """Raise ValueError unless (depth, layout) names a network this module builds."""
    if depth not in ARCHITECTURES:
        raise ValueError(f"depth must be one of {DEPTHS}, got {depth!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "keras" and depth not in (50, 101):
        raise ValueError(f"layout='keras' exists for depth 50 and 101 only (keras.applications has no ResNet-{depth}); "
                         "use layout='torchvision'.")


def feature_channels(depth: int) -> int:
    """Channels of the backbone's last feature map (512 for basic blocks, 2048 for bottlenecks)."""
    block, _ = ARCHITECTURES[depth]
    return STAGE_FILTERS[-1] * (BOTTLENECK_EXPANSION if block == "bottleneck" else 1)


def build_backbone(depth: int, layout: str = "torchvision", input_shape: Sequence[Optional[int]] = (None, None, 3),
                   input_channels: int = 3, name: Optional[str] = None) -> "ResNetBackbone":
    """Build a ResNet backbone from images (N, H, W, C) to the last feature map (N, H/32, W/32, 512 or 2048).

    Args:
        depth: 18, 34, 50 or 101.
        layout: "torchvision" or "keras" (50/101 only); see the module docstring.
        input_shape: (H, W) or (H, W, C); H and W may be None. C, if given, must equal `input_channels`.
        input_channels: 3 for RGB stems, 1 for a grayscale stem (its ImageNet kernels are the RGB kernels summed,
            see `meteor_tf.models.weights`).
        name: model name; default "resnet{depth}" / "resnet{depth}_keras".
    """
    return ResNetBackbone(depth, layout, input_shape=input_shape, input_channels=input_channels, name=name)


@keras.saving.register_keras_serializable(package="meteor_tf")
class ResNetBackbone(keras.Model):
    """A ResNet-18/34/50/101 backbone that knows its own structure (see the module docstring).

    `convs` lists (conv layer name, name of its BatchNormalization) in forward order: the stem, then per block its
    main-path convs in order, then that block's shortcut (projection) conv. `stage_ends` names the layer whose output
    ends each of the four stages (Grad-CAM's choices of feature map).
    """

    def __init__(self, depth: int, layout: str = "torchvision", input_shape: Sequence[Optional[int]] = (None, None, 3),
                 input_channels: int = 3, name: Optional[str] = None, dtype=None, **kwargs):
        check_architecture(depth, layout)
        shape = _resolve_input_shape(input_shape, input_channels)
        inputs = keras.Input(shape=shape, name="images")
        make = _Layers(dtype)
        network = _torchvision_network if layout == "torchvision" else _keras_network
        outputs = network(inputs, depth, make)
        default_name = f"resnet{depth}" if layout == "torchvision" else f"resnet{depth}_keras"
        super().__init__(inputs, outputs, name=name or default_name, **kwargs)
        self.depth = depth
        self.layout = layout
        self.input_channels = input_channels
        self._input_shape_arg = tuple(shape)
        self.convs = tuple(make.convs)
        self.stage_ends = tuple(make.stage_ends)

    @property
    def feature_channels(self) -> int:
        return feature_channels(self.depth)

    def conv_layers(self) -> list:
        """The Conv2D layers in forward order (see the class docstring)."""
        return [self.get_layer(conv) for conv, _ in self.convs]

    def batch_norm_for(self, conv_name: str) -> keras.layers.Layer:
        """The BatchNormalization that follows conv layer `conv_name`."""
        for conv, batch_norm in self.convs:
            if conv == conv_name:
                return self.get_layer(batch_norm)
        raise ValueError(f"{self.name!r} has no conv layer {conv_name!r}")

    def get_config(self):
        return {"depth": self.depth, "layout": self.layout, "input_shape": list(self._input_shape_arg),
                "input_channels": self.input_channels, "name": self.name, "trainable": self.trainable,
                # the layers' policy (a functional model's own policy is the global one when it was built)
                "dtype": keras.dtype_policies.serialize(self.get_layer(self.convs[0][0]).dtype_policy)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


class _Layers:
    """Makes the backbone's layers with one dtype policy and records each conv with its BatchNorm in forward order."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.convs: list = []
        self.stage_ends: list = []

    def __call__(self, layer_class, *args, **kwargs):
        return layer_class(*args, dtype=self.dtype, **kwargs)

    def record(self, conv_name: str, bn_name: str) -> None:
        self.convs.append((conv_name, bn_name))

    def stage_end(self, x):
        """Marks `x` (a block's output) as the end of a stage; returns it."""
        self.stage_ends.append(x._keras_history.operation.name)
        return x


def _resolve_input_shape(input_shape, input_channels):
    shape = tuple(input_shape)
    if len(shape) == 2:
        shape = shape + (input_channels,)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (H, W) or (H, W, C), got {input_shape!r}")
    if shape[-1] != input_channels:
        raise ValueError(f"input_shape {input_shape!r} has {shape[-1]} channels but input_channels={input_channels}")
    if input_channels not in (1, 3):
        raise ValueError(f"input_channels must be 1 or 3, got {input_channels}")
    for side in shape[:2]:
        if side is not None and side < MIN_IMAGE_SIZE:
            raise ValueError(f"images must be at least {MIN_IMAGE_SIZE} pixels on a side, got {input_shape!r}")
    return shape


# ---------------------------------------------------------------------------------------------------------------
# torchvision layout


def _torch_conv(make, filters, kernel_size, strides, name):
    # torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    return make(Conv2D, filters, kernel_size, strides=strides, padding="valid", use_bias=False,
                kernel_initializer=init, name=name)


def _torch_bn(make, name):
    return make(layers.BatchNormalization, axis=-1, epsilon=TORCH_BN_EPSILON, momentum=TORCH_BN_MOMENTUM, name=name)


def _torch_conv_bn(make, x, filters, kernel_size, strides, conv_name, bn_name):
    """Conv with PyTorch's symmetric padding (k // 2 each side), then BatchNorm."""
    pad = kernel_size // 2
    if pad:
        # "same" pads asymmetrically when strided; explicit padding keeps PyTorch's output exactly.
        x = make(layers.ZeroPadding2D, pad, name=f"{conv_name}_pad")(x)
    x = _torch_conv(make, filters, kernel_size, strides, conv_name)(x)
    make.record(conv_name, bn_name)
    return _torch_bn(make, bn_name)(x)


def _torchvision_network(x, depth, make):
    x = _torch_conv_bn(make, x, 64, 7, 2, "conv1", "bn1")
    x = make(layers.ReLU, name="relu")(x)
    # Zero padding equals PyTorch's -inf padding here because the input is post-ReLU (>= 0).
    x = make(layers.ZeroPadding2D, 1, name="maxpool_pad")(x)
    x = make(layers.MaxPooling2D, 3, strides=2, name="maxpool")(x)
    block_type, blocks = ARCHITECTURES[depth]
    apply_block = _torch_basic_block if block_type == "basic" else _torch_bottleneck_block
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, blocks), start=1):
        for index in range(count):
            strides = 2 if (stage > 1 and index == 0) else 1
            x = apply_block(make, x, filters, strides, prefix=f"layer{stage}.{index}")
        make.stage_end(x)
    return x


def _torch_shortcut(make, x, out_channels, strides, prefix):
    """Identity, or the projection (1×1 conv + BN, torchvision's `downsample`) where the shape changes."""
    if strides == 1 and x.shape[-1] == out_channels:
        return x
    return _torch_conv_bn(make, x, out_channels, 1, strides, f"{prefix}.downsample.0", f"{prefix}.downsample.1")


def _torch_basic_block(make, x, filters, strides, prefix):
    y = _torch_conv_bn(make, x, filters, 3, strides, f"{prefix}.conv1", f"{prefix}.bn1")
    y = make(layers.ReLU, name=f"{prefix}.relu1")(y)
    y = _torch_conv_bn(make, y, filters, 3, 1, f"{prefix}.conv2", f"{prefix}.bn2")
    shortcut = _torch_shortcut(make, x, filters, strides, prefix)
    y = make(layers.Add, name=f"{prefix}.add")([y, shortcut])
    return make(layers.ReLU, name=f"{prefix}.out")(y)


def _torch_bottleneck_block(make, x, filters, strides, prefix):
    y = _torch_conv_bn(make, x, filters, 1, 1, f"{prefix}.conv1", f"{prefix}.bn1")
    y = make(layers.ReLU, name=f"{prefix}.relu1")(y)
    # torchvision (v1.5) strides the 3×3 conv, not the first 1×1 conv.
    y = _torch_conv_bn(make, y, filters, 3, strides, f"{prefix}.conv2", f"{prefix}.bn2")
    y = make(layers.ReLU, name=f"{prefix}.relu2")(y)
    y = _torch_conv_bn(make, y, filters * BOTTLENECK_EXPANSION, 1, 1, f"{prefix}.conv3", f"{prefix}.bn3")
    shortcut = _torch_shortcut(make, x, filters * BOTTLENECK_EXPANSION, strides, prefix)
    y = make(layers.Add, name=f"{prefix}.add")([y, shortcut])
    return make(layers.ReLU, name=f"{prefix}.out")(y)


# ---------------------------------------------------------------------------------------------------------------
# keras.applications layout (mirrors keras/src/applications/resnet.py, ResNet50/101 with include_top=False)


def _keras_bn(make, name):
    return make(layers.BatchNormalization, axis=-1, epsilon=KERAS_BN_EPSILON, name=name)


def _keras_network(x, depth, make):
    x = make(layers.ZeroPadding2D, 3, name="conv1_pad")(x)
    x = make(Conv2D, 64, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    make.record("conv1_conv", "conv1_bn")
    x = _keras_bn(make, "conv1_bn")(x)
    x = make(layers.Activation, "relu", name="conv1_relu")(x)
    x = make(layers.ZeroPadding2D, 1, name="pool1_pad")(x)
    x = make(layers.MaxPooling2D, 3, strides=2, name="pool1_pool")(x)
    _, blocks = ARCHITECTURES[depth]
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, blocks), start=2):
        for index in range(1, count + 1):
            strides = 2 if (stage > 2 and index == 1) else 1
            x = _keras_bottleneck_block(make, x, filters, strides, projection=(index == 1),
                                        prefix=f"conv{stage}_block{index}")
        make.stage_end(x)
    return x


def _keras_bottleneck_block(make, x, filters, strides, projection, prefix):
    # Shortcut first, as keras.applications creates it, so the layer order (and .weights.h5 layout) match.
    if projection:
        shortcut = make(Conv2D, filters * BOTTLENECK_EXPANSION, 1, strides=strides, name=f"{prefix}_0_conv")(x)
        shortcut = _keras_bn(make, f"{prefix}_0_bn")(shortcut)
    else:
        shortcut = x
    # keras.applications (v1) strides the first 1×1 conv.
    y = make(Conv2D, filters, 1, strides=strides, name=f"{prefix}_1_conv")(x)
    y = _keras_bn(make, f"{prefix}_1_bn")(y)
    y = make(layers.Activation, "relu", name=f"{prefix}_1_relu")(y)
    y = make(Conv2D, filters, 3, padding="same", name=f"{prefix}_2_conv")(y)
    y = _keras_bn(make, f"{prefix}_2_bn")(y)
    y = make(layers.Activation, "relu", name=f"{prefix}_2_relu")(y)
    y = make(Conv2D, filters * BOTTLENECK_EXPANSION, 1, name=f"{prefix}_3_conv")(y)
    y = _keras_bn(make, f"{prefix}_3_bn")(y)
    # Forward order puts the main path first and the shortcut last (freeze.py counts convs in this order).
    for position in (1, 2, 3) + ((0,) if projection else ()):
        make.record(f"{prefix}_{position}_conv", f"{prefix}_{position}_bn")
    y = make(layers.Add, name=f"{prefix}_add")([shortcut, y])
    return make(layers.Activation, "relu", name=f"{prefix}_out")(y)
