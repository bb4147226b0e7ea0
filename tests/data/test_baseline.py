"""Pixel-statistics baseline: features and stratified group cross-validation (tiny inputs)."""

import numpy as np
import pytest

from meteor_tf.data import baseline


def test_features_shape_and_histogram():
    imgs = [np.zeros((8, 10), np.uint8), np.full((5, 5, 1), 255, np.uint8)]
    X = baseline.pixel_features(imgs)
    assert X.shape == (2, len(baseline.FEATURE_NAMES))
    hist = 10 ** X[:, :baseline.HIST_BINS] - 1e-5
    np.testing.assert_allclose(hist.sum(axis=1), 1.0, atol=1e-3)
    assert hist[0, 0] > 0.99 and hist[1, -1] > 0.99


def test_baseline_on_small_night_sky_captures_returns_accuracy():
    import io

    from PIL import Image

    from meteor_tf.data.night_sky import render

    imgs, labels, groups = [], [], []
    for _, ex in render.generate_examples(12, 8, seed=2, small=True):
        imgs.append(np.asarray(Image.open(io.BytesIO(ex["image"]))))
        labels.append(ex["label"])
        groups.append(ex["scene_id"])
    res = baseline.evaluate_baseline(imgs, labels, groups, folds=4, seed=0)
    assert len(res.fold_accuracies) == 4 and res.n == 20
    assert res.mean == pytest.approx(np.mean(res.fold_accuracies)) and res.std == pytest.approx(np.std(res.fold_accuracies))
    assert res.majority == pytest.approx(0.6)
    assert "accuracy" in str(res)


def test_baseline_separates_trivially_separable_data_and_checks_inputs():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 40, (16, 16)).astype(np.uint8) for _ in range(10)]
    imgs += [rng.integers(200, 256, (16, 16)).astype(np.uint8) for _ in range(10)]
    res = baseline.evaluate_baseline(imgs, [0] * 10 + [1] * 10, folds=5)
    assert res.mean == 1.0
    with pytest.raises(ValueError):
        baseline.evaluate_baseline(imgs, [0] * 19 + [1], folds=5)
