"""Image decoding and the model-input rule, in TensorFlow ops.

Training (folder and embedded data) and serving (the SavedModel's bytes signature) both call these functions,
so a picture gives the model the same tensor whichever way it arrives. Everything here traces into a graph
(`tf.function`, `tf.data.Dataset.map`, SavedModel signatures).

The model-input rules (`to_model_input`, `INPUT_RULES`), each giving float32 (S, S, 1), values 0..255:

- "resize": grayscale → antialiased resize of the longer side to S (aspect kept) → pad to S×S with black.
- "detect": grayscale → a 2S-pixel square window of the full-resolution capture around its strongest line-like
  structure (found on a block-max view, caption bands and frame edges not searched) → resized to S. At S = 64 a
  640×480 frame resized whole shrinks a streak ten times, to about a pixel; the window keeps it at half its native
  size (benchmarks/input_handling.py measures both; the README has the figures).

- Pad, not stretch: a night-sky frame is black outside the camera's field, so black padding adds nothing that
  is not already there, while stretching a 4:3 frame to a square would bend the angles of the streaks the
  model learns from. GMN (the Global Meteor Network software) pads its meteor crops black too.
- Antialiased resize: plain bilinear resizing samples the input every ~3 pixels when going from 640 to 224, so
  a 1-pixel-wide faint streak can fall between the samples and vanish; the antialiased filter averages over
  the whole footprint and keeps it (tests/data/test_preprocess.py shows it).
"""

from __future__ import annotations

import tensorflow as tf

from meteor_tf.config import DEFAULT_INPUT_RULE, INPUT_RULES

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


def check_input_rule(rule: str) -> str:
    if rule not in INPUT_RULES:
        raise ValueError(f"input rule {rule!r} is not one of {', '.join(INPUT_RULES)} (--input_rule)")
    return rule


def to_model_input(image, image_size: int, rule: str = DEFAULT_INPUT_RULE) -> tf.Tensor:
    """The model's input from a decoded image: float32 (S, S, 1), values 0..255 (S = `image_size`).

    `image` is (H, W, C) or a batch (N, H, W, C) of equal-size images, any channel count `to_grayscale` takes,
    uint8 (or float 0..255). `rule` is one of `INPUT_RULES` (module docstring): "resize" is gray → antialiased
    resize keeping the aspect → pad to a square with black; "detect" is gray → `detection_window`.
    """
    image = to_grayscale(tf.cast(tf.convert_to_tensor(image), tf.float32))
    if check_input_rule(rule) == "detect" and len(image.shape) == 4:
        image = tf.map_fn(lambda one: detection_window(one, image_size), image,
                          fn_output_signature=tf.TensorSpec([image_size, image_size, 1], tf.float32))
    elif rule == "detect":
        image = detection_window(image, image_size)
    else:
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


def preprocess_bytes(image_bytes, image_size: int, rule: str = DEFAULT_INPUT_RULE) -> tf.Tensor:
    """Encoded image bytes (scalar tf.string) → model input (S, S, 1): decode_image + to_model_input."""
    return to_model_input(decode_image(image_bytes), image_size, rule)


def preprocess_bytes_batch(image_bytes, image_size: int, rule: str = DEFAULT_INPUT_RULE) -> tf.Tensor:
    """A batch (N,) of encoded images of any sizes → (N, S, S, 1) float32, one `preprocess_bytes` per image.

    The form a serving signature on `tf.TensorSpec([None], tf.string)` needs.
    """
    return tf.map_fn(lambda b: preprocess_bytes(b, image_size, rule), image_bytes,
                     fn_output_signature=tf.TensorSpec([image_size, image_size, 1], tf.float32))


# ----------------------------------------------------------------------------------------------------------------
# The "detect" rule: where in a large frame to look

DETECT_WORK_SIDE = 256  # the detector looks at a block-max view of at most this side
DETECT_LINE = 7  # a structure must hold a straight segment of this many work pixels in some direction
CAPTION_BAND = 0.08  # top and bottom bands where cameras burn captions and timestamps: not searched
EDGE_BAND = 0.03  # nor the left and right edges (frame borders)


def _height_width(image):
    shape = tf.shape(image)
    return shape[-3], shape[-2]


def _upscale_small(image, size):
    """Bilinear upscale so that the longer side is at least `size` (no-op for larger images)."""
    height, width = _height_width(image)
    side = tf.maximum(height, width)

    def up():
        scale = tf.cast(size, tf.float32) / tf.cast(side, tf.float32)
        new = tf.cast(tf.math.ceil(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
        return tf.image.resize(image, tf.maximum(new, 1), method="bilinear")

    return tf.cond(side < size, up, lambda: image)


def block_max(image, size):
    """Downscale (H, W, C) by the maximum over f×f blocks, f = ceil(longer side / size): a one-pixel streak keeps
    its full brightness. Edges are padded by repeating the last row/column, so no black seams appear."""
    image = _upscale_small(image, size)
    height, width = _height_width(image)
    f = (tf.maximum(height, width) + size - 1) // size
    out_h, out_w = (height + f - 1) // f, (width + f - 1) // f
    rank = len(image.shape)
    pad = [[0, 0]] * (rank - 3) + [[0, out_h * f - height], [0, out_w * f - width], [0, 0]]
    image = tf.pad(image, pad, mode="SYMMETRIC")
    lead = tf.shape(image)[:-3]
    blocks = tf.reshape(image, tf.concat([lead, [out_h, f, out_w, f, tf.shape(image)[-1]]], 0))
    return tf.reduce_max(blocks, axis=[-4, -2])


def _shifted(padded, dy, dx, pad):
    """An (H, W) image padded by `pad` on every side, read back shifted by (dy, dx)."""
    h, w = tf.shape(padded)[0] - 2 * pad, tf.shape(padded)[1] - 2 * pad
    return tf.slice(padded, [pad + dy, pad + dx], [h, w])


def line_opening(x, length: int = DETECT_LINE, directions: int = 8):
    """Max over directions of the grey opening of (H, W) `x` by a straight segment of `length` pixels: keeps
    what holds such a segment (streaks, trails), removes stars, noise and text strokes shorter than that."""
    import math

    half = length // 2
    padded = tf.pad(x, [[half, half], [half, half]], mode="SYMMETRIC")
    out = tf.zeros_like(x)
    for j in range(directions):
        a = math.pi * j / directions
        offsets = sorted({(round(k * math.sin(a)), round(k * math.cos(a))) for k in range(-half, half + 1)})
        eroded = tf.reduce_min(tf.stack([_shifted(padded, dy, dx, half) for dy, dx in offsets]), 0)
        eroded = tf.pad(eroded, [[half, half], [half, half]], mode="SYMMETRIC")
        out = tf.maximum(out, tf.reduce_max(tf.stack([_shifted(eroded, -dy, -dx, half) for dy, dx in offsets]), 0))
    return out


def line_response(image, widen: bool = True):
    """(H, W, 1) float gray → (line-likeness on the work grid (h, w), the block factor f from the capture to it):
    `line_opening` of the white top-hat (what is brighter than its 5-px surroundings) of a `block_max` view of at
    most `DETECT_WORK_SIDE`. `widen`: the top-hat is dilated 3×3 first, so a 1-px line at any angle holds the
    discrete segments of `line_opening`; stars stay shorter than DETECT_LINE and drop out either way."""
    longer = tf.reduce_max(_height_width(image))
    work_side = tf.minimum(longer, DETECT_WORK_SIDE)
    work = block_max(image, work_side)[None]
    opened = tf.nn.max_pool2d(-tf.nn.max_pool2d(-work, 5, 1, "SAME"), 5, 1, "SAME")
    tophat = work - opened
    if widen:
        tophat = tf.nn.max_pool2d(tophat, 3, 1, "SAME")
    return line_opening(tophat[0, ..., 0]), (longer + work_side - 1) // work_side  # the factor block_max uses


def detection_window(image, size: int, mask_bands: bool = True, widen: bool = True) -> tf.Tensor:
    """(H, W, 1) float gray → (size, size, 1): the 2·size-pixel square of the full-resolution capture centred on
    its strongest line-like structure (`detection_centre`), resized to `size` and padded. A capture no larger than
    the window is the "resize" rule's picture. The "detect" rule uses the defaults; benchmarks/input_handling.py
    measures the others."""
    centre_y, centre_x = detection_centre(image, mask_bands, widen)
    return window_around(image, centre_y, centre_x, 2 * size, size)


def detection_centre(image, mask_bands: bool = True, widen: bool = True):
    """(H, W, 1) float gray → (row, column) in the capture of its strongest line-like structure (`line_response`,
    smoothed 5×5; with `mask_bands` the caption bands and frame edges are not searched)."""
    score, f = line_response(image, widen)
    score = tf.nn.avg_pool2d(score[None, ..., None], 5, 1, "SAME")[0, ..., 0]
    shape = tf.shape(score)
    if mask_bands:
        rows = tf.cast(tf.range(shape[0]), tf.float32) / tf.cast(shape[0], tf.float32)
        cols = tf.cast(tf.range(shape[1]), tf.float32) / tf.cast(shape[1], tf.float32)
        searched = (((rows >= CAPTION_BAND) & (rows < 1 - CAPTION_BAND))[:, None]
                    & ((cols >= EDGE_BAND) & (cols < 1 - EDGE_BAND))[None, :])
        score = tf.where(searched, score, tf.zeros_like(score))
    flat = tf.argmax(tf.reshape(score, [-1]), output_type=tf.int32)
    return (flat // shape[1]) * f + f // 2, (flat % shape[1]) * f + f // 2


def window_around(image, centre_y, centre_x, side, size):
    """The side×side square of (H, W, 1) `image` centred on (centre_y, centre_x), moved inside the frame and capped
    by its longer side, resized to `size` and padded to a square."""
    height, width = _height_width(image)
    side = tf.minimum(side, tf.maximum(height, width))
    top = tf.clip_by_value(centre_y - side // 2, 0, tf.maximum(height - side, 0))
    left = tf.clip_by_value(centre_x - side // 2, 0, tf.maximum(width - side, 0))
    window = image[top:top + side, left:left + side]
    return pad_to_square(fit_longer_side(window, size), size)
