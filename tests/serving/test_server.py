"""`python -m meteor_tf.serve` in a subprocess on 127.0.0.1, sent real HTTP and gRPC requests: answers equal the
export's own, every kind of bad request gets a 4xx naming what is wrong while the server keeps serving, the size limit
holds, and a bounded load test loses no request."""

import base64
import ipaddress
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests

from meteor_tf.serving import client
from tests.serving.serving_helpers import (BAD_FILES, GOOD_FILES, free_port, model_inputs, serve_cli,
                                           write_station_folder)
from tests.serving.serving_helpers import served  # noqa: F401 — fixture

MAX_REQUEST_BYTES = 200_000


@pytest.fixture(scope="module")
def server(served, tmp_path_factory):
    """The CLI serving the tiny export's model dir (so: its newest version), stopped with SIGTERM afterwards."""
    grpc_port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    with serve_cli(served["model_dir"], free_port(), log_path, f"--grpc_port={grpc_port}",
                   f"--max_request_bytes={MAX_REQUEST_BYTES}") as (url, process):
        yield {"url": url, "grpc": f"127.0.0.1:{grpc_port}", "process": process, "log": log_path}


@pytest.fixture(scope="module")
def expected(served):
    """What the export itself says about the test images, loaded in this process."""
    from meteor_tf.serving.export import ExportedModel

    model = ExportedModel(served["version_dir"])
    want = model.predict_bytes(served["images"])
    # one image alone: oneDNN's float sums may differ in the last bit with the batch size, so single-image requests
    # are compared with single-image predictions
    want["single"] = np.concatenate([model.predict_bytes([b])["meteor_probability"] for b in served["images"]])
    return want


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def predict_url(server, name="meteor"):
    return f"{server['url']}/v1/models/{name}:predict"


def assert_still_serving(server, served, expected):
    answer = requests.post(predict_url(server), json={"instances": [{"b64": b64(served["images"][0])}]},
                           timeout=60)
    assert answer.status_code == 200, answer.text
    assert np.float32(answer.json()["predictions"][0]["meteor_probability"]) == expected["single"][0]


def test_predictions_over_rest_equal_the_exports_own(server, served, expected):
    images = served["images"]
    answer = requests.post(predict_url(server), json={"instances": [{"b64": b64(b)} for b in images]}, timeout=60)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    assert [set(r) for r in rows] == [{"meteor_probability", "label", "class_id"}] * len(images)
    np.testing.assert_array_equal(np.float32([r["meteor_probability"] for r in rows]), expected["meteor_probability"])
    assert [r["label"] for r in rows] == list(expected["label"])
    assert [r["class_id"] for r in rows] == list(expected["class_id"])

    named = requests.post(predict_url(server), json={"instances": [{"image_bytes": {"b64": b64(images[1])}}]},
                          timeout=60)
    assert np.float32(named.json()["predictions"][0]["meteor_probability"]) == expected["single"][1]
    columnar = requests.post(predict_url(server), json={"inputs": {"image_bytes": [{"b64": b64(b)} for b in images]}},
                             timeout=60).json()
    np.testing.assert_array_equal(np.float32(columnar["outputs"]["meteor_probability"]), expected["meteor_probability"])
    # a body sent without a JSON content type reaches the model as raw bytes: still parsed
    raw = requests.post(predict_url(server), data=json.dumps({"instances": [{"b64": b64(images[2])}]}),
                        headers={"Content-Type": "text/plain"}, timeout=60)
    assert raw.status_code == 200 and np.float32(raw.json()["predictions"][0]["meteor_probability"]) == \
        expected["single"][2]


def test_tf_serving_version_and_metadata_routes(server, served, expected):
    version = Path(served["version_dir"]).name  # the newest version, the one served
    body = {"instances": [{"b64": b64(b)} for b in served["images"]]}
    url = f"{server['url']}/v1/models/meteor/versions/{version}:predict"
    answer = requests.post(url, json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    rows = answer.json()["predictions"]
    np.testing.assert_array_equal(np.float32([r["meteor_probability"] for r in rows]), expected["meteor_probability"])
    wrong = requests.post(f"{server['url']}/v1/models/meteor/versions/999:predict", json=body, timeout=60)
    assert wrong.status_code == 404 and "no version 999" in wrong.json()["error"]
    bad = requests.post(url, json={"instances": []}, timeout=60)
    assert bad.status_code == 400 and "non-empty list" in bad.json()["error"]

    meta = requests.get(f"{server['url']}/v1/models/meteor/metadata", timeout=60).json()
    assert meta["model_spec"] == {"name": "meteor", "signature_name": "", "version": version}
    default = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert default["inputs"]["image_bytes"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert set(default["outputs"]) == {"meteor_probability", "label", "class_id"}
    assert requests.get(f"{server['url']}/v1/models/other/metadata", timeout=60).status_code == 404

    status = requests.get(f"{server['url']}/v1/models/meteor/versions/{version}", timeout=60).json()
    parsed = client.parse_status(status, "meteor")
    assert parsed.ready and parsed.version == int(version)


def test_predict_images_over_rest_equals_the_exports_own_signature(server, served):
    """The float-input signature on the trained model (not permutation-invariant as the contract test's toy is): a
    server that reorders, rescales or mixes up the pixels it was sent gets other numbers."""
    from meteor_tf.serving.export import ExportedModel

    inputs = model_inputs(served["version_dir"], served["images"])
    want = ExportedModel(served["version_dir"]).predict_images(inputs)
    version = Path(served["version_dir"]).name
    for path in ("/v1/models/meteor:predict", f"/v1/models/meteor/versions/{version}:predict"):
        rows = requests.post(server["url"] + path, json={"signature_name": "predict_images",
                                                         "instances": inputs.tolist()}, timeout=60)
        assert rows.status_code == 200, rows.text
        predictions = rows.json()["predictions"]
        np.testing.assert_allclose([r["meteor_probability"] for r in predictions], want["meteor_probability"],
                                   atol=1e-5)
        assert [r["label"] for r in predictions] == list(want["label"])
        columns = requests.post(server["url"] + path, json={"signature_name": "predict_images",
                                                            "inputs": {"images": inputs.tolist()}}, timeout=60)
        np.testing.assert_allclose(columns.json()["outputs"]["meteor_probability"], want["meteor_probability"],
                                   atol=1e-5)
        assert columns.json()["outputs"]["class_id"] == list(want["class_id"])


def test_rest_client_reads_the_status_and_predicts(server, served, expected):
    rest = client.connect(server["url"])
    status = rest.status()  # TF Serving's model_version_status part of the answer: the served version
    assert status == client.ModelStatus("meteor", True, int(Path(served["version_dir"]).name),
                                        f"version {Path(served['version_dir']).name}: AVAILABLE")
    got = rest.predict_bytes(served["images"])
    np.testing.assert_array_equal(got.meteor_probability, expected["meteor_probability"])
    assert got.label == list(expected["label"])


@pytest.mark.parametrize("body, headers, message", [
    (b'{"instances": [{"b64": ', {"Content-Type": "application/json"}, "Unrecognized request format"),
    (b'{"instances": [{"b64": ', {"Content-Type": "text/plain"}, "not JSON"),
    (json.dumps({"instances": [{"b64": "not base64!"}]}), {}, "instances[0]: \"b64\" is not valid base64"),
    (json.dumps({"instances": [{"b64": b64(b"%PDF-1.4 not an image at all")}]}), {}, "instances[0]: not an image"),
    (json.dumps({"instances": ["raw string"]}), {}, "instances[0]: expected {\"b64\""),
    (json.dumps({"instances": []}), {}, "non-empty list"),
    (json.dumps({"signature_name": "explain_images", "instances": [{"b64": "AAAA"}]}), {}, "unknown signature_name"),
    (json.dumps({"signature_name": "predict_images", "instances": [{"b64": "AAAA"}]}), {},
     "'predict_images' takes 'images' float32 [N, 32, 32, 1]"),
    (json.dumps({"examples": []}), {}, "exactly one of \"instances\""),
])
def test_bad_requests_get_400_naming_the_problem_and_the_server_keeps_serving(server, served, expected, body,
                                                                             headers, message):
    headers = {"Content-Type": "application/json", **headers}
    answer = requests.post(predict_url(server), data=body, headers=headers, timeout=60)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]
    assert_still_serving(server, served, expected)


def test_fuzzed_bodies_get_200_or_a_4xx_never_a_5xx_and_the_server_keeps_serving(server, served, expected):
    from tests.serving.fuzz_inputs import json_bodies

    bodies = json_bodies(150, seed=7)  # random JSON, wrong types, damaged images in well-formed requests, raw bytes
    seen = {}
    for i, body in enumerate(bodies):
        content_type = ("application/json", "text/plain", "application/octet-stream")[i % 3]
        answer = requests.post(predict_url(server), data=body, headers={"Content-Type": content_type}, timeout=60)
        seen[answer.status_code] = seen.get(answer.status_code, 0) + 1
        assert answer.status_code in (200, 400, 413), (answer.status_code, body[:200], answer.text[:300])
        if answer.status_code == 400:
            assert answer.json().get("error"), answer.text[:300]
    assert seen.get(400, 0) > 100 and seen.get(200, 0) > 0, seen  # both sides of the line were exercised
    assert server["process"].poll() is None
    assert_still_serving(server, served, expected)


def test_a_broken_image_in_a_batch_is_named_and_fails_only_its_request(server, served, expected):
    truncated = served["images"][0][:200]  # a PNG header with half its data: Pillow's header check passes
    body = {"instances": [{"b64": b64(served["images"][1])}, {"b64": b64(truncated)}]}
    answer = requests.post(predict_url(server), json=body, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"].startswith("instances[1]:"), answer.text
    assert_still_serving(server, served, expected)


def test_naming_the_bad_image_of_a_big_batch_does_not_predict_each_image_alone(served):
    # a 1,000-image request with one bad image took 16.8 s instead of 3.7 s: each image was predicted alone to find it
    from meteor_tf.serving import server as srv

    class CountingBackend:
        calls = []

        def predict_bytes(self, images):
            self.calls.append(len(images))
            raise client.InvalidImageError("cannot decode the image: batch refused")

    model = srv.MeteorModel("meteor", served["model_dir"])
    model.backend = CountingBackend()
    good = served["images"][1]
    truncated = served["images"][0][:200]  # passes Pillow's header check, refused by TensorFlow's decoder
    with pytest.raises(srv.InvalidInput, match=r"^instances\[40\]: cannot decode"):
        model.classify([good] * 40 + [truncated] + [good] * 9)
    assert CountingBackend.calls == [50]


def test_oversized_bodies_get_413_whether_declared_or_streamed(server, served, expected):
    big = json.dumps({"instances": [{"b64": b64(b"x" * MAX_REQUEST_BYTES)}]}).encode()
    answer = requests.post(predict_url(server), data=big, headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 413 and "--max_request_bytes" in answer.json()["error"]
    chunks = (big[i:i + 65536] for i in range(0, len(big), 65536))  # a generator: chunked, no Content-Length
    answer = requests.post(predict_url(server), data=chunks, headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 413 and "limit" in answer.json()["error"]
    assert_still_serving(server, served, expected)


def test_unknown_model_is_404_and_the_client_says_which_name(server, served, expected):
    answer = requests.post(predict_url(server, "comet"), json={"instances": [{"b64": "AAAA"}]}, timeout=60)
    assert answer.status_code == 404 and "comet" in answer.json()["error"]
    with pytest.raises(client.ServingError, match="no model 'comet'"):
        client.RestClient(server["url"], "comet").predict_bytes(served["images"][:1])
    assert_still_serving(server, served, expected)


def test_server_listens_on_loopback_only(server):
    import psutil

    process = psutil.Process(server["process"].pid)
    connections = getattr(process, "net_connections", None) or process.connections  # psutil < 6 names it so
    listening = [c.laddr for c in connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    def loopback(ip):  # gRPC listens on a dual-stack socket: ::ffff:127.0.0.1 is 127.0.0.1
        address = ipaddress.ip_address(ip)
        return (getattr(address, "ipv4_mapped", None) or address) == ipaddress.ip_address("127.0.0.1")

    assert len(listening) == 2 and all(loopback(address.ip) for address in listening), listening


def test_grpc_prediction_service_answers_like_tf_serving(server, served, expected):
    grpc_client = client.connect(f"grpc://{server['grpc']}")
    status = grpc_client.status()
    assert status.ready and status.version == int(served["version_dir"].name)
    got = grpc_client.predict_bytes(served["images"])
    np.testing.assert_array_equal(got.meteor_probability, expected["meteor_probability"])
    assert got.label == list(expected["label"]) and got.class_id.tolist() == list(expected["class_id"])
    with pytest.raises(client.InvalidImageError, match=r"image_bytes\[1\]: not an image"):
        grpc_client.predict_bytes([served["images"][0], b"not an image"])
    with pytest.raises(client.InvalidImageError, match="RESOURCE_EXHAUSTED"):
        grpc_client.predict_bytes([b"\x89PNG" + b"x" * MAX_REQUEST_BYTES])
    with pytest.raises(client.ServingError, match="no model 'comet'"):
        client.GrpcClient(server["grpc"], "comet").predict_bytes(served["images"][:1])
    np.testing.assert_array_equal(grpc_client.predict_bytes(served["images"][:1]).meteor_probability,
                                  expected["single"][:1])


def test_a_station_folder_through_rest_and_grpc_gets_the_in_process_answers(server, served, tmp_path, capsys):
    from meteor_tf import predict
    from meteor_tf.serving import predict as fp

    station = write_station_folder(tmp_path / "captures")
    local = fp.classify_folder(client.LocalBackend(served["model_dir"]), station, batch_size=4, progress=False)
    for url in (server["url"], f"grpc://{server['grpc']}"):
        remote = fp.classify_folder(client.connect(url), station, batch_size=4, progress=False)
        assert [(r.path, r.label, bool(r.error)) for r in remote.results] == \
            [(r.path, r.label, bool(r.error)) for r in local.results]
        assert {r.path for r in remote.errors} == set(BAD_FILES)
        for a, b in zip(remote.results, local.results):
            assert a.meteor_probability == pytest.approx(b.meteor_probability, abs=1e-6)
        assert "labels from the server" in remote.format()

    predict.FLAGS.unparse_flags()
    try:  # the command: checks the server's status first, then classifies
        predict.FLAGS(["meteor-predict", f"--server={server['url']}", f"--input={station}",
                       f"--output={tmp_path / 'results.csv'}", "--noprogress"])
        assert predict.main(["meteor-predict"]) == 0
    finally:
        predict.FLAGS.unparse_flags()
    assert f"{len(GOOD_FILES) + len(BAD_FILES)} files" in capsys.readouterr().out


def load_test(server, served, expected, requests_total: int, clients: int) -> dict:
    """`requests_total` single-image requests from `clients` threads (one keep-alive session each)."""
    images, want = served["images"], expected["single"]
    bodies = [json.dumps({"instances": [{"b64": b64(b)}]}) for b in images]
    local = threading.local()

    def one(i):
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        start = time.perf_counter()
        try:
            answer = session.post(predict_url(server), data=bodies[i % len(images)],
                                  headers={"Content-Type": "application/json"}, timeout=120)
            ok = (answer.status_code == 200
                  and np.float32(answer.json()["predictions"][0]["meteor_probability"]) == want[i % len(images)])
        except requests.RequestException:
            ok = False
        return ok, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(one, range(requests_total)))
    seconds = time.perf_counter() - start
    latencies = np.array([t for _, t in outcomes]) * 1000
    return {"requests": requests_total, "clients": clients, "answered_correctly": int(sum(ok for ok, _ in outcomes)),
            "errors": int(sum(not ok for ok, _ in outcomes)), "seconds": round(seconds, 2),
            "requests_per_s": round(requests_total / seconds, 1),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1),
            "p95_ms": round(float(np.percentile(latencies, 95)), 1)}


def test_load_400_requests_from_8_clients_lose_nothing(server, served, expected):
    result = load_test(server, served, expected, 400, 8)
    print("load test:", json.dumps(result))
    assert result["answered_correctly"] == 400 and result["errors"] == 0, result


@pytest.mark.slow
def test_load_2000_requests_from_8_clients_lose_nothing(server, served, expected):
    result = load_test(server, served, expected, 2000, 8)
    print("load test:", json.dumps(result))
    assert result["answered_correctly"] == 2000 and result["errors"] == 0, result


def test_sigterm_stops_the_server(server):
    """Last in the module: the fixture's own shutdown path, checked to end the process (REST and gRPC) quickly."""
    process = server["process"]
    process.terminate()
    process.wait(timeout=30)  # TimeoutExpired fails the test: the server must end within 30 s
    assert process.returncode in (0, -signal.SIGTERM), process.returncode  # a clean stop, not a crash
    log = server["log"].read_text()
    assert "Traceback" not in log, log[-3000:]


# ---------------------------------------------------------------------------------------------- the CLI's errors


def run_serve_cli(*args):
    from meteor_tf import serve

    serve.FLAGS.unparse_flags()
    try:
        serve.FLAGS(["meteor-serve", *args])
        return serve.main(["meteor-serve"])
    finally:
        serve.FLAGS.unparse_flags()


def test_serve_cli_errors_are_one_line_and_exit_2(tmp_path, capsys, served):
    assert run_serve_cli(f"--model={tmp_path / 'nowhere'}", f"--port={free_port()}", "--grpc_port=0") == 2
    assert "nowhere: no such model directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_serve_cli(f"--model={tmp_path / 'empty'}", f"--port={free_port()}", "--grpc_port=0") == 2
    assert "no exported version" in capsys.readouterr().err
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert run_serve_cli(f"--model={served['model_dir']}", f"--port={port}", "--grpc_port=0") == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("flag", ["--port=70000", "--port=0", "--grpc_port=-1", "--max_request_bytes=0"])
def test_serve_refuses_a_port_or_size_out_of_range_with_one_line(tmp_path, flag):
    done = subprocess.run([sys.executable, "-m", "meteor_tf.serve", "--model=savedmodels/meteor", flag],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert done.returncode == 2 and flag.split("=")[0] in done.stderr and "Traceback" not in done.stderr
