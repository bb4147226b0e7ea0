"""Image decoding and the model-input rule, in TensorFlow ops.

Training (folder and embedded data) and serving (the SavedModel's bytes signature) both call these functions,
so a picture gives the model the same tensor whichever way it arrives. Everything here traces into a graph
(`tf.function`, `tf.data.Dataset.map`, SavedModel signatures).

The model-input rule (`to_model_input`): grayscale → antialiased resize of the longer side to S (aspect kept) →
pad to S×S with black, float32 values 0..255.

- Pad, not stretch: a night-sky frame is black outside the camera's field, so black padding adds nothing that
  is not already there, while stretching a 4:3 frame to a square would bend the angles of the streaks the
  model learns from. GMN (the Global Meteor Network software) pads its meteor crops black too.
- Antialiased resize: plain bilinear resizing samples the input every ~3 pixels when going from 640 to 224, so
  a 1-pixel-wide faint streak can fall between the samples and vanish; the antialiased filter averages over
  the whole footprint and keeps it (tests/data/test_preprocess.py shows it).
"""

from __future__ import annotations

import tensorflow as tf

# ITU-R 601 luma weights, the ones tf.image.rgb_to_grayscale and Pillow's convert("L") use.
_LUMA = (0.2989, 0.5870, 0.1140)


def decode_image(image_bytes) -> tf.Tensor:
    """Decode JPEG, PNG, BMP or GIF bytes into a uint8 tensor (H, W, C), C = 1 (gray), 2 (gray+alpha), 3 or 4.

    16-bit PNGs become 8-bit by keeping the high byte (value // 256, i.e. the 0..65535 range scaled onto
    0..255, as libpng's strip_16 and `tf.image.convert_image_dtype` do). An animated GIF gives its first
    frame. TIFF is not something TensorFlow can decode: `meteor_tf.data.folder` reads it with Pillow instead.
    """
    # expand_animations=False: always rank 3 (first GIF frame), so the result has one shape rule for every
    # format.
    image = tf.io.decode_image(image_bytes, channels=0, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, None])
    return image


def to_grayscale(image) -> tf.Tensor:
    """One channel from 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels, in the input's dtype.

    Alpha is dropped (not composited): meteor cameras do not write transparency, and Pillow's convert("L")
    drops it the same way. The channel count may be unknown until run time (`decode_image` with `channels=0`).
    """
    image = tf.convert_to_tensor(image)
    channels = image.shape[-1]
    if channels is not None:  # known while tracing: no branch in the graph
        return image[..., :1] if channels <= 2 else _rgb_to_gray(image[..., :3])
    return tf.cond(tf.shape(image)[-1] >= 3,
                   lambda: _rgb_to_gray(image[..., :3]),
                   lambda: image[..., :1])


def _rgb_to_gray(rgb: tf.Tensor) -> tf.Tensor:
    """Luma of an RGB tensor; float maths so a float32 input loses nothing to rounding."""
    gray = tf.tensordot(tf.cast(rgb, tf.float32), tf.constant(_LUMA, tf.float32), axes=[[-1], [0]])[..., None]
    if rgb.dtype.is_integer:
        gray = tf.cast(tf.clip_by_value(tf.round(gray), rgb.dtype.min, rgb.dtype.max), rgb.dtype)
    return gray


def pad_to_square(image: tf.Tensor, side=None) -> tf.Tensor:
    """Pad an (H, W, C) or (N, H, W, C) image with black to a centred square of `side` (default max(H, W))."""
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    side = tf.maximum(height, width) if side is None else side
    return tf.image.pad_to_bounding_box(image, (side - height) // 2, (side - width) // 2, side, side)


def to_model_input(image, image_size: int) -> tf.Tensor:
    """The model's input from a decoded image: float32 (S, S, 1), values 0..255 (S = `image_size`).

    `image` is (H, W, C) or a batch (N, H, W, C) of equal-size images, any channel count `to_grayscale` takes,
    uint8 (or float 0..255). Gray → antialiased resize keeping the aspect → pad to a square with black; see the
    module docstring for why (benchmarks/input_handling.py measures the alternatives).
    """
    image = to_grayscale(tf.cast(tf.convert_to_tensor(image), tf.float32))
    # Resize first, then pad at the output size: padding a 786504×8 strip to a square at full size would ask
    # for a 786504² tensor (a fuzzed TIFF header did).
    image = pad_to_square(fit_longer_side(image, image_size), image_size)
    image = tf.clip_by_value(image, 0.0, 255.0)  # the filter is non-negative: this guards float round-off
    image.set_shape(image.shape[:-3].concatenate([image_size, image_size, 1]))
    return image


def fit_longer_side(image, size):
    """Antialiased resize keeping the aspect ratio, the longer side becoming `size` (the shorter at least 1).

    antialias=True widens the bilinear kernel to the downscale factor: faint thin streaks are averaged, not skipped.
    """
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    side = tf.cast(tf.maximum(height, width), tf.float32)
    scale = tf.cast(size, tf.float32) / side
    new = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
    return tf.image.resize(image, tf.clip_by_value(new, 1, size), method="bilinear", antialias=True)


def preprocess_bytes(image_bytes, image_size: int) -> tf.Tensor:
    """Encoded image bytes (scalar tf.string) → model input (S, S, 1): decode_image + to_model_input."""
    return to_model_input(decode_image(image_bytes), image_size)


def preprocess_bytes_batch(image_bytes, image_size: int) -> tf.Tensor:
    """A batch (N,) of encoded images of any sizes → (N, S, S, 1) float32, one `preprocess_bytes` per image.

    The form a serving signature on `tf.TensorSpec([None], tf.string)` needs.
    """
    return tf.map_fn(lambda b: preprocess_bytes(b, image_size), image_bytes,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 1], tf.float32))
