"""Serving fixtures: a finished run made by the real runner (a tiny ResNet-18, 32 px) and its export, made once per
session through the real command (`python -m meteor_tf.export --run=... --tflite=float,dynamic,int8`), plus a toy classifier
with the classifier's named parts whose meteor score is the brightness of the capture (fast to export, and its
Grad-CAM is known in advance)."""

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import draw_capture, write_streak_task

ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 32


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def cli_env(tmp_path: Path) -> dict:
    return dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT),
                HOME=str(tmp_path), KERAS_HOME=str(tmp_path / ".keras"))


def run_cli(args, tmp_path, timeout=600):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path,
                          env=cli_env(tmp_path), timeout=timeout)


@pytest.fixture(scope="session")
def capture_bytes():
    """Encoded captures of several sizes and formats (what a station camera writes), meteors and non-meteors."""
    rng = np.random.default_rng(7)
    shapes = [(48, 64), (64, 48), (40, 40), (30, 90), (48, 64), (56, 72)]
    images = []
    for i, (h, w) in enumerate(shapes):
        square = draw_capture(rng, meteor=i % 2 == 0, size=max(h, w))
        images.append(encode(square[:h, :w], "JPEG" if i % 3 == 2 else "PNG"))
    gray_alpha = np.stack([draw_capture(rng, True, 40), np.full((40, 40), 255, np.uint8)], -1)
    images.append(encode(gray_alpha, "PNG"))  # 2-channel PNG: the grayscale rule drops alpha
    images.append(encode(np.stack([draw_capture(rng, False, 44)] * 3, -1), "BMP"))
    return images


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A finished run made by the real runner (what `python -m meteor_tf.main` does): the shipped Fashion-MNIST
    ResNet-18 at 32 px, 2 folds of head then fine-tuning, the final model retrained, on a small streak-or-not
    folder; every export, serving, TFLite and predict test uses its final model and recall-first threshold."""
    from meteor_tf.config import ExperimentConfig
    from meteor_tf.experiment import runner as cv

    root = tmp_path_factory.mktemp("run")
    data = write_streak_task(root / "captures", per_class=24, seed=2)
    config = ExperimentConfig(data=str(data), depth=18, pretrain="fashion_mnist", image_size=IMAGE_SIZE, folds=2,
                              head_epochs=2, fine_tune_epochs=3, batch_size=16, output_dir=str(root / "runs"),
                              run_id="resnet18-test", retrain_final=True, seed=3)
    cv.run_experiment(config, progress=lambda message: None)
    return root / "runs" / "resnet18-test"


@pytest.fixture(scope="session")
def exported_run(trained_run, tmp_path_factory):
    """The trained run exported by the real command, with the three TFLite conversions; returns paths and output."""
    work = tmp_path_factory.mktemp("export_cli")
    result = run_cli(["-m", "meteor_tf.export", f"--run={trained_run}", f"--base_dir={work / 'savedmodels'}",
                      "--tflite=float,dynamic,int8", "--calibration_images=8"], work)
    assert result.returncode == 0, result.stderr[-3000:]
    model_dir = work / "savedmodels" / "meteor"
    return {"version_dir": model_dir / "1", "model_dir": model_dir, "stdout": result.stdout, "work": work,
            "tflite": {q: work / "savedmodels" / "meteor-tflite" / f"meteor-v1-{q}.tflite"
                       for q in ("float", "dynamic", "int8")}}


@pytest.fixture(scope="session")
def run_model(trained_run):
    """The trained run's final Keras model, loaded back as an export loads it."""
    from meteor_tf.serving.export import load_keras_model

    return load_keras_model(trained_run / "final" / "model.keras")


def brightness_classifier(size: int = IMAGE_SIZE, meteor_sign: float = 1.0, grid: int = 8):
    """A toy classifier with the parts `preprocess`, `backbone`, `avg_pool`, `head`: the backbone's one feature
    channel is the brightness of each cell of a grid×grid partition (0 on black), and the meteor logit is
    `meteor_sign` × 4 × their mean. Its Grad-CAM must therefore light up exactly the bright cells."""
    import keras
    from keras import initializers, layers

    from meteor_tf.models.classifier import Preprocess

    images = keras.Input((size, size, 1), name="image")
    normalised = Preprocess("unit", channels=1, name="preprocess")(images)  # black → -1, white → +1
    cells = keras.Input((size, size, 1))
    pooled = layers.AveragePooling2D(size // grid)(cells)
    brightness = layers.Conv2D(1, 1, activation="relu", kernel_initializer=initializers.Constant(1.0),
                               bias_initializer=initializers.Constant(1.0))(pooled)  # black cell → 0
    backbone = keras.Model(cells, brightness, name="backbone")
    features = keras.Input((1,))
    logits = layers.Dense(2, activation="softmax", kernel_initializer=initializers.Constant(
        [[4.0 * meteor_sign, -4.0 * meteor_sign]]), bias_initializer="zeros")(features)
    head = keras.Model(features, logits, name="head")
    outputs = head(layers.GlobalAveragePooling2D(name="avg_pool")(backbone(normalised)))
    return keras.Model(images, outputs, name="brightness_classifier")
