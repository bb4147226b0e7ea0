"""Fault injection: the process SIGKILLs itself at a named point (meteor_tf.faults, METEOR_TF_KILL_AT), the same
command is rerun, and the run must end exactly as an uninterrupted one: the same folds.json, predictions equal to
1e-6, metrics.json and summary.md equal except timings, the same export — and at the moment of the kill no file a
user or a server reads is truncated."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_capture_folder

ROOT = Path(__file__).resolve().parents[2]
TIMING = re.compile(r"timings|seconds|wall|time|date|started|finished|duration|elapsed", re.IGNORECASE)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.weights import save_backbone

    base = tmp_path_factory.mktemp("faults")
    data = write_capture_folder(base / "captures", meteors=10, non_meteors=8, size=36)
    weights = base / "backbone.weights.h5"
    save_backbone(build_classifier(18, "torchvision", 32, "unit", (), (), 10).get_layer("backbone"), str(weights))
    return {"data": data, "weights": weights, "base": base}


def _reference(inputs, name: str, extra=()) -> Path:
    reference = inputs["base"] / name
    done = _run(reference, inputs["data"], inputs["weights"], extra=extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return reference


@pytest.fixture(scope="module")
def setup(inputs):
    """The whole run (2 folds, final model, export) uninterrupted: what the slow kill points must end as."""
    return dict(inputs, reference=_reference(inputs, "reference"))


def _run(where: Path, data, weights, kill_at: str = "", extra=()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "meteor_tf.main", f"--data={data}", "--depth=18", "--pretrain=fashion_mnist",
           f"--weights={weights}", "--image_size=32", "--folds=2", "--head_epochs=1", "--fine_tune_epochs=2",
           "--batch_size=4", "--head_units=8", "--head_dropout=0.1", "--val_fraction=0.25", "--nocache_features",
           "--retrain_final", "--export", f"--export_dir={where / 'savedmodels'}",
           f"--output_dir={where / 'runs'}", "--run_id=faults", *extra]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(ROOT))
    env.pop("METEOR_TF_KILL_AT", None)
    if kill_at:
        env["METEOR_TF_KILL_AT"] = kill_at
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if not TIMING.search(k)}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _summary(path: Path) -> str:
    return path.read_text().split("## Wall time")[0]  # all but the timings section


def _assert_nothing_truncated(run_dir: Path, export_dir: Path) -> None:
    """Every file a user, a resumed run or a server reads is whole: JSON parses, HDF5 opens, NPZ loads, and each
    version directory holds a loadable SavedModel. Temporary names (partial.*, .partial-export-*) are allowed."""
    import h5py

    for path in run_dir.rglob("*"):
        if not path.is_file() or path.name.startswith("partial.") or "backup" in path.parent.name:
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".h5":
            with h5py.File(path, "r"):
                pass
        elif path.suffix == ".npz":
            with np.load(path) as z:
                [z[k] for k in z.files]
    model_dir = export_dir / "meteor"
    for version in (model_dir.iterdir() if model_dir.exists() else []):
        if version.name.isdigit():
            assert (version / "saved_model.pb").stat().st_size > 0
            json.loads((version / "assets" / "meteor_tf.json").read_text())


def _assert_same_results(got: Path, want: Path) -> None:
    g, w = got / "runs" / "faults", want / "runs" / "faults"
    assert (g / "folds.json").read_text() == (w / "folds.json").read_text()
    threads = [json.loads((d / "provenance.json").read_text())["threads"] for d in (g, w)]
    assert threads[0] == threads[1]  # the same thread settings, so the same float reduction order
    for npz in sorted(w.rglob("predictions_*.npz")):
        with np.load(npz) as a, np.load(g / npz.relative_to(w)) as b:
            assert sorted(a.files) == sorted(b.files)
            for k in a.files:
                np.testing.assert_allclose(b[k], a[k], atol=1e-6, err_msg=f"{npz.relative_to(w)}:{k}")
    for metrics in sorted(w.rglob("metrics.json")):
        mine = (g / metrics.relative_to(w)).read_text().replace(str(got), str(want))  # the runs' own paths differ
        assert _untimed(json.loads(mine)) == _untimed(json.loads(metrics.read_text())), metrics.relative_to(w)
    assert _summary(g / "summary.md") == _summary(w / "summary.md")
    if not (want / "savedmodels").exists():  # a run without --export
        assert not (got / "savedmodels").exists()
        return
    versions = sorted(p.name for p in (got / "savedmodels" / "meteor").iterdir() if p.name.isdigit())
    assert versions == ["1"], versions  # one export, never a second or a half one
    assert not list((got / "savedmodels" / "meteor").glob(".partial-export-*"))


def _kill_and_rerun(setup, tmp_path, kill_at: str, reference=None, extra=()) -> None:
    killed = _run(tmp_path, setup["data"], setup["weights"], kill_at, extra)
    assert killed.returncode == -9, f"{kill_at} was never reached:\n{killed.stdout[-2000:]}{killed.stderr[-2000:]}"
    _assert_nothing_truncated(tmp_path / "runs" / "faults", tmp_path / "savedmodels")
    done = _run(tmp_path, setup["data"], setup["weights"], extra=extra)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_same_results(tmp_path, reference or setup["reference"])


# The CI variant: one point, on a smaller run (one hold-out fold, no final model, no export: three runs in ~2 min
# instead of ~5); the whole run's points are slow-marked.
CI_FLAGS = ("--folds=1", "--noretrain_final", "--noexport")


@pytest.mark.timeout(900)
def test_a_kill_mid_report_then_a_rerun_ends_as_an_uninterrupted_run(inputs, tmp_path):
    reference = _reference(inputs, "reference_ci", CI_FLAGS)
    _kill_and_rerun(inputs, tmp_path, "report_write@3", reference=reference, extra=CI_FLAGS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kill_at", ["report_write@5", "backup_write@1", "epoch_end@1", "checkpoint_write@1", "export_write",
                                     "report_write@1", "report_write@12",
                                     "epoch_end@2", "epoch_end@8"])
def test_more_kill_points_then_a_rerun_ends_as_an_uninterrupted_run(setup, tmp_path, kill_at):
    _kill_and_rerun(setup, tmp_path, kill_at)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_kill_inside_an_augmented_phase_then_a_rerun_ends_as_an_uninterrupted_run(inputs, tmp_path):
    # the augmentation layers run in tf.data, outside the model: a resumed phase restarted their draws
    extra = ("--augment=complete",)
    reference = _reference(inputs, "reference_augmented", extra)
    _kill_and_rerun(inputs, tmp_path, "epoch_end@2", reference=reference, extra=extra)
