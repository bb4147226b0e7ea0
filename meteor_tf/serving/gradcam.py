"""Grad-CAM (Selvaraju et al. 2017): where in a capture the classifier saw the meteor.

The heat map is computed on the last feature map of the backbone (7×7 at 224 px, whatever the depth or layout):
each feature channel is weighted by the spatial mean of the gradient of the *meteor probability* with respect to it,
the weighted sum goes through a ReLU (only evidence *for* a meteor), is upsampled bilinearly to the input size and
scaled to 0..1 per image.

    heatmaps = grad_cam(model, images)                 # keras classifier (or an ExportedModel), (N, S, S) in 0..1
    save_overlay(images[0], heatmaps[0], "FF_0001_cam.png", probability=0.97)

`layer=` names an earlier layer of the backbone to compute it on instead (`stage_outputs(model)` lists the output
of each stage: torchvision's `layer1.1.out` … `layer4.1.out`, keras's `conv2_block3_out` …): a finer map where the
last one is too coarse (1×1 at 32 px, where `layer1`'s is 8×8 and `layer2`'s 4×4), at the price of features that
see less of the capture.

The classifier must have the named parts of `meteor_tf.models.classifier.build_classifier` (`preprocess`,
`backbone`, `avg_pool`, `head`): the explanation model reuses those layers, so it shares the trained weights.
`meteor_tf.serving.export` bakes the same computation into the SavedModel's `explain_images` signature.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from meteor_tf import METEOR, io

PARTS = ("preprocess", "backbone", "avg_pool", "head")


def explanation_model(model, layer: Optional[str] = None):
    """A callable images → (feature map, class probabilities) running the classifier's own parts in turn; the
    feature map is the backbone's output, or that of its layer named `layer`.

    Calling the parts directly (not a second functional keras.Model on them) keeps the feature map the very tensor
    the head consumes, so the tape can differentiate through it. For `layer`, a functional model on the backbone's
    own graph returns that layer's output beside the backbone's: the same tensor its next layers consume."""
    import keras

    names = [child.name for child in model.layers]
    missing = [part for part in PARTS if part not in names]
    if missing:
        raise ValueError(f"Grad-CAM needs a meteor_tf classifier with the parts {PARTS}; {model.name!r} lacks "
                         f"{missing} (its layers: {names})")
    preprocess, backbone, avg_pool, head = (model.get_layer(part) for part in PARTS)
    if layer is None:
        def features(images, training):
            feature_map = backbone(images, training=training)
            return feature_map, feature_map
    else:
        if layer not in {child.name for child in backbone.layers}:
            raise ValueError(f"the backbone has no layer {layer!r}; its stage outputs are {stage_outputs(model)}")
        features = keras.Model(backbone.inputs, [backbone.get_layer(layer).output, backbone.outputs[0]])

    def explainer(images, training=False):
        feature_map, last = features(preprocess(images), training=training)
        return feature_map, head(avg_pool(last), training=training)

    return explainer


def stage_outputs(model) -> list:
    """The names of the backbone layers that end each stage (four for a ResNet), first to last: the layers whose
    outputs feed the next stage, the choices for `grad_cam(..., layer=)`."""
    from meteor_tf.models import resnet

    backbone = model.get_layer("backbone")
    if isinstance(backbone, resnet.ResNetBackbone):
        return list(backbone.stage_ends)
    ends = {}  # a model saved before backbones knew their structure: read the stages off its layer names
    for layer in backbone.layers:
        name = layer.name
        if name.endswith(".out") and name.startswith("layer"):  # torchvision: layer{stage}.{block}.out
            ends[name.split(".")[0]] = name
        elif name.endswith("_out") and "_block" in name:  # keras.applications: conv{stage}_block{n}_out
            ends[name.split("_")[0]] = name
    return list(ends.values())


def cam_tensors(explainer, images, class_index: int = METEOR):
    """Grad-CAM in TensorFlow ops (eager or traced): returns (heatmaps (N, H, W) in 0..1, class probabilities (N,))."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        # Watching the input records the whole forward pass even when the backbone's variables are frozen.
        tape.watch(images)
        feature_map, probabilities = explainer(images, training=False)
        score = tf.cast(probabilities[:, class_index], tf.float32)
        # Images are independent at inference (BatchNorm uses its moving statistics), so the gradient of the sum
        # is each image's own gradient.
        total = tf.reduce_sum(score)
    grads = tf.cast(tape.gradient(total, feature_map), tf.float32)
    feature_map = tf.cast(feature_map, tf.float32)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * feature_map, axis=-1))
    size = tf.shape(images)[1:3]
    cam = tf.image.resize(cam[..., None], size, method="bilinear")[..., 0]
    cam = tf.math.divide_no_nan(cam, tf.reduce_max(cam, axis=(1, 2), keepdims=True))
    return cam, score


def grad_cam(model, images, batch_size: int = 32, return_probabilities: bool = False, layer: Optional[str] = None):
    """Grad-CAM heat maps (N, S, S) in 0..1 for gray 0..255 images (N, S, S, 1) (`preprocess.to_model_input`).

    `model` is a meteor_tf keras classifier, or an `ExportedModel` (its `explain_images` signature, on the last
    feature map). `layer`: a backbone layer to compute the map on (`stage_outputs`), keras classifiers only. With
    `return_probabilities`, returns (heatmaps, meteor probabilities).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] != 1:
        raise ValueError(f"images must be a batch (N, S, S, 1) of gray 0..255 values, got shape {images.shape}")
    if hasattr(model, "explain_images"):  # an exported SavedModel carries its own Grad-CAM signature
        if layer is not None:
            raise ValueError(f"an export's explain_images signature is computed on the last feature map; for "
                             f"layer={layer!r} pass the run's keras model (final/model.keras)")
        out = model.explain_images(images, batch_size=batch_size)
        heatmaps, probabilities = out["heatmap"], out["meteor_probability"]
    else:
        explainer = explanation_model(model, layer)
        # Eager: tracing forward and backward costs seconds, more than eager's per-op overhead on a folder.
        parts = [cam_tensors(explainer, images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        heatmaps = np.concatenate([p[0].numpy() for p in parts]) if parts else np.zeros(images.shape[:3], np.float32)
        probabilities = np.concatenate([p[1].numpy() for p in parts]) if parts else np.zeros((0,), np.float32)
    return (heatmaps, probabilities) if return_probabilities else heatmaps


def overlay(image, heatmap, alpha: float = 0.6, colormap: str = "jet") -> np.ndarray:
    """RGB uint8 (H, W, 3): the heat map's colours over the gray capture, opaque in proportion to the heat, so the
    capture shows unchanged where the model did not look."""
    from matplotlib import colormaps

    gray = np.clip(np.asarray(image, dtype=np.float32).squeeze(), 0, 255)
    heat = np.clip(np.asarray(heatmap, dtype=np.float32).squeeze(), 0, 1)
    if gray.shape != heat.shape or gray.ndim != 2:
        raise ValueError(f"image {np.shape(image)} and heatmap {np.shape(heatmap)} must be one (S, S[, 1]) size")
    colour = colormaps[colormap](heat)[..., :3] * 255.0
    weight = alpha * heat[..., None]
    return np.round(gray[..., None] * (1 - weight) + colour * weight).astype(np.uint8)


def save_overlay(image, heatmap, path, probability: Optional[float] = None, label: Optional[str] = None,
                 alpha: float = 0.6, min_size: int = 256) -> Path:
    """Write the overlay as a PNG (upscaled to at least `min_size` px so small inputs stay readable), with
    "meteor p=0.973" (and the label) in the top-left corner when given. Returns the path."""
    from PIL import Image, ImageDraw, ImageFont

    path = Path(path)
    picture = Image.fromarray(overlay(image, heatmap, alpha))
    scale = max(1, math.ceil(min_size / min(picture.size)))
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.BILINEAR)
    text = " ".join(t for t in (f"meteor p={probability:.3f}" if probability is not None else None, label) if t)
    if text:
        draw = ImageDraw.Draw(picture)
        font = ImageFont.load_default(size=max(12, picture.height // 20))
        box = draw.textbbox((4, 4), text, font=font)
        draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
        draw.text((4, 4), text, fill=(255, 255, 255), font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path) as partial:  # a kill mid-write never leaves a truncated PNG at `path`
        picture.save(partial, format="PNG")
    return path
