"""Grad-CAM: the heat map lights up where a model's meteor score comes from (a toy model whose answer is known, and
the session's trained run on fresh streak captures), for every depth and layout and for an earlier backbone stage;
the exported explain_images signature agrees; overlays are PNGs."""

import numpy as np
import pytest
from PIL import Image

from meteor_tf import METEOR
from meteor_tf.models.classifier import build_classifier
from meteor_tf.serving import export
from meteor_tf.serving.gradcam import explanation_model, grad_cam, overlay, save_overlay, stage_outputs
from tests.conftest import write_streak_task
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
    stages = stage_outputs(model)
    assert stages == (["layer1.1.out", "layer2.1.out", "layer3.1.out", "layer4.1.out"] if layout == "torchvision"
                      else ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"])
    earlier = grad_cam(model, images, layer=stages[1])  # a 4×4 map at 32 px, upsampled to the input's size
    assert earlier.shape == (3, SIZE, SIZE) and earlier.min() >= 0.0 and earlier.max() <= 1.0
    # the last stage's output is the backbone's output: the same map as the default
    np.testing.assert_allclose(grad_cam(model, images, layer=stages[-1]), heat, atol=1e-5)


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


def test_an_unknown_layer_or_a_layer_for_an_export_is_refused(tmp_path):
    model = build_classifier(18, image_size=SIZE)
    with pytest.raises(ValueError, match=r"no layer 'layer9'.*layer2\.1\.out"):
        grad_cam(model, np.zeros((1, SIZE, SIZE, 1), np.float32), layer="layer9")
    exported = export.ExportedModel(export.export_savedmodel(brightness_classifier(), tmp_path, threshold=0.5))
    with pytest.raises(ValueError, match="last feature map"):
        grad_cam(exported, captures_with_a_bright_patch([(1, 1)]), layer="layer1.1.out")


STREAK_GRAY = 220  # write_streak_task draws its streak at exactly this level (sky noise ~20 ± 4, stars 120..240)
CONFIDENT = 0.9
NEAR = 4.5  # capture pixels (48 px captures): 3 model-input pixels, under one cell of layer1's 8×8 map at 32 px


@pytest.fixture(scope="module")
def trained_on_fresh_streaks(run_model, trained_run, tmp_path_factory):
    """The trained run's final model on meteors of its own task it never saw (write_streak_task, another seed):
    the model inputs it calls meteor with p >= CONFIDENT and, for each, every model-input pixel's distance to the
    streak in capture pixels (the "resize" rule maps the 48 px capture onto the 32 px input)."""
    assert export.input_rule_beside(trained_run / "final" / "model.keras") == "resize"
    from meteor_tf.data.preprocess import to_model_input

    root = write_streak_task(tmp_path_factory.mktemp("fresh_streaks"), per_class=120, seed=11)
    captures = np.stack([np.asarray(Image.open(f)) for f in sorted((root / "meteor").glob("*.png"))])
    side = captures.shape[1]
    inputs = to_model_input(captures[..., None], SIZE).numpy()
    probability = run_model(inputs, training=False).numpy()[:, METEOR]
    confident = np.flatnonzero(probability >= CONFIDENT)
    centre = (np.arange(SIZE) + 0.5) * side / SIZE - 0.5  # a model-input pixel's centre in capture pixels
    distances = []
    for i in confident:
        ys, xs = np.nonzero(captures[i] == STREAK_GRAY)
        dy = centre[:, None, None] - ys[None, None, :]
        dx = centre[None, :, None] - xs[None, None, :]
        distances.append(np.sqrt(dy ** 2 + dx ** 2).min(axis=-1))
    return {"inputs": inputs[confident], "distance": np.stack(distances), "confident": len(confident),
            "meteors": len(captures), "probability": probability}


def test_the_trained_models_heat_map_peaks_on_the_streak_of_a_meteor_it_is_sure_of(run_model,
                                                                                     trained_on_fresh_streaks):
    """On the trained run at 32 px the last feature map is 1×1 (every map constant), so the map is taken on
    layer1's 8×8 output. Its peak must lie near the streak well above chance (a uniformly random peak), and the
    map must be hotter on the streak than away from it: a sign-flipped gradient, the other class, a constant map
    or a coarser layer's map each fall to about chance or below (measured: 0-0.8× chance; this map ≈ 3×)."""
    data = trained_on_fresh_streaks
    assert data["confident"] >= 20, (f"the trained model calls only {data['confident']} of {data['meteors']} fresh "
                                     f"meteors meteor with p >= {CONFIDENT}: too few to judge its Grad-CAM")
    distance = data["distance"]
    last = grad_cam(run_model, data["inputs"])
    assert np.all(np.ptp(last, axis=(1, 2)) == 0.0), "the last feature map is 1×1 at 32 px: constant maps"

    heat = grad_cam(run_model, data["inputs"], layer="layer1.1.out")
    peaks = [np.unravel_index(np.argmax(h), h.shape) for h in heat]
    hits = np.mean([d[peak] <= NEAR for d, peak in zip(distance, peaks)])
    chance = np.mean(distance <= NEAR)  # how often a peak at a random pixel would lie that near the streak
    on_streak = np.array([h[d <= 1.5].mean() for h, d in zip(heat, distance)])
    away = np.array([h[d > NEAR].mean() for h, d in zip(heat, distance)])
    hotter = np.mean(on_streak > away)
    summary = (f"{data['confident']} of {data['meteors']} fresh meteors at p >= {CONFIDENT}: peak within {NEAR} px "
               f"of the streak in {hits:.0%} (chance {chance:.0%}); hotter on the streak than away in {hotter:.0%} "
               f"(mean heat {on_streak.mean():.2f} on, {away.mean():.2f} away)")
    print(summary)
    assert hits >= 2 * chance, summary
    assert hotter >= 0.7, summary


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
    assert not list((tmp_path / "cams").glob("*partial*"))
