"""The paper's classifier: grayscale 0..255 image → preprocess → ResNet backbone → global average pool → head.

The head follows the paper (section 4): fully connected layers of 1024 and 512 units with 50% and 25% dropout, then a
softmax over the classes (`meteor_tf.CLASS_NAMES`, column 0 = meteor).
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import numpy as np
from keras import layers, ops

from meteor_tf.models import resnet

NORMALIZATIONS = ("torch", "caffe", "unit")
# ImageNet statistics in RGB order: torchvision's mean/std on 0..1, Caffe's (keras.applications) mean on 0..255.
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="meteor_tf")
class Preprocess(layers.Layer):
    """Grayscale 0..255 → what the backbone's weights expect: replicate to the stem's channels, then normalise.

    Modes: "torch" (x/255, ImageNet mean/std per RGB channel), "caffe" (RGB→BGR, minus the Caffe means, on 0..255),
    "unit" (x/127.5 − 1). A 1-channel stem gets the mean of the per-channel constants, which matches its kernels
    being the RGB kernels summed.
    """

    def __init__(self, mode: str = "unit", channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.mode = mode
        self.channels = channels
        self.scale, self.offset = _affine(mode, channels)

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.channels == 3 and x.shape[-1] == 1:
            # Gray is the same in R, G and B, so "RGB→BGR" needs no flip after replicating.
            x = ops.concatenate([x, x, x], axis=-1)
        elif self.mode == "caffe" and self.channels == 3:
            x = ops.flip(x, axis=-1)  # real RGB input: Caffe weights want BGR
        # x * scale + offset is the normalisation folded into one affine map per channel.
        scale = ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        offset = ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)
        return x * scale + offset

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.channels,)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "channels": self.channels})
        return config


POOLINGS = ("avg", "max", "concat")


@keras.saving.register_keras_serializable(package="meteor_tf")
class GlobalPool(layers.Layer):
    """(N, H, W, C) → (N, C) average, (N, C) maximum, or (N, 2C) [maximum, average] ("concat", fastai's
    AdaptiveConcatPool2d, the default of fastai's `create_head`). One layer, so Grad-CAM can call it on a feature map;
    `build_classifier` uses Keras's GlobalAveragePooling2D for "avg"."""

    def __init__(self, mode: str = "avg", **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r} (--pooling)")
        self.mode = mode

    def call(self, x):
        if self.mode == "avg":
            return ops.mean(x, axis=(1, 2))
        if self.mode == "max":
            return ops.max(x, axis=(1, 2))
        return ops.concatenate([ops.max(x, axis=(1, 2)), ops.mean(x, axis=(1, 2))], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * (2 if self.mode == "concat" else 1))

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _affine(mode, channels):
    """(scale, offset) per channel so that normalised = x * scale + offset, x in 0..255, in the stem's order."""
    if mode == "unit":
        scale, offset = np.full(3, 1 / 127.5), np.full(3, -1.0)
    elif mode == "torch":
        mean, std = np.array(TORCH_MEAN), np.array(TORCH_STD)
        scale, offset = 1 / (255.0 * std), -mean / std
    else:  # caffe: the stem sees BGR channels minus the BGR means
        scale, offset = np.ones(3), -np.array(CAFFE_MEAN_BGR)
    if channels == 1:
        # One gray channel feeds summed RGB kernels: use the mean statistics of the three channels.
        if mode == "torch":
            mean, std = np.mean(TORCH_MEAN), np.mean(TORCH_STD)
            scale, offset = np.array([1 / (255.0 * std)]), np.array([-mean / std])
        else:
            scale, offset = scale[:1], np.array([offset.mean()])
    return tuple(float(v) for v in scale), tuple(float(v) for v in offset)


def build_head(feature_dim: int, head_units: Sequence[int] = (1024, 512),
               head_dropout: Sequence[float] = (0.5, 0.25), num_classes: int = 2, name: str = "head",
               batch_norm: bool = True) -> keras.Model:
    """The paper's head on pooled features: Dense+ReLU+Dropout per width, then a float32 softmax `predictions`.

    `batch_norm=True` adds BatchNormalization on the pooled features and after each Dense+ReLU (before its
    dropout), as fastai's head does — the paper trained with fastai, and its head LR (0.03 with Adam) diverges
    without them (first-epoch loss ~35 on FMNIST-18 features, ~1 with them; see docs/ARCHITECTURE.md).
    Built alone so training on cached backbone features can reuse exactly this model.
    """
    if len(head_units) != len(head_dropout):
        raise ValueError(f"head_units {tuple(head_units)} and head_dropout {tuple(head_dropout)} need the same length")
    features = keras.Input(shape=(feature_dim,), name="features")
    # fastai's BatchNorm1d keeps PyTorch's momentum 0.1; Keras's default 0.99 leaves the moving statistics at their
    # initial 0/1 for hundreds of steps, so inference normalised pooled features ~10x too little (head-only = base rate).
    norm = lambda name: layers.BatchNormalization(momentum=resnet.TORCH_BN_MOMENTUM, name=name)  # noqa: E731
    x = norm("bn0")(features) if batch_norm else features
    for index, (units, rate) in enumerate(zip(head_units, head_dropout), start=1):
        x = layers.Dense(units, activation="relu", name=f"fc{index}")(x)
        if batch_norm:
            x = norm(f"bn{index}")(x)
        x = layers.Dropout(rate, name=f"dropout{index}")(x)
    # float32 softmax keeps probabilities exact under mixed precision.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(features, outputs, name=name)


def build_classifier(depth: int, layout: str = "torchvision", image_size: Optional[int] = 224,
                     normalization: str = "unit", head_units: Sequence[int] = (1024, 512),
                     head_dropout: Sequence[float] = (0.5, 0.25), num_classes: int = 2, stem_channels: int = 3,
                     name: Optional[str] = None, head_batch_norm: bool = True,
                     image_channels: int = 1, pooling: str = "avg") -> keras.Model:
    """Build the full classifier on (N, image_size, image_size, image_channels) float32 images in 0..255: one gray
    channel (replicated to the stem's), or three (three views of a capture: input_handling.py's "views" rules).

    `pooling`: "avg" (the paper), "max" or "concat" (`GlobalPool`; no better here: README "Settings search on 4.0.0").
    Parts, by name: `preprocess` (`Preprocess` layer), `backbone` (sub-model, `resnet.build_backbone`), `avg_pool`,
    `head` (sub-model, `build_head`). `image_size=None` builds a size-agnostic model (at least 32 px at call time).
    """
    resnet.check_architecture(depth, layout)
    if image_size is not None and image_size < resnet.MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {resnet.MIN_IMAGE_SIZE} pixels, got {image_size}")
    if image_channels not in (1, stem_channels):
        raise ValueError(f"image_channels must be 1 or the stem's {stem_channels}, got {image_channels}")
    images = keras.Input(shape=(image_size, image_size, image_channels), dtype="float32", name="image")
    x = Preprocess(normalization, stem_channels, name="preprocess")(images)
    backbone = resnet.build_backbone(depth, layout, input_shape=(image_size, image_size, stem_channels),
                                     input_channels=stem_channels, name="backbone")
    x = backbone(x)
    # the pooling part keeps its name "avg_pool" whatever it pools (features, Grad-CAM and old runs look it up)
    pool = (layers.GlobalAveragePooling2D(name="avg_pool") if pooling == "avg"
            else GlobalPool(pooling, name="avg_pool"))
    x = pool(x)
    outputs = build_head(x.shape[-1], head_units, head_dropout, num_classes, batch_norm=head_batch_norm)(x)
    return keras.Model(images, outputs, name=name or f"resnet{depth}_classifier")


def build_classifier_from_config(config, num_classes: int = 2) -> keras.Model:
    """Build the classifier a `ModelConfig` (or an ExperimentConfig's `model` part) describes (normalisation as its
    weights expect)."""
    from meteor_tf.config import ModelConfig, part_of

    model = part_of(config, ModelConfig)
    return build_classifier(model.depth, model.layout, image_size=model.image_size,
                            normalization=model.normalization, head_units=tuple(model.head_units),
                            head_dropout=tuple(model.head_dropout), num_classes=num_classes,
                            head_batch_norm=model.head_batch_norm)


def as_float32(model: keras.Model) -> keras.Model:
    """`model` computing in float32: a model trained under a mixed policy (bf16/fp16 compute, float32 variables) is
    rebuilt from its config with every layer's policy float32 and given the same weights, so exports, serving and
    TFLite compute as they always did; a float32 model is returned as it is."""
    if all(layer.dtype_policy.name == "float32" for layer in _all_layers(model)):
        return model
    config = _float32_config(keras.saving.serialize_keras_object(model))
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # functional (sub-)models take the global policy when built
    try:
        rebuilt = keras.saving.deserialize_keras_object(config)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _float32_config(node):
    if isinstance(node, dict):
        if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(node.get("config"), dict):
            return {**node, "config": {**node["config"], "name": "float32"}}
        return {key: ("float32" if key == "dtype" and isinstance(value, str) and value.startswith("mixed_")
                      else _float32_config(value)) for key, value in node.items()}
    if isinstance(node, list):
        return [_float32_config(value) for value in node]
    return node


def _all_layers(model):
    """Every layer of `model`, nested models and their layers included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def flops_per_image(depth: int, layout: str = "torchvision", image_size: int = 224,
                    head_units: Sequence[int] = (1024, 512), num_classes: int = 2) -> int:
    """Forward-pass FLOPs for one image: 2 × the multiply-adds of every conv and dense layer.

    Counted from the layer shapes of the built classifier (BatchNorm, ReLU, pooling and additions are left out, as
    in the usual ResNet figures: ResNet-50 ≈ 4.1 G multiply-adds at 224 px).
    """
    model = build_classifier(depth, layout, image_size=image_size, head_units=head_units,
                             head_dropout=tuple(0.0 for _ in head_units), num_classes=num_classes)
    return count_flops(model)


def count_flops(model: keras.Model) -> int:
    """2 × multiply-adds of the Conv2D and Dense layers of a model with static shapes (sub-models included)."""
    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, layers.Conv2D):
            _, height, width, _ = layer.output.shape
            kernel_h, kernel_w, channels_in, channels_out = layer.kernel.shape
            total += height * width * kernel_h * kernel_w * channels_in * channels_out
        elif isinstance(layer, layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return 2 * int(total)


def _leaf_layers(model):
    return (layer for layer in _all_layers(model) if not isinstance(layer, keras.Model))
