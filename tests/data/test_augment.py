import numpy as np
import pytest

from meteor_tf.data.augment import build_augmentation


def half_bright(n=32, size=32, half="top"):
    """n copies of a frame bright (200) in one half, black in the other."""
    images = np.zeros((n, size, size, 1), np.float32)
    if half == "top":
        images[:, : size // 2] = 200.0
    else:
        images[:, :, : size // 2] = 200.0
    return images


def test_none_and_unknown_modes():
    assert build_augmentation("none") is None
    with pytest.raises(ValueError, match="on_side"):
        build_augmentation("sideways")


@pytest.mark.parametrize("mode", ["on_side", "complete"])
def test_inactive_at_inference(mode):
    images = half_bright()
    out = np.asarray(build_augmentation(mode, seed=0)(images, training=False))
    np.testing.assert_array_equal(out, images)


def test_on_side_flips_horizontally_never_vertically():
    layers = build_augmentation("on_side", seed=0)
    top = np.asarray(layers(half_bright(half="top"), training=True))
    upper, lower = top[:, :16].mean(axis=(1, 2, 3)), top[:, 16:].mean(axis=(1, 2, 3))
    assert np.all(upper > 4 * lower)  # the sky stays up: small angles, no vertical flip
    left = np.asarray(layers(half_bright(half="left"), training=True))
    flipped = left[:, :, 16:].mean(axis=(1, 2, 3)) > left[:, :, :16].mean(axis=(1, 2, 3))
    assert 0 < flipped.sum() < len(flipped)  # some flipped left-right, some not
    assert top.min() == 0.0  # rotated-in corners are black (fill_mode constant 0)


def test_complete_rotates_and_flips_everywhere():
    out = np.asarray(build_augmentation("complete", seed=0)(half_bright(half="top"), training=True))
    upper, lower = out[:, :16].mean(axis=(1, 2, 3)), out[:, 16:].mean(axis=(1, 2, 3))
    assert np.any(lower > upper)  # a bright top can end up at the bottom
    left, right = out[:, :, :16].mean(axis=(1, 2, 3)), out[:, :, 16:].mean(axis=(1, 2, 3))
    assert np.any(np.abs(left - right) > 50)  # large angles: bright half ends up on a side


def test_same_seed_same_augmentation():
    images = half_bright(n=4)
    a = np.asarray(build_augmentation("complete", seed=5)(images, training=True))
    b = np.asarray(build_augmentation("complete", seed=5)(images, training=True))
    np.testing.assert_array_equal(a, b)
