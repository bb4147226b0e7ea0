"""A run killed with SIGKILL mid-phase continues where it stopped and ends complete, with every epoch done once."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_capture_folder

ROOT = Path(__file__).resolve().parents[2]


def _main_cmd(tmp_path, data, weights):
    return [sys.executable, "-m", "meteor_tf.main", f"--data={data}", "--depth=18", "--pretrain=fashion_mnist",
            f"--weights={weights}", "--image_size=32", "--folds=2", "--head_epochs=2", "--fine_tune_epochs=3",
            "--batch_size=4", "--head_units=16", "--head_dropout=0.1", "--val_fraction=0.25",
            "--noretrain_final", "--nocache_features", f"--output_dir={tmp_path / 'runs'}", "--run_id=killed"]


def _epochs(log: Path):
    with open(log) as f:
        return sorted({int(r["epoch"]) for r in csv.DictReader(f)})


@pytest.mark.timeout(600)
def test_sigkill_mid_phase_then_rerun_completes_with_the_same_epochs(tmp_path):
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.weights import save_backbone

    data = write_capture_folder(tmp_path / "captures", meteors=14, non_meteors=10, size=40)
    weights = tmp_path / "backbone.weights.h5"
    save_backbone(build_classifier(18, "torchvision", 32, "unit", (), (), 10).get_layer("backbone"), str(weights))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT))
    cmd = _main_cmd(tmp_path, data, weights)
    run_dir = tmp_path / "runs" / "killed"

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    # kill once the second fold's fine-tuning has a mid-phase backup: a phase in progress, a fold finished before it
    while time.time() < deadline and proc.poll() is None:
        if any((run_dir / "fold_1" / "backup_fine_tune").glob("*")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read().decode()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "summary.md").exists()

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (run_dir / "summary.md").exists()
    for k in range(2):
        assert _epochs(run_dir / f"fold_{k}" / "head_log.csv") == [0, 1]
        assert _epochs(run_dir / f"fold_{k}" / "fine_tune_log.csv") == [0, 1, 2]
        assert not (run_dir / f"fold_{k}" / "backup_fine_tune").exists()
    assert "With fine tuning" in (run_dir / "summary.md").read_text()
