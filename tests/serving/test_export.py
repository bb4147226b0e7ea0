"""The SavedModel export, loaded the way TF Serving loads it: the TF1 Session loader on the signature's tensor names,
`saved_model_cli`, gRPC PredictRequest/PredictResponse protos; the same probabilities as the Keras model; corrupt
images; metadata; versions that only grow; the command's errors; `main --export`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from meteor_tf.data.dataset import load_folder
from meteor_tf.data.preprocess import preprocess_bytes
from meteor_tf.serving import export
from tests.serving.conftest import IMAGE_SIZE, brightness_classifier, encode, run_cli

OUTPUTS = ("meteor_probability", "label", "class_id")


def keras_probabilities(model, capture_bytes):
    """What training's code path gives: preprocess each capture, then the Keras model."""
    images = np.stack([preprocess_bytes(b, IMAGE_SIZE).numpy() for b in capture_bytes])
    return model.predict(images, verbose=0)[:, 0]


def session_run(version_dir, signature, feed_values):
    """TF Serving's path: the TF1 loader in a Session, fed and fetched by the signature_def's tensor names."""
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
        meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], str(version_dir))
        sig = meta_graph.signature_def[signature]
        fetch = {name: info.name for name, info in sig.outputs.items()}
        results = []
        for values in feed_values:
            feed = {sig.inputs[name].name: value for name, value in values.items()}
            try:
                results.append(sess.run(fetch, feed))
            except tf.errors.InvalidArgumentError as e:
                results.append(e)
        return results


# ------------------------------------------------------------------------------------------- serving = Keras
def test_session_loader_gives_the_keras_probabilities_and_the_threshold_labels(exported_run, run_model,
                                                                               capture_bytes):
    version_dir = exported_run["version_dir"]
    threshold = export.load_metadata(version_dir)["threshold"]
    (out,) = session_run(version_dir, "serving_default", [{"image_bytes": np.array(capture_bytes, dtype=object)}])
    expected = keras_probabilities(run_model, capture_bytes)
    np.testing.assert_allclose(out["meteor_probability"], expected, atol=1e-5)
    is_meteor = out["meteor_probability"] >= np.float32(threshold)
    np.testing.assert_array_equal(out["class_id"], np.where(is_meteor, 0, 1))
    np.testing.assert_array_equal(out["label"].astype(str), np.where(is_meteor, "meteor", "non_meteor"))
    assert out["class_id"].dtype == np.int32 and out["meteor_probability"].dtype == np.float32


def test_bytes_signature_equals_the_training_loader_on_a_capture_folder(exported_run, run_model, trained_run):
    """Serving = training: the folder loader training uses and the SavedModel's in-graph decoding agree."""
    folder = Path(json.loads((trained_run / "final" / "model_info.json").read_text())["config"]["data"])
    examples = load_folder(folder, IMAGE_SIZE)  # ids: paths relative to the folder
    expected = run_model.predict(examples.images, verbose=0)[:, 0]
    served = export.ExportedModel(exported_run["model_dir"]).predict_bytes(
        [(folder / i).read_bytes() for i in examples.ids])
    np.testing.assert_allclose(served["meteor_probability"], expected, atol=1e-5)


def test_float_signature_matches_the_bytes_signature(exported_run, capture_bytes):
    model = export.ExportedModel(exported_run["model_dir"])
    images = np.stack([preprocess_bytes(b, IMAGE_SIZE).numpy() for b in capture_bytes])
    from_bytes = model.predict_bytes(capture_bytes, batch_size=3)
    from_images = model.predict_images(images)
    np.testing.assert_allclose(from_images["meteor_probability"], from_bytes["meteor_probability"], atol=1e-6)
    np.testing.assert_array_equal(from_images["label"], from_bytes["label"])
    assert set(from_bytes) == set(OUTPUTS) and from_bytes["label"].dtype.kind == "U"
    assert model.version == 1 and model.threshold == export.load_metadata(model.path)["threshold"]


def test_saved_model_cli_show_lists_both_signatures(exported_run):
    cli = Path(sys.executable).with_name("saved_model_cli")
    out = subprocess.run([str(cli), "show", "--dir", str(exported_run["version_dir"]), "--all"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for text in ("signature_def['serving_default']", "inputs['image_bytes']", "dtype: DT_STRING",
                 "signature_def['predict_images']", "inputs['images']", "shape: (-1, 32, 32, 1)",
                 "outputs['meteor_probability']", "outputs['label']", "outputs['class_id']",
                 "signature_def['explain_images']"):
        assert text in out.stdout, text


@pytest.mark.slow  # the same TF1 loader path as the Session test above, plus a TensorFlow start-up
def test_saved_model_cli_run_on_an_npy_of_bytes(exported_run, capture_bytes, run_model, tmp_path):
    cli = Path(sys.executable).with_name("saved_model_cli")
    np.save(tmp_path / "images.npy", np.array(capture_bytes[:3], dtype=np.bytes_))
    out = subprocess.run([str(cli), "run", "--dir", str(exported_run["version_dir"]), "--tag_set", "serve",
                          "--signature_def", "serving_default", "--inputs", f"image_bytes={tmp_path / 'images.npy'}",
                          "--outdir", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "meteor_probability.npy"),
                               keras_probabilities(run_model, capture_bytes[:3]), atol=1e-5)


def test_grpc_predict_request_round_trips_through_the_signature(exported_run, run_model, capture_bytes):
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "meteor"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(capture_bytes, dtype=tf.string))
    wire = request.SerializeToString()

    # the server side: parse, feed the signature by its input name, pack a PredictResponse
    received = predict_pb2.PredictRequest.FromString(wire)
    loaded = tf.saved_model.load(str(exported_run["version_dir"]))
    signature = loaded.signatures[received.model_spec.signature_name]
    outputs = signature(**{name: tf.constant(tf.make_ndarray(proto)) for name, proto in received.inputs.items()})
    response = predict_pb2.PredictResponse()
    response.model_spec.CopyFrom(received.model_spec)
    for name, value in outputs.items():
        response.outputs[name].CopyFrom(tf.make_tensor_proto(value))

    answer = predict_pb2.PredictResponse.FromString(response.SerializeToString())
    assert set(answer.outputs) == set(OUTPUTS)
    assert answer.outputs["label"].dtype == tf.string.as_datatype_enum
    np.testing.assert_allclose(tf.make_ndarray(answer.outputs["meteor_probability"]),
                               keras_probabilities(run_model, capture_bytes), atol=1e-5)
    assert tf.make_ndarray(answer.outputs["label"]).shape == (len(capture_bytes),)


# ------------------------------------------------------------------------------------------- corrupt images
def test_a_non_image_in_a_batch_is_named_and_the_session_keeps_answering(exported_run, capture_bytes):
    good = np.array(capture_bytes[:3], dtype=object)
    bad = np.array([capture_bytes[0], b"<html>not an image</html>", capture_bytes[1]], dtype=object)
    truncated = np.array([capture_bytes[1], capture_bytes[0][:60]], dtype=object)  # valid PNG header, no data
    first, err, err2, after = session_run(exported_run["version_dir"], "serving_default",
                                          [{"image_bytes": v} for v in (good, bad, truncated, good)])
    assert isinstance(err, tf.errors.InvalidArgumentError)
    assert "image_bytes[1] (of 3 in this request) is not an encoded JPEG, PNG, GIF or BMP image" in err.message
    assert isinstance(err2, tf.errors.InvalidArgumentError) and "PNG" in err2.message
    np.testing.assert_array_equal(after["meteor_probability"], first["meteor_probability"])


def test_exported_model_raises_for_the_bad_request_and_answers_the_next(exported_run, capture_bytes):
    model = export.ExportedModel(exported_run["model_dir"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"image_bytes\[2\]"):
        model.predict_bytes([capture_bytes[0], capture_bytes[1], b""])
    assert len(model.predict_bytes(capture_bytes[:2])["label"]) == 2
    assert model.predict_bytes([])["meteor_probability"].shape == (0,)


# ------------------------------------------------------------------------------------------- metadata
def test_metadata_round_trips_from_the_run(exported_run, trained_run):
    meta = export.load_metadata(exported_run["version_dir"])
    info = json.loads((trained_run / "final" / "model_info.json").read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert meta["threshold"] == info["threshold"]
    assert (meta["depth"], meta["layout"], meta["pretrain"], meta["image_size"]) == (18, "torchvision", "fashion_mnist", 32)
    assert meta["normalization"] == info["normalization"] == "unit"
    assert meta["class_names"] == ["meteor", "non_meteor"] and meta["meteor_index"] == 0
    assert meta["cv_metrics"]["stats"] == metrics["stats"]
    assert meta["provenance"] == json.loads((trained_run / "provenance.json").read_text())
    assert meta["version"] == 1 and meta["package_version"] and meta["tensorflow_version"] == tf.__version__
    assert set(meta["signatures"]) == {"serving_default", "predict_images", "explain_images"}
    assert meta["run_id"] == trained_run.name


def test_each_weight_is_stored_once(exported_run, run_model):
    """keras-team/keras#23553: ExportArchive.track() would store every weight twice."""
    stored = sum(int(np.prod(shape)) for name, shape in
                 tf.train.list_variables(str(exported_run["version_dir"] / "variables" / "variables"))
                 if name != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert stored == run_model.count_params()


# ------------------------------------------------------------------------------------------- versions
@pytest.fixture(scope="module")
def toy_model():
    return brightness_classifier()


def test_versions_only_grow_and_are_never_overwritten(toy_model, tmp_path):
    first = export.export_savedmodel(toy_model, tmp_path, threshold=0.3, explain=False)
    second = export.export_savedmodel(toy_model, tmp_path, threshold=0.4, explain=False)
    assert (first.name, second.name) == ("1", "2")
    before = (first / "saved_model.pb").read_bytes(), (first / "assets" / "meteor_tf.json").read_text()
    with pytest.raises(export.VersionExistsError, match="never overwritten"):
        export.export_savedmodel(toy_model, tmp_path, threshold=0.9, version=1, explain=False)
    assert ((first / "saved_model.pb").read_bytes(), (first / "assets" / "meteor_tf.json").read_text()) == before
    assert export.export_savedmodel(toy_model, tmp_path, threshold=0.5, version=7, explain=False).name == "7"
    assert export.export_savedmodel(toy_model, tmp_path, threshold=0.5, explain=False).name == "8"
    assert export.latest_version(tmp_path / "meteor").name == "8"
    assert export.ExportedModel(tmp_path / "meteor" / "2").threshold == pytest.approx(0.4)
    assert not list((tmp_path / "meteor").glob(".partial-export-*"))


def test_crash_leftovers_are_ignored_and_a_failed_export_leaves_nothing(toy_model, tmp_path, monkeypatch, caplog):
    model_dir = tmp_path / "meteor"
    good = export.export_savedmodel(toy_model, tmp_path, threshold=0.5, explain=False)
    # what a kill mid-write leaves: a temporary dir (even one holding a saved_model.pb) and nothing else
    leftover = model_dir / ".partial-export-killed"
    leftover.mkdir()
    (leftover / "saved_model.pb").write_bytes(b"half")
    (model_dir / "5").mkdir()  # an integer dir without saved_model.pb: not a loadable version
    assert export.latest_version(model_dir) == good
    assert export.resolve_model(model_dir) == good

    def crash(self, path, **kwargs):
        (Path(path) / "saved_model.pb").write_bytes(b"partial")
        raise RuntimeError("disk full")

    import keras

    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export.export_savedmodel(toy_model, tmp_path, threshold=0.5, explain=False)
    monkeypatch.undo()
    assert sorted(p.name for p in model_dir.iterdir()) == [".partial-export-killed", "1", "5"]
    # a leftover named with this host and a process that has ended is removed; one we cannot attribute is kept
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = model_dir / f".partial-export-{socket.gethostname()}-{gone.pid}-x1y2z3"
    dead.mkdir()
    alive = model_dir / f".partial-export-{socket.gethostname()}-{os.getpid()}-a1b2c3"
    alive.mkdir()
    with caplog.at_level("WARNING", logger="meteor_tf"):
        assert export.export_savedmodel(toy_model, tmp_path, threshold=0.5, explain=False).name == "6"
    assert ".partial-export-killed" in caplog.text and f"process {gone.pid} is gone" in caplog.text
    assert sorted(p.name for p in model_dir.iterdir()) == [".partial-export-killed", alive.name, "1", "5", "6"]


def test_latest_version_and_resolve_model_say_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported version"):
        export.latest_version(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        export.resolve_model(tmp_path / "nothing")


def test_threshold_and_input_shape_are_checked(toy_model, tmp_path):
    with pytest.raises(ValueError, match="threshold"):
        export.export_savedmodel(toy_model, tmp_path, threshold=1.5)
    import keras

    rgb = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="gray images"):
        export.export_savedmodel(rgb, tmp_path, threshold=0.5)


def test_models_config_is_a_model_server_config_for_the_default_export():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = (Path(__file__).resolve().parents[2] / "savedmodels" / "models.config").read_text()
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert (model.name, model.base_path, model.model_platform) == ("meteor", "/models/meteor", "tensorflow")
    assert model.model_version_policy.latest.num_versions == 1


# ------------------------------------------------------------------------------------------- the command
def test_command_prints_the_export_and_the_tflite_comparison(exported_run):
    out = exported_run["stdout"]
    assert f"SavedModel: {exported_run['version_dir']}" in out and "tensorflow_model_server" in out
    assert "the final model's inner validation split" in out
    for row in ("SavedModel", "TFLite none", "TFLite dynamic", "TFLite int8"):
        assert row in out


@pytest.mark.parametrize("args, message", [
    (["--run=no/such/run"], "no such run directory"),
    (["--run={empty_run}"], "no final model"),
    (["--run={run}", "--base_dir={base}", "--version=1"], "already exists"),
    ([], "give either --run"),
    (["--model={base}/meteor"], "give --tflite"),
    (["--model={base}/meteor", "--tflite=fp16"], "--tflite: fp16"),
    (["--model={base}/absent", "--tflite=float"], "no such model directory"),
])
def test_command_errors_are_one_line_with_exit_status_2(args, message, exported_run, trained_run, tmp_path):
    (tmp_path / "empty_run").mkdir()
    args = [a.format(run=trained_run, base=exported_run["work"] / "savedmodels", empty_run=tmp_path / "empty_run")
            for a in args]
    result = run_cli(["-m", "meteor_tf.export", *args], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr


def test_command_help_lists_its_flags(tmp_path):
    result = run_cli(["-m", "meteor_tf.export", "--help"], tmp_path)
    assert "Traceback" not in result.stderr and "python -m meteor_tf.export --run=runs/<run id>" in result.stdout
    for flag in ("--run", "--model", "--base_dir", "--name", "--version", "--tflite", "--data"):
        assert flag in result.stdout


def test_main_export_exports_the_final_model_of_the_run(tmp_path, monkeypatch):
    from meteor_tf.cli.train import export_final

    calls = []
    monkeypatch.setattr(export, "export_run", lambda run_dir, base_dir: calls.append((run_dir, base_dir)) or
                        Path(base_dir) / "meteor" / "1")
    run_dir = tmp_path / "runs" / "resnet18-x"
    assert export_final({"final": {"model": str(run_dir / "final" / "model.keras")}}, "out") == \
        Path("out/meteor/1")
    assert calls == [(run_dir, "out")]
    assert export_final({"stats": {}}, "out") is None  # no final model (--noretrain_final)
    twin = tmp_path / "runs" / "workertemp_worker_1" / "resnet18-x" / "final" / "model.keras"
    assert export_final({"final": {"model": str(twin)}}, "out") is None and len(calls) == 1  # the chief exports


def test_main_export_of_a_real_run_serves_the_runs_final_model(tmp_path):
    """`python -m meteor_tf.main --export` end to end, no mocks: the run trains, retrains the final model and exports
    it; the SavedModel gives the final Keras model's probabilities and carries the run's threshold."""
    from tests.conftest import write_streak_task

    data = write_streak_task(tmp_path / "captures", per_class=16, seed=4)
    result = run_cli(["-m", "meteor_tf.main", f"--data={data}", "--image_size=32", "--folds=2", "--head_epochs=1",
                      "--fine_tune_epochs=1", "--batch_size=8", "--head_units=16", "--head_dropout=0.1", "--val_fraction=0.3",
                      f"--output_dir={tmp_path / 'runs'}", "--run_id=real", "--export",
                      f"--export_dir={tmp_path / 'served'}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    version_dir = tmp_path / "served" / "meteor" / "1"
    assert f"exported: {version_dir}" in result.stdout
    run_dir = tmp_path / "runs" / "real"
    info = json.loads((run_dir / "final" / "model_info.json").read_text())
    model = export.ExportedModel(version_dir)
    assert model.threshold == pytest.approx(info["threshold"])
    images = load_folder(data, 32).images
    keras_prob = export.load_keras_model(run_dir / "final" / "model.keras").predict(images, verbose=0)[:, 0]
    np.testing.assert_allclose(model.predict_images(images)["meteor_probability"], keras_prob, atol=1e-5)


def test_main_refuses_export_without_a_final_model(capsys):
    from absl import flags

    from meteor_tf.cli import train as experiment_main

    flags.FLAGS.unparse_flags()
    try:
        flags.FLAGS(["prog", "--export", "--noretrain_final"])
        assert experiment_main.main(["prog"]) == 2
    finally:
        flags.FLAGS.unparse_flags()
    assert "--export exports the final model: it needs --retrain_final" in capsys.readouterr().err


def test_a_detect_rule_model_is_served_with_its_rule_by_every_backend(toy_model, tmp_path):
    # The input rule travels in the export's metadata: the bytes signature, the in-process client, the TFLite
    # backend and Grad-CAM all cut the same detection window the model was trained on (not a whole-frame resize).
    from meteor_tf.data import preprocess
    from meteor_tf.serving import client, tflite
    from meteor_tf.serving.predict import GradCamExplainer

    frame = np.full((240, 320), 5, np.uint8)
    frame[100:103, 150:210] = 200  # a bright bar on a dark frame: the window around it is far brighter on average
    png = encode(frame)
    expected = {rule: float(toy_model(preprocess.to_model_input(frame[..., None], 32, rule)[None])[0, 0])
                for rule in preprocess.INPUT_RULES}
    assert expected["detect"] > expected["resize"] + 0.05
    version = export.export_savedmodel(toy_model, tmp_path, threshold=0.5, metadata={"input_rule": "detect"})
    assert export.load_metadata(version)["input_rule"] == "detect"
    local = client.LocalBackend(version)
    assert local.input_rule == "detect"
    np.testing.assert_allclose(local.predict_bytes([png]).meteor_probability, [expected["detect"]], atol=1e-5)
    lite_path = tflite.convert(version, tmp_path / "toy.tflite")
    lite = client.TFLiteBackend(lite_path)
    assert lite.input_rule == "detect"
    np.testing.assert_allclose(lite.predict_bytes([png]).meteor_probability, [expected["detect"]], atol=1e-4)
    explainer = GradCamExplainer.load(backend=local)
    assert explainer.input_rule == "detect"
    # an export without the key (older versions) resizes, as those models were trained
    old = export.export_savedmodel(toy_model, tmp_path, threshold=0.5)
    assert client.LocalBackend(old).input_rule == "resize"
    np.testing.assert_allclose(client.LocalBackend(old).predict_bytes([png]).meteor_probability,
                               [expected["resize"]], atol=1e-5)


def test_an_unknown_input_rule_in_export_metadata_is_refused(toy_model, tmp_path):
    with pytest.raises(ValueError, match="'crop' is not one of resize, detect"):
        export.export_savedmodel(toy_model, tmp_path, threshold=0.5, metadata={"input_rule": "crop"})
