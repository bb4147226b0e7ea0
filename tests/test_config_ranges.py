"""Every numeric experiment setting has a declared range: a value outside it is a one-line error naming the flag, the
allowed interval and the value, before any work starts (and exit status 2 from the CLI)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from meteor_tf.config import PER_ENTRY_RANGES, RANGES, ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def _outside(bounds):
    low, high, low_open, high_open = bounds
    values = [low if low_open else (low - 1 if isinstance(low, int) else low - 0.5)]
    if high != float("inf"):
        values.append(high if high_open else (high + 1 if isinstance(high, int) else high + 0.5))
    return values


CASES = [(name, value) for name, bounds in RANGES.items() for value in _outside(bounds)
         if not (name == "image_size" and value < 32)]  # image_size keeps its own "at least 32 pixels" message


@pytest.mark.parametrize("name, value", CASES)
def test_each_setting_outside_its_range_is_refused_with_its_interval(name, value):
    extra = {"fmnist_backbone": "pretrain"} if name.startswith("fmnist_") else {}
    with pytest.raises(ValueError, match=rf"--{name}={value} is out of range: allowed [\[(]"):
        ExperimentConfig(**{name: value}, **extra)


@pytest.mark.parametrize("name, value", [("head_units", (0, 512)), ("head_dropout", (1.5, 0.25))])
def test_each_entry_of_a_list_setting_is_checked(name, value):
    assert name in PER_ENTRY_RANGES
    with pytest.raises(ValueError, match=rf"--{name}=.* out of range"):
        ExperimentConfig(**{name: value})


def test_a_single_out_of_range_dropout_names_the_range_not_the_entry_count():
    with pytest.raises(ValueError, match="out of range"):
        ExperimentConfig(head_dropout=(1.5,))


def test_the_defaults_are_inside_every_range():
    ExperimentConfig()


@pytest.mark.parametrize("flag", ["--batch_size=0", "--fine_tune_epochs=-1", "--target_recall=2", "--lr_head=-1",
                                  "--val_fraction=0", "--folds=1 --holdout_fraction=1.5", "--lr_fine_tune=-1"])
def test_main_refuses_them_with_one_line_and_exit_2(tmp_path, flag):
    done = subprocess.run([sys.executable, "-m", "meteor_tf.main", *flag.split(), f"--output_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 2 and "out of range" in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())  # refused before any work


@pytest.mark.parametrize("command, flag", [
    ("meteor_tf.data.cli", "export --meteors=-1"), ("meteor_tf.data.cli", "baseline --folds=1"),
    ("meteor_tf.data.cli", "contact_sheet --per_sub_label=0"), ("meteor_tf.data.cli", "export --seed=-3"),
    ("meteor_tf.predict", "--batch_size=0"), ("meteor_tf.predict", "--threshold=2"), ("meteor_tf.predict", "--timeout=0"),
    ("meteor_tf.evaluate", "--batch_size=0"), ("meteor_tf.evaluate", "--threshold=-0.1"),
    ("meteor_tf.tune", "--hyperband_factor=1"), ("meteor_tf.tune", "--objective_precision=2"),
    ("meteor_tf.tune", "--tune_folds=0"), ("meteor_tf.tune", "--max_trials=-1"),
    ("meteor_tf.export", "--calibration_images=0"), ("meteor_tf.export", "--version=-1"),
    ("meteor_tf.serve", "--port=70000"), ("meteor_tf.pretrain", "--epochs=0"),
])
def test_every_command_refuses_an_out_of_range_flag_with_one_line_and_exit_2(tmp_path, command, flag):
    done = subprocess.run([sys.executable, "-m", command, *flag.split()], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag.split()[-1].split("=")[0] in lines[0], lines
    assert not any(tmp_path.iterdir())  # refused before any work
