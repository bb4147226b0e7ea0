"""Several processes on one run directory: claims (experiment/claims.py), --fold_workers, a killed worker's fold
taken over, and the report equal to a sequential run's."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from meteor_tf.config import ExperimentConfig
from meteor_tf.experiment.claims import TTL_ENV, Claims
from tests.conftest import write_capture_folder

ROOT = Path(__file__).resolve().parents[2]


def test_a_part_is_claimed_by_one_worker_and_released():
    import tempfile

    with tempfile.TemporaryDirectory() as run:
        a, b = Claims(run, ttl=60), Claims(run, ttl=60)
        assert a.try_claim("fold_0") and not b.try_claim("fold_0")
        assert a.mine("fold_0") and not b.mine("fold_0")
        assert a.holder("fold_0")["pid"] == os.getpid()
        b.release("fold_0")  # not b's: nothing happens
        assert a.holder("fold_0") is not None
        a.release("fold_0")
        assert a.holder("fold_0") is None and b.try_claim("fold_0")


def test_a_claim_without_heartbeat_expires_and_a_live_one_does_not(tmp_path):
    dead, taker = Claims(tmp_path, ttl=0.4), Claims(tmp_path, ttl=0.4)
    assert dead.try_claim("fold_1")
    assert not taker.try_claim("fold_1")
    time.sleep(0.6)  # no heartbeat: the worker is gone
    assert taker.is_stale("fold_1") and taker.try_claim("fold_1") and taker.mine("fold_1")
    with taker.heartbeat("fold_1"):
        time.sleep(0.8)  # twice the ttl, kept alive by the heartbeat
        assert not dead.try_claim("fold_1")
    assert taker.holder("fold_1") is None  # released at the end of the block


def test_a_bad_claim_ttl_is_refused(monkeypatch):
    monkeypatch.setenv(TTL_ENV, "soon")
    with pytest.raises(ValueError, match=TTL_ENV):
        Claims(".")


def test_fold_workers_settings_are_checked():
    assert ExperimentConfig().fold_workers == 1 and "fold_workers" in ExperimentConfig.NOT_IN_RUN_ID
    with pytest.raises(ValueError, match="--fold_workers must be at least 1"):
        ExperimentConfig(fold_workers=0)
    with pytest.raises(ValueError, match="does not combine with --strategy=mirrored"):
        ExperimentConfig(fold_workers=2, strategy="mirrored")
    assert ExperimentConfig(fold_workers=2).derived_run_id() == ExperimentConfig().derived_run_id()


WORKER = """
import json, sys
from meteor_tf.config import ExperimentConfig
from meteor_tf.experiment.runner import run_experiment
result = run_experiment(ExperimentConfig.from_dict(json.loads(sys.argv[1])))
print("RESULT", json.dumps({"stats": result["stats"], "threshold": result["threshold"]["value"]}))
"""


def _settings(data, out):
    return dict(data=str(data), depth=18, pretrain="none", image_size=32, folds=3, fine_tune_epochs=2,
                sgdr_first_cycle_epochs=2.0, batch_size=8, head_units=(16,), head_dropout=(0.1,), output_dir=str(out),
                val_fraction=0.25, retrain_final=True, seed=3)


def _env(**extra):
    # one thread everywhere: a run's numbers depend on the thread count, and workers share the cores
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def _start(settings, **env):
    return subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(settings)], env=_env(**env), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _result(output: str) -> dict:
    return json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])


def _predictions(run: Path) -> dict:
    return {f"{part.name}/{p.name}/{key}": np.load(p)[key] for part in sorted(run.iterdir()) if part.is_dir()
            for p in sorted(part.glob("predictions_*.npz")) for key in ("val_prob", "test_prob")}


def test_two_workers_on_one_run_directory_one_killed_give_the_sequential_report(tmp_path):
    data = write_capture_folder(tmp_path / "captures", meteors=12, non_meteors=9)
    reference = _start(_settings(data, tmp_path / "sequential"))
    sequential_out = reference.communicate(timeout=600)[0]
    assert reference.returncode == 0, sequential_out[-3000:]

    shared = _settings(data, tmp_path / "shared")
    # worker `doomed` is SIGKILLed at the end of its first epoch, holding the claim of the fold it was training
    doomed = _start(shared, METEOR_TF_KILL_AT="epoch_end@1", **{TTL_ENV: "4"})
    survivor = _start(shared, **{TTL_ENV: "4"})
    doomed_out = doomed.communicate(timeout=600)[0]
    survivor_out = survivor.communicate(timeout=600)[0]
    assert doomed.returncode == -9, doomed_out[-3000:]
    assert survivor.returncode == 0, survivor_out[-3000:]
    assert "taking the part over" in survivor_out  # the dead worker's fold, after its claim expired

    assert _result(survivor_out) == _result(sequential_out)
    run_id = ExperimentConfig(**shared).derived_run_id()
    seq, par = _predictions(tmp_path / "sequential" / run_id), _predictions(tmp_path / "shared" / run_id)
    assert set(seq) == set(par) and len(seq) == 8  # val and test of 3 folds and of the final model (empty test)
    for name in seq:
        np.testing.assert_allclose(par[name], seq[name], atol=1e-6, err_msg=name)
    assert not list((tmp_path / "shared" / run_id / "claims").glob("*.json"))  # every claim released

    # --fold_workers=2 through the CLI: two spawned workers, the same report again
    cli = subprocess.run([sys.executable, "-m", "meteor_tf.main", f"--data={data}", "--depth=18", "--pretrain=none",
                          "--image_size=32", "--folds=3", "--fine_tune_epochs=2", "--sgdr_first_cycle_epochs=2",
                          "--batch_size=8", "--head_units=16", "--head_dropout=0.1", f"--output_dir={tmp_path / 'cli'}",
                          "--val_fraction=0.25", "--retrain_final", "--seed=3", "--fold_workers=2"],
                         env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-3000:]
    output = cli.stderr + cli.stdout
    assert "--fold_workers=2: 2 processes, 1 core(s) each" in output
    for part in ("fold_0", "fold_1", "fold_2", "final"):  # each part trained by one worker, once
        assert output.count(f"{part} fine_tune: {{") == 1, part
    assert {"[worker 0]", "[worker 1]"} <= {line[:10] for line in output.splitlines()}
    metrics = json.loads((tmp_path / "cli" / run_id / "metrics.json").read_text())
    assert {"stats": metrics["stats"], "threshold": metrics["threshold"]["value"]} == _result(sequential_out)
