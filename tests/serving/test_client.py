"""The backends and TF Serving clients: status answers of both servers, request building and answer parsing, the image
checks every backend applies, unreachable servers, and the in-process backends against the export itself.
(The REST and gRPC clients against a running server: tests/serving/test_server.py.)"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from meteor_tf.serving import client
from tests.serving.conftest import encode
from tests.serving.serving_helpers import free_port, served  # noqa: F401 — served is a fixture


def test_status_of_tf_serving_and_of_kserve_both_parse():
    tf_serving = {"model_version_status": [
        {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
        {"version": "2", "state": "END", "status": {"error_code": "OK", "error_message": ""}}]}
    status = client.parse_status(tf_serving, "meteor")
    assert (status.name, status.ready, status.version) == ("meteor", True, 3)
    assert "version 2: END" in status.detail

    loading = {"model_version_status": [{"version": "4", "state": "LOADING",
                                         "status": {"error_code": "OK", "error_message": ""}}]}
    assert not client.parse_status(loading).ready
    failed = {"model_version_status": [{"version": "1", "state": "END",
                                        "status": {"error_code": "UNKNOWN", "error_message": "bad graph"}}]}
    assert "bad graph" in client.parse_status(failed).detail

    assert client.parse_status({"name": "meteor", "ready": True}) == client.ModelStatus("meteor", True, None, "")
    assert not client.parse_status({"name": "meteor", "ready": False}).ready
    with pytest.raises(client.ServingError, match="unrecognised model status"):
        client.parse_status({"models": ["meteor"]})


def test_labels_follow_the_recall_first_rule_meteor_at_or_above_the_threshold():
    p = client.Predictions.from_probabilities([0.1, 0.3, 0.30000001, 0.9], threshold=np.float32(0.3))
    assert p.label == ["non_meteor", "meteor", "meteor", "meteor"]
    assert p.class_id.tolist() == [1, 0, 0, 0]


def test_signature_outputs_parse_from_tf_strings_rows_and_columns():
    outputs = {"meteor_probability": np.array([0.75, 0.25], np.float32),
               "label": np.array([b"meteor", b"non_meteor"], dtype=object), "class_id": np.array([0, 1], np.int32)}
    p = client.Predictions.from_outputs(outputs)
    assert p.label == ["meteor", "non_meteor"] and p.class_id.tolist() == [0, 1]
    assert client.parse_predictions(p.rows()).label == p.label
    assert p.columns()["meteor_probability"] == [0.75, 0.25]
    with pytest.raises(client.ServingError, match="lacks the output"):
        client.parse_predictions([{"output_0": [0.1, 0.9]}])  # a plain Keras export, not ours


def test_image_checks_name_what_is_wrong():
    gray = np.random.default_rng(0).integers(0, 255, (40, 30), dtype=np.uint8)
    assert client.check_image_bytes(encode(gray, "PNG")) == "PNG"
    assert client.check_image_bytes(encode(gray, "JPEG")) == "JPEG"
    with pytest.raises(client.InvalidImageError, match="empty"):
        client.check_image_bytes(b"")
    with pytest.raises(client.InvalidImageError, match="not an image"):
        client.check_image_bytes(b"%PDF-1.4 definitely not a capture")
    with pytest.raises(client.InvalidImageError, match="too small"):
        client.check_image_bytes(encode(gray[:4, :4], "PNG"))
    with pytest.raises(client.InvalidImageError, match="too large"):
        client.check_image_bytes(encode(gray, "PNG"), max_pixels=1000)


def test_tiff_is_reencoded_as_png_carrying_the_pixels_training_reads(tmp_path):
    from meteor_tf.data import folder, preprocess

    rng = np.random.default_rng(1)
    sixteen = rng.integers(0, 65535, (24, 36), dtype=np.uint16)
    path = tmp_path / "frame.tif"
    Image.fromarray(sixteen).save(path)
    prepared = client.prepare_image_bytes(path.read_bytes())
    assert prepared.startswith(b"\x89PNG")
    decoded = preprocess.decode_image(tf.constant(prepared)).numpy()
    np.testing.assert_array_equal(decoded, folder.read_with_pillow(path))  # what training reads from the TIFF

    jpeg = encode(rng.integers(0, 255, (24, 36), dtype=np.uint8), "JPEG")
    assert client.prepare_image_bytes(jpeg) == jpeg  # formats TensorFlow decodes travel untouched


def test_grpc_predict_request_and_response_round_trip():
    from tensorflow_serving.apis import predict_pb2

    images = [b"\xff\xd8first", b"\x89PNGsecond"]
    request = client.build_predict_request(images, "meteor")
    assert request.model_spec.name == "meteor" and request.model_spec.signature_name == "serving_default"
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum and [d.size for d in tensor.tensor_shape.dim] == [2]
    assert list(tf.make_ndarray(tensor)) == images

    response = predict_pb2.PredictResponse()
    response.outputs["meteor_probability"].CopyFrom(tf.make_tensor_proto(np.array([0.9, 0.1], np.float32)))
    response.outputs["label"].CopyFrom(tf.make_tensor_proto([b"meteor", b"non_meteor"]))
    response.outputs["class_id"].CopyFrom(tf.make_tensor_proto(np.array([0, 1], np.int32)))
    parsed = client.parse_predict_response(response)
    assert parsed.label == ["meteor", "non_meteor"] and parsed.meteor_probability.dtype == np.float32


def test_server_url_picks_the_client():
    assert isinstance(client.connect("http://127.0.0.1:8501"), client.RestClient)
    assert isinstance(client.connect("grpc://127.0.0.1:8500"), client.GrpcClient)
    with pytest.raises(ValueError, match="grpc://HOST:PORT"):
        client.connect("127.0.0.1:8501")


def test_unreachable_servers_fail_with_one_clear_error():
    port = free_port()
    with pytest.raises(client.ServerUnavailableError, match=f"cannot reach http://127.0.0.1:{port}"):
        client.RestClient(f"http://127.0.0.1:{port}", timeout=5).status()
    with pytest.raises(client.ServerUnavailableError, match="is the server running"):
        client.GrpcClient(f"127.0.0.1:{port}", timeout=5).predict_bytes([b"x"])


class _Answer:
    def __init__(self, status_code, body):
        self.status_code, self._body, self.reason = status_code, body, "reason"
        self.text = str(body)

    def json(self):
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


class _Session:
    def __init__(self, answer):
        self.answer = answer

    def request(self, *args, **kwargs):
        return self.answer

    def close(self):
        pass


@pytest.mark.parametrize("code, error", [(400, client.InvalidImageError), (413, client.InvalidImageError),
                                         (404, client.ServingError), (500, client.ServingError)])
def test_rest_errors_map_to_retry_per_image_or_stop(code, error):
    rest = client.RestClient("http://station:8501", session=_Session(_Answer(code, {"error": "what went wrong"})))
    with pytest.raises(error, match="what went wrong") as raised:
        rest.predict_bytes([b"x"])
    assert isinstance(raised.value, client.InvalidImageError) == (code in (400, 413))


def test_rest_answer_without_one_prediction_per_image_is_an_error():
    rest = client.RestClient("http://station:8501", session=_Session(_Answer(200, {"predictions": []})))
    with pytest.raises(client.ServingError, match="without 1 predictions"):
        rest.predict_bytes([b"x"])


def test_in_process_backend_is_the_export(served):
    from meteor_tf.serving.export import ExportedModel

    images, version_dir = served["images"], served["version_dir"]
    backend = client.open_backend(model=served["model_dir"])  # the model dir: its newest version
    assert backend.version == int(version_dir.name) and backend.threshold == pytest.approx(served["threshold"])
    got = backend.predict_bytes(images)
    want = ExportedModel(version_dir).predict_bytes(images)
    np.testing.assert_array_equal(got.meteor_probability, want["meteor_probability"])
    assert got.label == list(want["label"]) and got.class_id.tolist() == list(want["class_id"])
    with pytest.raises(client.InvalidImageError, match="Invalid JPEG data"):
        backend.predict_bytes([b"\xff\xd8\xff\xe0 a JPEG header and nothing else"])
    with pytest.raises(client.InvalidImageError, match=r"image_bytes\[1\].*is not an encoded"):
        backend.predict_bytes([images[0], b"plain text"])
    assert backend.status().ready


def test_missing_model_is_a_file_not_found_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        client.open_backend(model=tmp_path / "nowhere")
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_model"):
        client.open_backend(model=tmp_path / "empty_model")


@pytest.mark.parametrize("quantize", ["float", "dynamic"])
def test_tflite_backend_decodes_outside_the_interpreter_and_matches_the_savedmodel(served, quantize):
    backend = client.open_backend(model=served["tflite"][quantize])
    assert backend.threshold == pytest.approx(served["threshold"]) and backend.image_size == 32
    got = backend.predict_bytes(served["images"])
    want = client.LocalBackend(served["version_dir"]).predict_bytes(served["images"])
    tolerance = 1e-4 if quantize == "float" else 0.05  # dynamic-range int8 weights move probabilities a little
    np.testing.assert_allclose(got.meteor_probability, want.meteor_probability, atol=tolerance)
    assert got.label == ["meteor" if p >= backend.threshold else "non_meteor" for p in got.meteor_probability]
    with pytest.raises(client.InvalidImageError):
        backend.predict_bytes([b"GIF89a broken"])
