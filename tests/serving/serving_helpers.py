"""Helpers shared by the serve/predict/client tests: the session's export (tests/serving/conftest.py: a tiny
random-weights ResNet-18 at 32 px, exported by the real command with its TFLite conversions) gathered in one dict,
a station's folder of captures, free ports, the serving CLI in a subprocess."""

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.conftest import draw_capture
from tests.serving.conftest import encode


ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_cli(model_dir, port: int, log_path: Path, *args: str):
    """`python -m meteor_tf.serve --model=model_dir --port=port *args` in a subprocess, waited for until
    `/v1/models/meteor` answers 200 (the test fails with the log's tail if it exits or is not ready within
    STARTUP_TIMEOUT_S); yields (url, process) and stops it with SIGTERM (then SIGKILL) afterwards."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "meteor_tf.serve", f"--model={model_dir}", f"--port={port}", *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"meteor_tf.serve exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/v1/models/meteor", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"meteor_tf.serve not ready after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def model_inputs(version_dir, images) -> np.ndarray:
    """Encoded captures as an export's predict_images signature takes them: float32 (N, S, S, 1), the export's own
    size and input rule applied outside the graph."""
    import tensorflow as tf

    from meteor_tf.data.preprocess import preprocess_bytes
    from meteor_tf.serving.export import load_metadata

    meta = load_metadata(version_dir)
    return np.stack([preprocess_bytes(tf.constant(b), int(meta["image_size"]), meta["input_rule"]).numpy()
                     for b in images])


@pytest.fixture(scope="module")
def served(exported_run, trained_run, capture_bytes):
    """What the serving tests need of the session's export: model dir, version dir, threshold, test images, the run
    (its final Keras model) and the TFLite files."""
    from meteor_tf.serving.export import load_metadata

    return {"model_dir": exported_run["model_dir"], "version_dir": exported_run["version_dir"],
            "threshold": float(load_metadata(exported_run["version_dir"])["threshold"]),
            "images": list(capture_bytes), "run_dir": trained_run, "keras_model": trained_run / "final" / "model.keras",
            "tflite": exported_run["tflite"]}


GOOD_FILES = ("night1/FF_0001.png", "night1/FF_0002.png", "night1/deep/FF_0003.jpg", "night2/FF_0004.tif",
              "night2/FF_0005.gif", "night2/FF_0006.bmp")
BAD_FILES = {"bad/empty.png": "empty file", "bad/notes_renamed.jpg": "not an image",
             "bad/truncated.png": "cannot decode", "bad/tiny.png": "too small"}


def write_station_folder(root: Path, seed: int = 3) -> Path:
    """A night's captures as a station leaves them: nested folders, every format, a few bad files, non-images."""
    rng = np.random.default_rng(seed)
    for i, name in enumerate(GOOD_FILES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image = draw_capture(rng, i % 2 == 0, 40 + 8 * i)
        if name.endswith(".tif"):
            Image.fromarray(image.astype(np.uint16) * 257).save(path)  # 16-bit, as some cameras write
        else:
            Image.fromarray(image).save(path)
    (root / "bad").mkdir()
    (root / "bad/empty.png").write_bytes(b"")
    (root / "bad/notes_renamed.jpg").write_text("exposure 10 s, gain 4\n")
    png = encode(draw_capture(rng, True, 48), "PNG")
    (root / "bad/truncated.png").write_bytes(png[:len(png) // 2])
    Image.fromarray(draw_capture(rng, True, 48)[:4, :4]).save(root / "bad/tiny.png")
    (root / "night1/FF_0001.txt").write_text("not an image: ignored")
    Image.fromarray(draw_capture(rng, True, 48)).save(root / "night1/.hidden.png")  # hidden: ignored
    return root
