"""Grad-CAM: the heat map lights up where a model's meteor score comes from (a toy model whose answer is known),
for every depth and layout; the exported explain_images signature agrees; overlays are PNGs."""

import numpy as np
import pytest
from PIL import Image

from meteor_tf.models.classifier import build_classifier
from meteor_tf.serving import export
from meteor_tf.serving.gradcam import explanation_model, grad_cam, overlay, save_overlay
from tests.serving.conftest import brightness_classifier

SIZE = 32


def captures_with_a_bright_patch(cells, background=0.0):
    """Captures (black by default), each with one bright 4×4 patch at grid cell (row, col) of the 8×8 grid."""
    images = np.full((len(cells), SIZE, SIZE, 1), background, np.float32)
    for i, (row, col) in enumerate(cells):
        images[i, 4 * row:4 * row + 4, 4 * col:4 * col + 4] = 255.0
    return images


def test_heat_map_peaks_where_the_meteor_evidence_is():
    cells = [(0, 7), (6, 1), (3, 4)]  # off-diagonal too, so a swapped row/column axis fails
    heat = grad_cam(brightness_classifier(), captures_with_a_bright_patch(cells))
    assert heat.shape == (3, SIZE, SIZE) and heat.dtype == np.float32
    for h, (row, col) in zip(heat, cells):
        peak_row, peak_col = np.unravel_index(np.argmax(h), h.shape)
        assert (peak_row // 4, peak_col // 4) == (row, col)
        assert h.max() == pytest.approx(1.0)
        far = np.ones_like(h, bool)
        far[max(0, 4 * row - 4):4 * row + 8, max(0, 4 * col - 4):4 * col + 8] = False
        assert h[far].max() < 0.05


def test_evidence_against_a_meteor_gives_no_heat():
    """The ReLU keeps only evidence for the meteor class: a model whose meteor score falls with brightness shows
    nothing, neither on the bright patch nor on the gray sky around it."""
    heat = grad_cam(brightness_classifier(meteor_sign=-1.0), captures_with_a_bright_patch([(2, 5)], background=128))
    assert np.all(heat == 0.0)


@pytest.mark.parametrize("depth, layout", [(18, "torchvision"), (50, "keras")])
def test_every_depth_and_layout_gives_normalised_maps(depth, layout):
    model = build_classifier(depth, layout, image_size=SIZE)
    images = np.random.default_rng(0).uniform(0, 255, (3, SIZE, SIZE, 1)).astype(np.float32)
    heat, probabilities = grad_cam(model, images, batch_size=2, return_probabilities=True)
    assert heat.shape == (3, SIZE, SIZE) and np.all(np.isfinite(heat))
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    peaks = heat.max(axis=(1, 2))  # 1 after scaling, or 0 where the whole map is evidence against a meteor
    assert np.all(np.isclose(peaks, 1.0) | (peaks == 0.0))
    np.testing.assert_allclose(probabilities, model(images, training=False).numpy()[:, 0], atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("depth, layout", [(34, "torchvision"), (50, "torchvision"), (101, "torchvision"),
                                           (101, "keras")])
def test_the_other_depths_too(depth, layout):
    test_every_depth_and_layout_gives_normalised_maps(depth, layout)


def test_the_exported_signature_gives_the_same_maps(tmp_path):
    model = brightness_classifier()
    images = captures_with_a_bright_patch([(1, 6), (5, 2)])
    exported = export.ExportedModel(export.export_savedmodel(model, tmp_path, threshold=0.5))
    assert "explain_images" in exported.signature_names
    np.testing.assert_allclose(grad_cam(exported, images), grad_cam(model, images), atol=1e-5)


def test_a_model_without_the_classifier_parts_is_refused():
    import keras

    plain = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="backbone"):
        explanation_model(plain)


def test_overlay_colours_only_where_the_model_looked(tmp_path):
    image = np.full((SIZE, SIZE, 1), 40.0, np.float32)
    heat = np.zeros((SIZE, SIZE), np.float32)
    heat[:8, -8:] = 1.0
    rgb = overlay(image, heat)
    assert np.all(rgb[-1, 0] == 40)  # cold: the capture unchanged
    red, green, blue = rgb[0, -1].astype(int)
    assert red > 40 + 40 and red > 2 * max(green, blue)  # hot: jet's red end over the gray
    path = save_overlay(image, heat, tmp_path / "cams" / "FF_0001.png", probability=0.973, label="meteor")
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (256, 256) and png.mode == "RGB"
        pixels = np.asarray(png)
    assert pixels[:20, :120].max() == 255  # the white "meteor p=0.973" text on its black box
    assert not list((tmp_path / "cams").glob(".partial*"))
