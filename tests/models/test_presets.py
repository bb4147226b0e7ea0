"""The shipped Fashion-MNIST backbone: verified by sha256, loads into the classifier, keeps its recorded accuracy,
ships in the wheel; a missing or corrupt file is a clear error; --fmnist_backbone picks the source."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from meteor_tf.config import ExperimentConfig
from meteor_tf.models import presets

ROOT = Path(__file__).resolve().parents[2]
NAME = "resnet18_fashion_mnist"


def test_shipped_backbone_matches_its_sha256_and_fits_resnet18():
    import h5py

    from meteor_tf.models import weights as w
    from meteor_tf.models.classifier import build_classifier

    path = presets.preset_path(NAME)  # checks the sha256
    info = presets.preset_info(NAME)
    assert path.stat().st_size == info["size_bytes"] <= 25 * 2**20
    assert info["settings"]["depth"] == 18 and info["settings"]["layout"] == "torchvision"
    assert info["train_examples"] == 60000 and info["test_examples"] == 10000
    with h5py.File(path, "r") as f:
        assert f["_extra/fashion_mnist_head/predictions/kernel"].shape == (512, 10)
        assert f["_extra/fashion_mnist_head/predictions/kernel"].dtype == np.float16
        assert "_extra/fashion_mnist_head/bn0/moving_variance" in f
    model = build_classifier(18, "torchvision", 64, normalization="unit")
    w.load_backbone(model.get_layer("backbone"), str(path))  # every variable present, every shape right
    stem = model.get_layer("backbone").get_layer("conv1").kernel
    assert stem.dtype == "float32" and float(np.abs(stem.numpy()).sum()) > 0


def test_shipped_backbone_keeps_its_recorded_fashion_mnist_accuracy():
    from meteor_tf.training.pretrain import evaluate_backbone_file
    from tests.conftest import require_debian_fashion_mnist

    require_debian_fashion_mnist()
    info = presets.preset_info(NAME)
    accuracy = evaluate_backbone_file(presets.preset_path(NAME), info["settings"]["image_size"], limit=1000)["all"]
    assert abs(accuracy - info["test_accuracy_first_1000"]) <= 0.003


def _fake_preset(tmp_path, corrupt=False):
    tmp_path.mkdir(parents=True, exist_ok=True)
    weights, info = presets.preset_files(NAME, tmp_path)
    weights.write_bytes(b"weights" * 100)
    info.write_text(json.dumps({"sha256": presets.sha256_of(weights)}))
    if corrupt:
        weights.write_bytes(b"weightz" * 100)
    return weights


def test_a_corrupt_shipped_file_is_an_error_naming_it_and_the_command_that_regenerates_it(tmp_path):
    weights = _fake_preset(tmp_path, corrupt=True)
    with pytest.raises(presets.PresetError) as err:
        presets.preset_path(NAME, tmp_path)
    assert str(weights) in str(err.value) and "corrupt" in str(err.value)
    assert "python -m meteor_tf.pretrain" in str(err.value)


def test_a_missing_shipped_file_is_an_error_naming_it(tmp_path):
    weights = _fake_preset(tmp_path)
    weights.unlink()
    with pytest.raises(presets.PresetError, match="missing") as err:
        presets.preset_path(NAME, tmp_path)
    assert str(weights) in str(err.value) and "python -m meteor_tf.pretrain" in str(err.value)
    assert presets.preset_path(NAME, _fake_preset(tmp_path / "good").parent).name == weights.name


def test_fmnist_backbone_setting_picks_the_source(tmp_path, monkeypatch):
    from meteor_tf.experiment import model_setup as cv
    from meteor_tf.training import pretrain

    assert ExperimentConfig().fmnist_backbone == "shipped"
    assert cv.fashion_mnist_source(ExperimentConfig(image_size=64)) == presets.preset_path(NAME)
    cached = tmp_path / "cached.weights.h5"
    monkeypatch.setattr(pretrain, "ensure_fashion_mnist_backbone", lambda config: cached)
    assert cv.fashion_mnist_source(ExperimentConfig(fmnist_backbone="pretrain", fmnist_epochs=3)) == cached
    assert cv.fashion_mnist_source(ExperimentConfig(depth=34, fmnist_backbone="pretrain")) == cached
    with pytest.raises(presets.PresetError, match="--fmnist_backbone=pretrain"):
        cv.fashion_mnist_source(ExperimentConfig(depth=34))


def test_pretraining_settings_with_the_shipped_backbone_are_an_error():
    with pytest.raises(ValueError, match="--fmnist_epochs=3 .*--fmnist_backbone=pretrain"):
        ExperimentConfig(fmnist_epochs=3)
    ExperimentConfig(fmnist_backbone="pretrain", fmnist_epochs=3)  # fine: they say how to pretrain


def test_main_says_so_for_pretraining_flags_with_the_shipped_backbone():
    out = subprocess.run([sys.executable, "-m", "meteor_tf.main", "--fmnist_examples=2000"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"))
    assert out.returncode == 2 and "--fmnist_backbone=pretrain" in out.stderr and "Traceback" not in out.stderr


def test_the_wheel_carries_the_shipped_backbone(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "runs", "build", "*.egg-info",
                                                             "__pycache__", "savedmodels"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("meteor_tf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"meteor_tf/presets/{NAME}.weights.h5" in names and f"meteor_tf/presets/{NAME}.json" in names
