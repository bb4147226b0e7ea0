"""TFLite conversions of the export's float signature (made by the export command in the session fixture): numbers
against the SavedModel, sizes, batches of any size, both interpreters, metadata beside the file, the comparison."""

import builtins
import shutil

import numpy as np
import pytest

from meteor_tf.data.preprocess import preprocess_bytes
from meteor_tf.serving import tflite
from meteor_tf.serving.export import ExportedModel
from tests.serving.conftest import IMAGE_SIZE, run_cli


@pytest.fixture(scope="module")
def images(capture_bytes):
    return np.stack([preprocess_bytes(b, IMAGE_SIZE).numpy() for b in capture_bytes])


@pytest.fixture(scope="module")
def reference(exported_run, images):
    return ExportedModel(exported_run["version_dir"]).predict_images(images)["meteor_probability"]


def test_litert_runs_the_models_when_installed():
    assert tflite.interpreter_class().__module__.startswith("ai_edge_litert")


def test_float_model_gives_the_savedmodel_probabilities(exported_run, images, reference):
    model = tflite.TFLiteModel(exported_run["tflite"]["float"])
    assert (model.image_size, model.quantize) == (IMAGE_SIZE, "none")
    assert model.threshold == ExportedModel(exported_run["version_dir"]).threshold
    np.testing.assert_allclose(model.predict_images(images), reference, atol=1e-4)


@pytest.fixture(scope="module")
def run_images(trained_run):
    """The trained run's own captures (both classes), as the training loader makes them."""
    from meteor_tf.data.dataset import load_folder

    return load_folder(trained_run.parent.parent / "captures", IMAGE_SIZE).images


@pytest.mark.parametrize("quantize", ["dynamic", "int8"])
def test_quantised_models_are_a_quarter_of_the_size_and_agree(quantize, exported_run, run_images):
    path = exported_run["tflite"][quantize]
    assert path.stat().st_size < 0.3 * exported_run["tflite"]["float"].stat().st_size
    model = tflite.TFLiteModel(path)
    assert model.quantize == quantize
    saved = ExportedModel(exported_run["version_dir"])
    reference = saved.predict_images(run_images)["meteor_probability"]
    # the trained fixture separates its captures, so a constant or label-swapped TFLite model cannot pass
    spread = float(reference.max() - reference.min())
    assert spread > 0.5 and 0.2 < np.mean(reference >= saved.threshold) < 0.8, (spread, saved.threshold)
    probabilities = model.predict_images(run_images)
    assert np.all(np.isfinite(probabilities)) and not np.array_equal(probabilities, reference)
    agree = np.mean((probabilities >= model.threshold) == (reference >= saved.threshold))
    assert agree >= 0.98, agree
    # quantisation noise, scaled to what the model outputs: small on the whole, one capture on the steep part of
    # the softmax may move more (int8 measured: median 0.0003, one of 48 by 0.17 with a spread of 1.0)
    error = np.abs(probabilities - reference)
    assert np.median(error) <= 0.02 * spread and error.max() <= 0.25 * spread, (np.median(error), error.max())
    if quantize == "int8":
        assert model.metadata["calibration_images"] == 8


def test_any_batch_size_gives_the_same_numbers(exported_run, images):
    model = tflite.TFLiteModel(exported_run["tflite"]["dynamic"])
    whole = model.predict_images(images, batch_size=len(images))
    for batch_size in (1, 3):
        np.testing.assert_allclose(model.predict_images(images, batch_size=batch_size), whole, atol=1e-6)
    assert model.predict_images(images[:0]).shape == (0,)
    np.testing.assert_array_equal(model.predict_labels(images), np.where(whole >= model.threshold, 0, 1))


def test_tensorflow_interpreter_is_the_fallback(exported_run, images, monkeypatch):
    litert = tflite.TFLiteModel(exported_run["tflite"]["float"]).predict_images(images)
    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    import tensorflow as tf

    assert tflite.interpreter_class() is tf.lite.Interpreter
    np.testing.assert_allclose(tflite.TFLiteModel(exported_run["tflite"]["float"]).predict_images(images), litert,
                               atol=1e-5)


def test_bad_input_is_refused_with_the_reason(exported_run, images, tmp_path):
    lone = tmp_path / "lone.tflite"
    shutil.copy(exported_run["tflite"]["dynamic"], lone)
    with pytest.raises(FileNotFoundError, match="lone.json"):
        tflite.TFLiteModel(lone)
    model = tflite.TFLiteModel(exported_run["tflite"]["dynamic"])
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 1\)"):
        model.predict_images(images[..., 0])
    with pytest.raises(ValueError, match="representative images"):
        tflite.convert(exported_run["version_dir"], tmp_path / "x.tflite", "int8")
    with pytest.raises(ValueError, match="quantize"):
        tflite.convert(exported_run["version_dir"], tmp_path / "x.tflite", "fp16")


def test_comparison_rows_and_table(exported_run, images, reference):
    labels = np.array([0, 1] * (len(images) // 2) + [0] * (len(images) % 2))
    paths = [exported_run["tflite"]["float"], exported_run["tflite"]["int8"]]
    rows = tflite.compare(exported_run["version_dir"], paths, images, labels)
    threshold = ExportedModel(exported_run["version_dir"]).threshold
    assert [r["model"] for r in rows] == ["SavedModel", "TFLite none", "TFLite int8"]
    assert rows[0]["agreement"] == 1.0 and rows[0]["max_abs_diff"] == 0.0
    assert rows[0]["accuracy"] == pytest.approx(np.mean(np.where(reference >= threshold, 0, 1) == labels))
    int8 = tflite.TFLiteModel(paths[1]).predict_images(images)
    assert rows[2]["max_abs_diff"] == pytest.approx(np.abs(int8 - reference).max(), abs=1e-6)
    table = tflite.format_comparison(rows, threshold)
    assert "accuracy" in table and "TFLite int8" in table and f"{len(images)} images" in table


@pytest.mark.slow
def test_command_converts_an_existing_export_on_a_data_folder(exported_run, trained_run, tmp_path):
    data = trained_run.parent.parent / "captures"
    result = run_cli(["-m", "meteor_tf.export", f"--model={exported_run['model_dir']}", "--tflite=dynamic",
                      f"--data={data}", f"--tflite_dir={tmp_path / 'out'}", "--calibration_images=4"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "meteor-v1-dynamic.tflite").is_file()
    assert "16 captures not used for int8 calibration" in result.stdout and "TFLite dynamic" in result.stdout
