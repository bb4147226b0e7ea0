"""TF Serving's REST API as documented (https://www.tensorflow.org/tfx/serving/api_rest), pinned on both ends:

- our server (`python -m meteor_tf.serve`, in a subprocess on a toy export made here) answers every documented
  request in the documented shape: model status and metadata with and without `/versions/N`, predict in the row
  (`instances` → `predictions`, bare b64 values or named-input objects) and columnar (`inputs` → `outputs`) formats,
  with and without `/versions/N`, and `{"error": "<message>"}` with a 4xx for bad requests;
- our REST client against a stub that answers exactly as tensorflow_model_server does (version strings,
  `model_version_status`, one object of named outputs per instance, `{"error": ...}` bodies), so the client is held
  to the documented contract rather than to our own server's answers.

Where our server deliberately differs from TF Serving (see meteor_tf.serving.server), the documented subset is
asserted and the difference is named in the test.
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests

from meteor_tf.serving import client
from tests.serving.conftest import IMAGE_SIZE, brightness_classifier, encode
from tests.serving import serving_helpers
from tests.serving.serving_helpers import free_port, serve_cli

VERSION = 7  # not 1: the answers must carry the served version, not a constant
OUTPUT_NAMES = {"meteor_probability", "label", "class_id"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ------------------------------------------------------------------------------------------------ our server


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """The toy brightness classifier exported as `meteor/7` (both predict signatures, no Grad-CAM): seconds, not the
    session's trained run."""
    from meteor_tf.serving import export

    base = tmp_path_factory.mktemp("contract_export")
    version_dir = export.export_savedmodel(brightness_classifier(), base, "meteor", threshold=0.75, version=VERSION,
                                           explain=False)
    return version_dir


@pytest.fixture(scope="module")
def expected(export_dir, capture_bytes):
    """What the SavedModel itself answers, in process."""
    from meteor_tf.serving.export import ExportedModel

    model = ExportedModel(export_dir)
    want = model.predict_bytes(capture_bytes)
    want["signature_defs"] = model.signature_defs()
    return want


@pytest.fixture(scope="module")
def server(export_dir, tmp_path_factory):
    """`python -m meteor_tf.serve` on the export's model dir (REST only), stopped with SIGTERM afterwards."""
    log_path = tmp_path_factory.mktemp("contract_serve") / "serve.log"
    with serve_cli(export_dir.parent, free_port(), log_path, "--grpc_port=0") as (url, _):
        yield url


PREDICT_PATHS = {"latest": "/v1/models/meteor:predict", "version": f"/v1/models/meteor/versions/{VERSION}:predict"}


def json_answer(response, status: int = 200):
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def assert_error_body(response, status: int, *fragments: str) -> str:
    """TF Serving's error shape: `{"error": "<message>"}` (that one key) with the given HTTP status."""
    body = json_answer(response, status)
    assert isinstance(body, dict) and list(body) == ["error"], body
    assert isinstance(body["error"], str) and body["error"], body
    for fragment in fragments:
        assert fragment in body["error"], body
    return body["error"]


def assert_rows(predictions, expected, indices):
    """Row format for a signature of several outputs: one object per instance holding every output by name."""
    assert isinstance(predictions, list) and len(predictions) == len(indices), predictions
    for row in predictions:
        assert isinstance(row, dict) and set(row) == OUTPUT_NAMES, row
        assert isinstance(row["meteor_probability"], float) and isinstance(row["label"], str)
        assert isinstance(row["class_id"], int) and not isinstance(row["class_id"], bool)
    np.testing.assert_allclose([r["meteor_probability"] for r in predictions],
                               expected["meteor_probability"][indices], atol=1e-5)
    assert [r["label"] for r in predictions] == list(expected["label"][indices])
    assert [r["class_id"] for r in predictions] == list(expected["class_id"][indices])


def assert_columns(outputs, expected, indices):
    """Columnar format for several outputs: an object of output name → one list entry per instance."""
    assert isinstance(outputs, dict) and set(outputs) == OUTPUT_NAMES, outputs
    assert all(isinstance(v, list) and len(v) == len(indices) for v in outputs.values()), outputs
    np.testing.assert_allclose(outputs["meteor_probability"], expected["meteor_probability"][indices], atol=1e-5)
    assert outputs["label"] == list(expected["label"][indices])
    assert outputs["class_id"] == list(expected["class_id"][indices])


def test_the_toy_export_gives_both_labels(expected):
    # the contract tests below compare labels and class ids: both values must occur for that to mean anything
    assert set(expected["label"]) == {"meteor", "non_meteor"}, expected["meteor_probability"]


def test_model_status_of_a_version_is_tf_servings_model_version_status(server):
    status = json_answer(requests.get(f"{server}/v1/models/meteor/versions/{VERSION}", timeout=30))
    assert status == {"model_version_status": [
        {"version": str(VERSION), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert client.parse_status(status, "meteor") == client.ModelStatus("meteor", True, VERSION,
                                                                       f"version {VERSION}: AVAILABLE")


def test_model_status_without_version_is_tf_servings_shape_with_kserves_fields_beside_it(server):
    # TF Serving answers `GET /v1/models/NAME` with every version's status (api_rest.md "Model status API":
    # GetModelStatusResponse as JSON, as the versioned route above); KServe's V1 protocol with {"name", "ready"}.
    # This server answers both in one body, so a client of either server reads it.
    status = json_answer(requests.get(f"{server}/v1/models/meteor", timeout=30))
    assert status == {"model_version_status": [
        {"version": str(VERSION), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}],
        "name": "meteor", "ready": True}
    tf_serving_part = {"model_version_status": status["model_version_status"]}
    kserve_part = {"name": status["name"], "ready": status["ready"]}
    assert client.parse_status(tf_serving_part, "meteor") == client.ModelStatus("meteor", True, VERSION,
                                                                                f"version {VERSION}: AVAILABLE")
    assert client.parse_status(kserve_part, "meteor") == client.ModelStatus("meteor", True, None, "")
    # our client takes the TF Serving part, which carries the version
    assert client.RestClient(server).status() == client.ModelStatus("meteor", True, VERSION,
                                                                    f"version {VERSION}: AVAILABLE")
    with pytest.raises(client.ServingError, match="Could not find any versions of model comet"):
        client.RestClient(server, name="comet").status()


@pytest.mark.parametrize("path", ["/v1/models/meteor/metadata", f"/v1/models/meteor/versions/{VERSION}/metadata"])
def test_metadata_with_and_without_version_is_tf_servings_shape(server, expected, path):
    meta = json_answer(requests.get(server + path, timeout=30))
    assert set(meta) == {"model_spec", "metadata"}, meta
    assert meta["model_spec"] == {"name": "meteor", "signature_name": "", "version": str(VERSION)}
    assert list(meta["metadata"]) == ["signature_def"] and list(meta["metadata"]["signature_def"]) == ["signature_def"]
    defs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(defs) == {"serving_default", "predict_images"}, sorted(defs)
    assert defs == expected["signature_defs"]  # the SavedModel's own signatures, nothing invented

    def dims(tensor):
        return [int(d["size"]) for d in tensor["tensor_shape"]["dim"]]

    default, images = defs["serving_default"], defs["predict_images"]
    assert set(default["inputs"]) == {"image_bytes"} and default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert dims(default["inputs"]["image_bytes"]) == [-1]
    assert set(images["inputs"]) == {"images"} and images["inputs"]["images"]["dtype"] == "DT_FLOAT"
    assert dims(images["inputs"]["images"]) == [-1, IMAGE_SIZE, IMAGE_SIZE, 1]
    for signature in (default, images):
        assert signature["method_name"] == "tensorflow/serving/predict"
        assert {k: v["dtype"] for k, v in signature["outputs"].items()} == {
            "meteor_probability": "DT_FLOAT", "label": "DT_STRING", "class_id": "DT_INT32"}
        assert all(dims(v) == [-1] for v in signature["outputs"].values())


@pytest.mark.parametrize("route", sorted(PREDICT_PATHS))
def test_predict_row_format_bare_b64_and_named_input_objects(server, expected, capture_bytes, route):
    url = server + PREDICT_PATHS[route]
    everything = list(range(len(capture_bytes)))
    bare = {"instances": [{"b64": b64(b)} for b in capture_bytes]}
    answer = json_answer(requests.post(url, json=bare, timeout=60))
    assert list(answer) == ["predictions"], answer
    assert_rows(answer["predictions"], expected, everything)

    named = {"signature_name": "serving_default",
             "instances": [{"image_bytes": {"b64": b64(b)}} for b in capture_bytes]}
    answer = json_answer(requests.post(url, json=named, timeout=60))
    assert list(answer) == ["predictions"], answer
    assert_rows(answer["predictions"], expected, everything)

    one = json_answer(requests.post(url, json={"instances": [{"b64": b64(capture_bytes[3])}]}, timeout=60))
    assert_rows(one["predictions"], expected, [3])  # one instance: still a list of one object


@pytest.mark.parametrize("route", sorted(PREDICT_PATHS))
def test_predict_columnar_format_answers_outputs_by_name(server, expected, capture_bytes, route):
    url = server + PREDICT_PATHS[route]
    everything = list(range(len(capture_bytes)))
    for inputs in ({"image_bytes": [{"b64": b64(b)} for b in capture_bytes]},  # the input named
                   [{"b64": b64(b)} for b in capture_bytes]):  # a signature of one input: the list alone
        answer = json_answer(requests.post(url, json={"signature_name": "serving_default", "inputs": inputs},
                                           timeout=60))
        assert list(answer) == ["outputs"], answer
        assert_columns(answer["outputs"], expected, everything)


B64_TEXT = b64(b"%PDF-1.4 certainly not a capture")
B64_IMAGE = b64(encode(np.full((40, 40), 90, np.uint8)))


@pytest.fixture(scope="module")
def model_inputs(export_dir, capture_bytes):
    """The captures as predict_images takes them: float32 (N, S, S, 1), the export's own input rule applied."""
    return serving_helpers.model_inputs(export_dir, capture_bytes)


@pytest.fixture(scope="module")
def expected_images(export_dir, model_inputs):
    """What the SavedModel's own predict_images signature answers for them, in process."""
    from meteor_tf.serving.export import ExportedModel

    return ExportedModel(export_dir).predict_images(model_inputs)


def test_predict_images_in_process_agrees_with_serving_default(expected, expected_images):
    # the same captures decoded outside the graph: the same answers, both labels among them
    np.testing.assert_allclose(expected_images["meteor_probability"], expected["meteor_probability"], atol=1e-5)
    assert list(expected_images["label"]) == list(expected["label"])


@pytest.mark.parametrize("route", sorted(PREDICT_PATHS))
def test_predict_images_signature_answers_its_own_outputs_in_row_and_columnar_format(server, model_inputs,
                                                                                     expected_images, route):
    """A request names its signature (api_rest.md, "Predict API"): predict_images takes the float model inputs,
    as nested lists in the row format (bare, or {"images": ...} per instance) and the columnar one."""
    url = server + PREDICT_PATHS[route]
    everything = list(range(len(model_inputs)))
    pixels = [image.tolist() for image in model_inputs]
    for instances in (pixels, [{"images": image} for image in pixels]):
        answer = json_answer(requests.post(url, json={"signature_name": "predict_images", "instances": instances},
                                           timeout=60))
        assert list(answer) == ["predictions"], answer
        assert_rows(answer["predictions"], expected_images, everything)
    for inputs in ({"images": pixels}, pixels):
        answer = json_answer(requests.post(url, json={"signature_name": "predict_images", "inputs": inputs},
                                           timeout=60))
        assert list(answer) == ["outputs"], answer
        assert_columns(answer["outputs"], expected_images, everything)
    one = json_answer(requests.post(url, json={"signature_name": "predict_images", "instances": pixels[3:4]},
                                    timeout=60))
    assert_rows(one["predictions"], expected_images, [3])


def pixels(side: int = IMAGE_SIZE, value=200.0) -> list:
    return np.full((side, side, 1), value).tolist()


def ragged() -> list:
    image = pixels()
    image[5] = image[5][:-1]  # one row a pixel short
    return image


def with_value(value) -> list:
    image = pixels()
    image[3][4][0] = value
    return image


EXPECTED_INPUT = f"'predict_images' takes 'images' float32 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1]"


@pytest.mark.parametrize("route", sorted(PREDICT_PATHS))
@pytest.mark.parametrize("body, fragments", [
    pytest.param({"instances": [pixels(28)]}, (EXPECTED_INPUT, "got shape [1, 28, 28, 1]"), id="28 px"),
    pytest.param({"inputs": {"images": [pixels(), pixels(64)]}}, (EXPECTED_INPUT,), id="sizes differ"),
    pytest.param({"instances": [np.full((IMAGE_SIZE, IMAGE_SIZE), 9.0).tolist()]},
                 (EXPECTED_INPUT, f"got shape [1, {IMAGE_SIZE}, {IMAGE_SIZE}]"), id="no channel axis"),
    pytest.param({"inputs": pixels()}, (EXPECTED_INPUT, f"got shape [{IMAGE_SIZE}, {IMAGE_SIZE}, 1]"),
                 id="one image without the batch axis"),
    pytest.param({"instances": [ragged()]}, (EXPECTED_INPUT, "got a list"), id="ragged rows"),
    pytest.param({"instances": [with_value("200")]}, (EXPECTED_INPUT, "got a str"), id="a string pixel"),
    pytest.param({"instances": [with_value(True)]}, (EXPECTED_INPUT, "got a bool"), id="a bool pixel"),
    pytest.param({"instances": [with_value(None)]}, (EXPECTED_INPUT, "got a NoneType"), id="a null pixel"),
    pytest.param({"instances": [with_value(1e39)]}, (EXPECTED_INPUT, "not a finite float32"),
                 id="beyond float32"),
    pytest.param({"instances": [{"b64": B64_IMAGE}]}, (EXPECTED_INPUT, "got a dict"), id="encoded image"),
    pytest.param({"inputs": {"image_bytes": [pixels()]}}, ("\"inputs\" must hold only 'images'",),
                 id="the other signature's input name"),
    pytest.param({"instances": []}, ("non-empty list",), id="no instance"),
])
def test_predict_images_refuses_what_is_not_its_input_with_400_naming_it(server, route, body, fragments):
    """TF Serving would hand these to the signature and answer its TensorFlow error; this server checks them first
    and says what the signature takes."""
    body = {"signature_name": "predict_images", **body}
    assert_error_body(requests.post(server + PREDICT_PATHS[route], json=body, timeout=60), 400, *fragments)


@pytest.mark.parametrize("route", sorted(PREDICT_PATHS))
def test_predict_images_refuses_nan_and_infinity(server, route):
    # Deliberate difference: TF Serving's JSON mapping accepts NaN and Infinity for DT_FLOAT; a capture's pixel is
    # finite, and a NaN input would come back as a NaN probability labelled non_meteor. Refused with 400.
    for token in ("NaN", "Infinity"):
        body = json.dumps({"signature_name": "predict_images", "instances": [with_value(0.5)]}).replace("0.5", token)
        answer = requests.post(server + PREDICT_PATHS[route], data=body, headers={"Content-Type": "application/json"},
                               timeout=60)
        assert_error_body(answer, 400)




@pytest.mark.parametrize("route", sorted(PREDICT_PATHS))
@pytest.mark.parametrize("body, fragment", [
    pytest.param(b'{"instances": [{"b64": ', "", id="malformed JSON"),
    pytest.param(b'[{"b64": "AAAA"}]', "", id="not a JSON object"),
    pytest.param(json.dumps({"instances": [{"b64": B64_TEXT}], "inputs": [{"b64": B64_TEXT}]}), "exactly one of",
                 id="instances and inputs"),
    pytest.param(json.dumps({"examples": [{"b64": B64_TEXT}]}), "exactly one of", id="neither instances nor inputs"),
    pytest.param(json.dumps({"instances": [{"b64": B64_TEXT}]}), "instances[0]", id="non-image b64"),
    pytest.param(json.dumps({"instances": [{"b64": "not base64!"}]}), "base64", id="invalid base64"),
    pytest.param(json.dumps({"signature_name": "nope", "instances": [{"b64": B64_TEXT}]}), "nope",
                 id="wrong signature name"),
])
def test_bad_predict_requests_get_400_with_an_error_body(server, route, body, fragment):
    answer = requests.post(server + PREDICT_PATHS[route], data=body, headers={"Content-Type": "application/json"},
                           timeout=60)
    assert_error_body(answer, 400, fragment)


@pytest.mark.parametrize("method, path, fragment", [
    ("POST", "/v1/models/comet:predict", "comet"),
    ("POST", f"/v1/models/comet/versions/{VERSION}:predict", "comet"),
    ("POST", "/v1/models/meteor/versions/999:predict", "999"),
    # the status routes in TF Serving's words (get_model_status_impl.cc)
    ("GET", "/v1/models/comet", "Could not find any versions of model comet"),
    ("GET", f"/v1/models/comet/versions/{VERSION}", "Could not find any versions of model comet"),
    ("GET", "/v1/models/meteor/versions/999", "Could not find version 999 of model meteor"),
    ("GET", "/v1/models/comet/metadata", "comet"),
    ("GET", "/v1/models/meteor/versions/999/metadata", "999"),
])
def test_unknown_model_or_version_is_404_with_an_error_body(server, capture_bytes, method, path, fragment):
    body = {"instances": [{"b64": b64(capture_bytes[0])}]} if method == "POST" else None
    assert_error_body(requests.request(method, server + path, json=body, timeout=60), 404, fragment)


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/nothing/here"),
    ("POST", "/v1/models/meteor:classify_everything"),
    ("GET", "/v1/models/meteor/labels"),
    ("GET", "/v1/models/meteor:predict"),  # TF Serving's status path takes no ':' in the model name
    ("DELETE", "/v1/models/meteor/metadata"),
])
def test_unknown_paths_and_methods_answer_in_tf_servings_error_shape(server, method, path):
    """TF Serving answers a request it has no handler for with {"error": "Malformed request: ..."}; FastAPI's
    default would be {"detail": "Not Found"}."""
    answer = requests.request(method, server + path, timeout=60)
    assert answer.status_code in (404, 405), answer.text
    assert answer.json() == {"error": f"Malformed request: {method} {path}"}


# --------------------------------------------------------------------------- our client against TF Serving itself


def stub_probability(data: bytes) -> float:
    return round((len(data) % 97) / 97, 6)


class TFServingStub(ThreadingHTTPServer):
    """Answers as tensorflow_model_server's REST API documents, for a model `meteor` with version 3 AVAILABLE and
    version 2 END; predict checks the request as TF Serving would and answers one object of named outputs per
    instance. An image starting with b"BAD" is refused (400), one starting with b"BOOM" fails the server (500).
    Every request is recorded in `requests_seen`."""

    daemon_threads = True
    threshold = 0.5

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.requests_seen = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _StubHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.server.requests_seen.append(("GET", self.path, dict(self.headers), None))
        if self.path == "/v1/models/meteor":
            return self._answer(200, {"model_version_status": [
                {"version": "3", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
                {"version": "2", "state": "END", "status": {"error_code": "OK", "error_message": ""}}]})
        name = self.path.split("/")[3] if self.path.startswith("/v1/models/") else self.path
        return self._answer(404, {"error": f"Could not find any versions of model {name}"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests_seen.append(("POST", self.path, dict(self.headers), body))
        if self.path != "/v1/models/meteor:predict":
            name = self.path.split("/")[3].split(":")[0]
            return self._answer(404, {"error": f"Servable not found for request: Latest({name})"})
        try:
            request = json.loads(body)
        except ValueError as e:
            return self._answer(400, {"error": f"JSON Parse error: {e}"})
        signature = request.get("signature_name", "serving_default")
        if signature != "serving_default":
            return self._answer(400, {"error": f"Serving signature name: \"{signature}\" not found in signature def"})
        if ("instances" in request) == ("inputs" in request):
            return self._answer(400, {"error": "Not formatted correctly expecting only one of 'inputs' or "
                                               "'instances' keys exists"})
        instances = request.get("instances")
        if not isinstance(instances, list) or not all(
                isinstance(i, dict) and set(i) == {"b64"} for i in instances):
            return self._answer(400, {"error": "JSON Value: ... Type: String is not of expected type: base64"})
        images = [base64.b64decode(i["b64"], validate=True) for i in instances]
        if any(i.startswith(b"BOOM") for i in images):
            return self._answer(500, {"error": "Internal: the model's session failed"})
        if any(i.startswith(b"BAD") for i in images):
            return self._answer(400, {"error": "assertion failed: [image_bytes[0] is not an encoded image]"})
        rows = []
        for image in images:
            p = stub_probability(image)
            meteor = p >= self.server.threshold
            rows.append({"meteor_probability": p, "label": "meteor" if meteor else "non_meteor",
                         "class_id": 0 if meteor else 1})
        return self._answer(200, {"predictions": rows})


@pytest.fixture
def stub():
    server = TFServingStub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_client_reads_tf_servings_model_version_status(stub):
    status = client.RestClient(stub.url).status()
    assert status == client.ModelStatus("meteor", True, 3, "version 3: AVAILABLE; version 2: END")
    assert [(m, p) for m, p, _, _ in stub.requests_seen] == [("GET", "/v1/models/meteor")]


def test_client_sends_tf_servings_row_request_and_parses_its_row_answer(stub, capture_bytes):
    images = list(capture_bytes) + [b"x" * 10, b"y" * 96]  # sizes 10 and 96: probabilities 0.103 and 0.990
    got = client.RestClient(stub.url).predict_bytes(images)

    [(method, path, headers, body)] = stub.requests_seen
    assert (method, path) == ("POST", "/v1/models/meteor:predict")
    assert headers.get("Content-Type", "").startswith("application/json")
    assert json.loads(body) == {"signature_name": "serving_default", "instances": [{"b64": b64(b)} for b in images]}

    want = np.float32([stub_probability(b) for b in images])
    np.testing.assert_array_equal(got.meteor_probability, want)
    assert got.label == ["meteor" if p >= 0.5 else "non_meteor" for p in want]
    assert got.class_id.tolist() == [0 if p >= 0.5 else 1 for p in want]
    assert {"meteor", "non_meteor"} <= set(got.label)


@pytest.mark.parametrize("image, error, status, message", [
    pytest.param(b"BAD image", client.InvalidImageError, 400, "is not an encoded image", id="400"),
    pytest.param(b"BOOM", client.ServingError, 500, "the model's session failed", id="500"),
])
def test_client_turns_tf_servings_error_bodies_into_its_errors(stub, image, error, status, message):
    with pytest.raises(error, match=message) as raised:
        client.RestClient(stub.url).predict_bytes([b"a fine image", image])
    # 400: the request's images were refused (the caller retries one by one); anything else ends the run
    assert isinstance(raised.value, client.InvalidImageError) == (status == 400)
    assert str(status) in str(raised.value)


def test_client_reports_tf_servings_404_for_an_unknown_model(stub):
    comet = client.RestClient(stub.url, name="comet")
    with pytest.raises(client.ServingError, match=r"no model 'comet' \(Servable not found for request: "
                                                  r"Latest\(comet\)\)") as raised:
        comet.predict_bytes([b"a fine image"])
    assert not isinstance(raised.value, client.InvalidImageError)
    with pytest.raises(client.ServingError, match="Could not find any versions of model comet"):
        comet.status()
