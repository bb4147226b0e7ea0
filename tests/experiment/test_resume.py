"""A run killed with SIGKILL mid-phase continues where it stopped and ends complete, with every epoch done once:
the epoch logs hold each epoch once, in order, and the two processes together trained exactly the run's epochs
(a rerun that restarted a finished fold or phase would train more)."""

import csv
import os
import re
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
            "--noretrain_final", f"--output_dir={tmp_path / 'runs'}", "--run_id=killed"]


def _epochs(log: Path):
    with open(log) as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


# Keras fit's verbose=2 line at the end of each trained epoch (with the inner validation's metrics)
EPOCH_DONE = re.compile(r"^\d+/\d+ - .* - loss: .* - val_loss: ", re.M)


@pytest.mark.timeout(600)
def test_sigkill_mid_phase_then_rerun_completes_with_the_same_epochs(tmp_path):
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.weights import save_backbone

    data = write_capture_folder(tmp_path / "captures", meteors=14, non_meteors=10, size=40)
    weights = tmp_path / "backbone.weights.h5"
    save_backbone(build_classifier(18, "torchvision", 32, "unit", (), (), 10).get_layer("backbone"), str(weights))
    # unbuffered: every epoch line the killed process printed reaches the pipe before the kill
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(ROOT),
               PYTHONUNBUFFERED="1")
    cmd = _main_cmd(tmp_path, data, weights)
    run_dir = tmp_path / "runs" / "killed"

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    # kill once the second fold's fine-tuning has a mid-phase backup: a phase in progress, a fold finished before it
    while time.time() < deadline and proc.poll() is None:
        if any((run_dir / "fold_1" / "backup_fine_tune").glob("*")):
            time.sleep(0.1)  # past the epoch-end callbacks (backup, then the progress line)
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed:\n" + proc.stdout.read().decode()[-3000:]
    proc.send_signal(signal.SIGKILL)
    killed_output = proc.communicate()[0].decode()
    assert not (run_dir / "summary.md").exists()

    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (run_dir / "summary.md").exists()
    for k in range(2):
        assert _epochs(run_dir / f"fold_{k}" / "head_log.csv") == [0, 1]
        assert _epochs(run_dir / f"fold_{k}" / "fine_tune_log.csv") == [0, 1, 2]
        assert not (run_dir / f"fold_{k}" / "backup_fine_tune").exists()
    assert "With fine tuning" in (run_dir / "summary.md").read_text()
    # 2 folds x (2 head + 3 fine-tuning) epochs between the two processes; one more if the kill fell between an
    # epoch's log line and its backup (that epoch is trained again); a rerun that redid a finished phase trains >= 2 more
    trained = len(EPOCH_DONE.findall(killed_output)) + len(EPOCH_DONE.findall(done.stdout + done.stderr))
    assert 2 * (2 + 3) <= trained <= 2 * (2 + 3) + 1, (trained, killed_output[-2000:], done.stdout[-2000:])


def test_a_resumed_phase_log_keeps_each_backed_up_epoch_once(tmp_path):
    """What a killed process leaves: epochs 0 and 1 logged (1 twice, as a kill between the log and the backup
    repeats it), a half-written row of epoch 2; the backup holds 2 epochs. The log keeps epochs 0 and 1, once each,
    so the resumed process appends epoch 2 after them on a line of its own."""
    from meteor_tf.experiment.phase import _keep_backed_up_rows, read_csv_log

    log = tmp_path / "fine_tune_log.csv"
    log.write_text("epoch,loss,val_loss\n0,0.9,0.8\n1,0.7,0.75\n1,0.71,0.76\n2,0.6")
    _keep_backed_up_rows(log, 2)
    assert log.read_text().splitlines() == ["epoch,loss,val_loss", "0,0.9,0.8", "1,0.71,0.76"]
    assert read_csv_log(log) == {"loss": [0.9, 0.71], "val_loss": [0.8, 0.76]}
    _keep_backed_up_rows(log, 0)  # no backup: the phase starts again, its log too
    assert log.read_text().splitlines() == ["epoch,loss,val_loss"]
