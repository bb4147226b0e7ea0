"""Keras Tuner's distributed mode on 127.0.0.1: a chief (oracle) and one worker running `python -m meteor_tf.tune`
finish a tiny search and report the same best trial."""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import write_capture_folder

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(port: int, tuner_id: str) -> dict:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", KERASTUNER_TUNER_ID=tuner_id,
               KERASTUNER_ORACLE_IP="127.0.0.1", KERASTUNER_ORACLE_PORT=str(port), no_proxy="127.0.0.1,localhost",
               NO_PROXY="127.0.0.1,localhost")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "grpc_proxy"):
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.timeout(TIMEOUT_S + 60)
def test_chief_and_worker_finish_with_the_same_best_trial(tmp_path):
    data = write_capture_folder(tmp_path / "captures", meteors=10, non_meteors=10, size=40)
    tuner_dir = tmp_path / "tuning"
    cmd = [sys.executable, "-m", "meteor_tf.tune", f"--data={data}", "--depth=18", "--pretrain=none",
           "--image_size=32", "--fine_tune_epochs=1", "--batch_size=8", "--head_units=16", "--head_dropout=0.1",
           "--folds=1", "--val_fraction=0.25", "--seed=5", f"--output_dir={tmp_path / 'runs'}", "--tuner=random",
           "--max_trials=2", f"--tuner_dir={tuner_dir}", "--search_space=augment=none"]
    port = _free_port()
    procs = {}
    try:
        for role in ("chief", "tuner0"):
            out = open(tmp_path / f"{role}.log", "w")
            procs[role] = (subprocess.Popen(cmd, cwd=ROOT, env=_env(port, role), stdout=out,
                                            stderr=subprocess.STDOUT), out)
        deadline = time.monotonic() + TIMEOUT_S
        for role in ("tuner0", "chief"):
            procs[role][0].wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc, out in procs.values():  # never leave a chief waiting for its worker, or the other way round
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            out.close()
    logs = {role: (tmp_path / f"{role}.log").read_text() for role in procs}
    assert [procs[r][0].returncode for r in ("chief", "tuner0")] == [0, 0], \
        "\n----\n".join(text[-3000:] for text in logs.values())
    best = {role: re.findall(r"^best trial: (\S+) (val_f1=\S+)$", text, re.M) for role, text in logs.items()}
    assert len(best["chief"]) == 1 and best["chief"] == best["tuner0"], best
    # the worker trained both trials (the chief trains nothing) and the chief wrote the reports
    for trial in ("0", "1"):
        assert (tuner_dir / f"trial_{trial}" / "score.json").exists()
        assert json.loads((tuner_dir / f"trial_{trial}" / "trial.json").read_text())["status"] == "COMPLETED"
    assert "trial 0:" in logs["tuner0"] and "trial 0:" not in logs["chief"]
    assert json.loads((tuner_dir / "best.json").read_text())["trial_id"] == best["chief"][0][0]
    assert (tuner_dir / "best.cfg").exists() and (tuner_dir / "results.csv").exists()
