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
                   input_channels: int = 3, name: Optional[str] = None) -> keras.Model:
    """Build a ResNet backbone from images (N, H, W, C) to the last feature map (N, H/32, W/32, 512 or 2048).

    Args:
        depth: 18, 34, 50 or 101.
        layout: "torchvision" or "keras" (50/101 only); see the module docstring.
        input_shape: (H, W) or (H, W, C); H and W may be None. C, if given, must equal `input_channels`.
        input_channels: 3 for RGB stems, 1 for a grayscale stem (its ImageNet kernels are the RGB kernels summed,
            see `meteor_tf.models.weights`).
        name: model name; default "resnet{depth}" / "resnet{depth}_keras".
    """
    check_architecture(depth, layout)
    shape = _resolve_input_shape(input_shape, input_channels)
    inputs = keras.Input(shape=shape, name="images")
    if layout == "torchvision":
        outputs = _torchvision_network(inputs, depth)
    else:
        outputs = _keras_network(inputs, depth)
    default_name = f"resnet{depth}" if layout == "torchvision" else f"resnet{depth}_keras"
    return keras.Model(inputs, outputs, name=name or default_name)


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


def _torch_conv(filters, kernel_size, strides, name):
    # torchvision initialises convs with kaiming_normal_(mode="fan_out", nonlinearity="relu").
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    return Conv2D(filters, kernel_size, strides=strides, padding="valid", use_bias=False,
                         kernel_initializer=init, name=name)


def _torch_bn(name):
    return layers.BatchNormalization(axis=-1, epsilon=TORCH_BN_EPSILON, momentum=TORCH_BN_MOMENTUM, name=name)


def _torch_conv_bn(x, filters, kernel_size, strides, conv_name, bn_name):
    """Conv with PyTorch's symmetric padding (k // 2 each side), then BatchNorm."""
    pad = kernel_size // 2
    if pad:
        # "same" pads asymmetrically when strided; explicit padding keeps PyTorch's output exactly.
        x = layers.ZeroPadding2D(pad, name=f"{conv_name}_pad")(x)
    x = _torch_conv(filters, kernel_size, strides, conv_name)(x)
    return _torch_bn(bn_name)(x)


def _torchvision_network(x, depth):
    x = _torch_conv_bn(x, 64, 7, 2, "conv1", "bn1")
    x = layers.ReLU(name="relu")(x)
    # Zero padding equals PyTorch's -inf padding here because the input is post-ReLU (>= 0).
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    block_type, blocks = ARCHITECTURES[depth]
    apply_block = _torch_basic_block if block_type == "basic" else _torch_bottleneck_block
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, blocks), start=1):
        for index in range(count):
            strides = 2 if (stage > 1 and index == 0) else 1
            x = apply_block(x, filters, strides, prefix=f"layer{stage}.{index}")
    return x


def _torch_shortcut(x, out_channels, strides, prefix):
    """Identity, or the projection (1×1 conv + BN, torchvision's `downsample`) where the shape changes."""
    if strides == 1 and x.shape[-1] == out_channels:
        return x
    return _torch_conv_bn(x, out_channels, 1, strides, f"{prefix}.downsample.0", f"{prefix}.downsample.1")


def _torch_basic_block(x, filters, strides, prefix):
    y = _torch_conv_bn(x, filters, 3, strides, f"{prefix}.conv1", f"{prefix}.bn1")
    y = layers.ReLU(name=f"{prefix}.relu1")(y)
    y = _torch_conv_bn(y, filters, 3, 1, f"{prefix}.conv2", f"{prefix}.bn2")
    shortcut = _torch_shortcut(x, filters, strides, prefix)
    y = layers.Add(name=f"{prefix}.add")([y, shortcut])
    return layers.ReLU(name=f"{prefix}.out")(y)


def _torch_bottleneck_block(x, filters, strides, prefix):
    y = _torch_conv_bn(x, filters, 1, 1, f"{prefix}.conv1", f"{prefix}.bn1")
    y = layers.ReLU(name=f"{prefix}.relu1")(y)
    # torchvision (v1.5) strides the 3×3 conv, not the first 1×1 conv.
    y = _torch_conv_bn(y, filters, 3, strides, f"{prefix}.conv2", f"{prefix}.bn2")
    y = layers.ReLU(name=f"{prefix}.relu2")(y)
    y = _torch_conv_bn(y, filters * BOTTLENECK_EXPANSION, 1, 1, f"{prefix}.conv3", f"{prefix}.bn3")
    shortcut = _torch_shortcut(x, filters * BOTTLENECK_EXPANSION, strides, prefix)
    y = layers.Add(name=f"{prefix}.add")([y, shortcut])
    return layers.ReLU(name=f"{prefix}.out")(y)


# ---------------------------------------------------------------------------------------------------------------
# keras.applications layout (mirrors keras/src/applications/resnet.py, ResNet50/101 with include_top=False)


def _keras_bn(name):
    return layers.BatchNormalization(axis=-1, epsilon=KERAS_BN_EPSILON, name=name)


def _keras_network(x, depth):
    x = layers.ZeroPadding2D(3, name="conv1_pad")(x)
    x = Conv2D(64, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    x = _keras_bn("conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    _, blocks = ARCHITECTURES[depth]
    for stage, (filters, count) in enumerate(zip(STAGE_FILTERS, blocks), start=2):
        for index in range(1, count + 1):
            strides = 2 if (stage > 2 and index == 1) else 1
            x = _keras_bottleneck_block(x, filters, strides, projection=(index == 1),
                                        prefix=f"conv{stage}_block{index}")
    return x


def _keras_bottleneck_block(x, filters, strides, projection, prefix):
    # Shortcut first, as keras.applications creates it, so the layer order (and .weights.h5 layout) match.
    if projection:
        shortcut = Conv2D(filters * BOTTLENECK_EXPANSION, 1, strides=strides, name=f"{prefix}_0_conv")(x)
        shortcut = _keras_bn(f"{prefix}_0_bn")(shortcut)
    else:
        shortcut = x
    # keras.applications (v1) strides the first 1×1 conv.
    y = Conv2D(filters, 1, strides=strides, name=f"{prefix}_1_conv")(x)
    y = _keras_bn(f"{prefix}_1_bn")(y)
    y = layers.Activation("relu", name=f"{prefix}_1_relu")(y)
    y = Conv2D(filters, 3, padding="same", name=f"{prefix}_2_conv")(y)
    y = _keras_bn(f"{prefix}_2_bn")(y)
    y = layers.Activation("relu", name=f"{prefix}_2_relu")(y)
    y = Conv2D(filters * BOTTLENECK_EXPANSION, 1, name=f"{prefix}_3_conv")(y)
    y = _keras_bn(f"{prefix}_3_bn")(y)
    y = layers.Add(name=f"{prefix}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{prefix}_out")(y)


# ---------------------------------------------------------------------------------------------------------------
# layer bookkeeping shared by freeze.py and weights.py


def conv_layers(backbone: keras.Model) -> list:
    """The backbone's Conv2D layers in forward order: stem, then per block its main-path convs, then its shortcut."""
    convs = [layer for layer in backbone.layers if isinstance(layer, layers.Conv2D)]
    return sorted(convs, key=lambda layer: conv_order_key(layer.name))


def conv_order_key(conv_name: str) -> tuple:
    """Sort key (stage, block, position) for a conv layer name of either layout; the shortcut sorts last."""
    if conv_name in ("conv1", "conv1_conv"):
        return (0, 0, 0)
    if conv_name.startswith("layer"):  # torchvision: layer{s}.{b}.conv{k} | layer{s}.{b}.downsample.0
        stage, block, rest = conv_name[len("layer"):].split(".", 2)
        position = 9 if rest.startswith("downsample") else int(rest[len("conv"):])
        return (int(stage), int(block), position)
    # keras: conv{s}_block{b}_{k}_conv, k = 0 is the shortcut
    stage, block, position, _ = conv_name.split("_")
    position = int(position)
    return (int(stage[len("conv"):]) - 1, int(block[len("block"):]) - 1, 9 if position == 0 else position)


def batch_norm_for(conv_name: str) -> str:
    """Name of the BatchNormalization that follows a conv layer, in either layout."""
    if conv_name == "conv1":
        return "bn1"
    if conv_name.endswith(".downsample.0"):
        return conv_name[:-1] + "1"
    if conv_name.startswith("layer"):
        head, conv = conv_name.rsplit(".", 1)
        return f"{head}.bn{conv[len('conv'):]}"
    return conv_name[: -len("_conv")] + "_bn"
