import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from meteor_tf.data import preprocess


def encode(array, fmt, mode=None):
    buffer = io.BytesIO()
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF"])
def test_decode_formats_rgb(fmt):
    image = preprocess.decode_image(encode(np.full((12, 20, 3), 200, np.uint8), fmt))
    assert image.dtype == tf.uint8 and image.shape[:2] == (12, 20)
    assert abs(int(image.numpy()[0, 0, 0]) - 200) <= 3


@pytest.mark.parametrize("mode,channels", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
def test_decode_channels_and_grayscale(mode, channels):
    shape = (10, 10) if channels == 1 else (10, 10, channels)
    array = np.full(shape, 100, np.uint8)
    image = preprocess.decode_image(encode(array, "PNG", mode))
    assert image.shape == (10, 10, channels)
    gray = preprocess.to_grayscale(image)
    assert gray.shape == (10, 10, 1) and gray.dtype == tf.uint8
    assert np.all(gray.numpy() == 100)  # alpha is dropped, equal RGB stays the same gray


def test_16_bit_png_keeps_the_high_byte():
    array = np.array([[0, 255, 256, 257, 32768, 65535]], np.uint16).repeat(2, axis=0)
    image = preprocess.decode_image(encode(array, "PNG"))
    assert image.dtype == tf.uint8
    np.testing.assert_array_equal(image.numpy()[0, :, 0], [0, 0, 1, 1, 128, 255])


def test_grayscale_with_channels_unknown_while_tracing():
    fn = tf.function(preprocess.to_grayscale, input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 0] = 255.0
    np.testing.assert_allclose(fn(rgb).numpy(), 0.2989 * 255.0, rtol=1e-6)
    np.testing.assert_array_equal(fn(np.full((2, 2, 1), 7.0, np.float32)).numpy(), 7.0)


def test_model_input_pads_with_black_and_keeps_geometry():
    wide = np.full((20, 40, 1), 255, np.uint8)  # 2:1 white frame
    out = preprocess.to_model_input(wide, 32).numpy()
    assert out.shape == (32, 32, 1) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.all(out[:6] == 0) and np.all(out[-6:] == 0)  # black bands above and below (centred padding)
    np.testing.assert_allclose(out[10:22], 255.0, atol=1e-3)  # the frame, not stretched over the square


def test_model_input_of_an_extreme_strip_is_cheap():
    # A fuzzed TIFF header gave a 786504x8 image (6.3 MP, under the pixel limit): padding it to a square before
    # resizing asked for a 786504² float tensor (OOM, 10 s). The rule resizes first, so the cost follows the pixels.
    strip = np.zeros((8, 200_000, 1), np.uint8)
    strip[:, 1000:199_000] = 255
    out = preprocess.to_model_input(strip, 32).numpy()
    assert out.shape == (32, 32, 1)
    assert out[15].max() > 0 and out[:15].max() == 0 and out[16:].max() == 0  # one row of frame, centred


def test_model_input_takes_a_batch():
    batch = np.zeros((3, 10, 20, 3), np.uint8)
    assert preprocess.to_model_input(batch, 16).shape == (3, 16, 16, 1)


def test_antialiased_resize_keeps_a_faint_one_pixel_streak():
    # One horizontal 1-px streak at 10 consecutive rows: every sampling phase of a 640 → 224 resize.
    value, rows = 40.0, range(300, 310)
    frames = np.zeros((len(rows), 640, 640, 1), np.float32)
    for k, r in enumerate(rows):
        frames[k, r, :, 0] = value
    plain = tf.image.resize(frames, (224, 224), method="bilinear").numpy().max(axis=(1, 2, 3))
    ours = preprocess.to_model_input(frames, 224).numpy().max(axis=(1, 2, 3))
    assert plain.min() < 0.05 * value  # plain bilinear loses the streak entirely at some positions
    assert ours.min() > 0.15 * value  # antialiased: 1/5 to 1/3 of it survives wherever it lies


def test_bytes_batch_in_a_serving_style_function():
    fn = tf.function(lambda b: preprocess.preprocess_bytes_batch(b, 16),
                     input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    images = [encode(np.full((10, 30), 90, np.uint8), "PNG"),
              encode(np.full((40, 20, 3), 90, np.uint8), "JPEG")]
    out = fn(tf.constant(images)).numpy()
    assert out.shape == (2, 16, 16, 1)
    np.testing.assert_allclose(out[0], preprocess.preprocess_bytes(images[0], 16).numpy())


# ------------------------------------------------------------------------------------------------ the detect rule
def _frame_with_streak_and_caption(rng, y0=150, x0=300):
    """A 480×640 noisy night frame, a faint 1-px diagonal streak near (y0, x0) and a bright timestamp caption."""
    frame = rng.normal(12, 2, (480, 640)).clip(0, 255)
    for k in range(90):  # 90-px diagonal, 25 grey levels over the sky
        frame[y0 + k // 2, x0 + k] += 25
    frame[455:470, 20:400] = 0
    for x in range(24, 396, 8):  # caption glyph strokes: short, bright, at the bottom
        frame[457:468, x:x + 2] = 230
        frame[461:463, x:x + 5] = 230
    return frame.astype(np.float32)[..., None]


def test_detect_window_finds_a_faint_streak_not_the_caption_and_keeps_it_bright():
    frame = _frame_with_streak_and_caption(np.random.default_rng(0))
    detect = preprocess.to_model_input(frame, 64, "detect").numpy()
    resize = preprocess.to_model_input(frame, 64, "resize").numpy()
    assert detect.shape == (64, 64, 1)
    # the window is 128 native px (2·S) around the streak: at half its native size the +25 streak keeps ~+10 over
    # the sky, while the whole-frame resize (10x smaller) averages it down to ~+3, and its brightest thing is the caption
    assert 8 < detect.max() - np.median(detect) < 40  # the streak, not the 230-grey caption
    streak_in_resize = resize[15:30, 30:46].max() - np.median(resize)
    assert streak_in_resize < 5 and resize.max() > 50


def test_detect_window_follows_the_streak():
    rng = np.random.default_rng(1)
    windows = [preprocess.to_model_input(_frame_with_streak_and_caption(rng, y0, x0), 64, "detect").numpy()
               for y0, x0 in ((60, 60), (300, 480))]
    for window in windows:  # wherever the streak is, the window holds a bright diagonal
        rows = np.argmax(window[..., 0], axis=0)
        bright = window[..., 0].max(axis=0) - np.median(window) > 6
        assert bright.sum() > 20
        slope = np.polyfit(np.flatnonzero(bright), rows[bright], 1)[0]
        assert 0.3 < slope < 0.7  # the streak's 1:2 slope


def test_detect_equals_resize_for_captures_no_larger_than_the_window():
    image = np.random.default_rng(2).integers(0, 255, (100, 120, 1)).astype(np.uint8)
    np.testing.assert_allclose(preprocess.to_model_input(image, 64, "detect").numpy(),
                               preprocess.to_model_input(image, 64, "resize").numpy(), atol=1e-4)


def test_detect_batch_and_bytes_match_one_image_at_a_time():
    rng = np.random.default_rng(3)
    frames = np.stack([_frame_with_streak_and_caption(rng, 100 + 40 * k, 100 + 90 * k) for k in range(3)])
    batch = preprocess.to_model_input(frames, 32, "detect").numpy()
    for k in range(3):
        np.testing.assert_allclose(batch[k], preprocess.to_model_input(frames[k], 32, "detect").numpy(), atol=1e-4)
    png = encode(frames[0, ..., 0].round().astype(np.uint8), "PNG")
    fn = tf.function(lambda b: preprocess.preprocess_bytes_batch(b, 32, "detect"),
                     input_signature=[tf.TensorSpec([None], tf.string)])
    np.testing.assert_allclose(fn(tf.constant([png]))[0].numpy(),
                               preprocess.to_model_input(np.round(frames[0]).astype(np.uint8), 32, "detect").numpy(),
                               atol=1e-3)


def test_an_unknown_input_rule_is_refused_by_name():
    with pytest.raises(ValueError, match="'tile' is not one of resize, detect"):
        preprocess.to_model_input(np.zeros((8, 8, 1), np.uint8), 32, "tile")
