"""Two MultiWorkerMirroredStrategy workers on 127.0.0.1 train with fit_custom_loop to identical weights."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
TIMEOUT_S = 240


def _free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(tf_config):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(tf_config))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_two_workers_train_to_identical_weights(tmp_path):
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    procs = []
    try:
        for index in range(2):
            tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
            log = open(tmp_path / f"worker{index}.log", "w")
            cmd = [sys.executable, str(HERE / "multi_worker_script.py"), str(out_dir), "2"]
            proc = subprocess.Popen(cmd, env=_env(tf_config), stdout=log, stderr=subprocess.STDOUT)
            procs.append((proc, log))
        deadline = time.monotonic() + TIMEOUT_S
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for proc, log in procs:  # never leave a worker behind (one hanging on its peer, or a timeout)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], "\n----\n".join(logs)

    chief = json.loads((out_dir / "result.json").read_text())
    other_path = out_dir / "workertemp_worker_1" / "result.json"
    other = json.loads(other_path.read_text())
    assert chief["chief"] and not other["chief"]
    assert chief["replicas"] == 2 and chief["global_batch"] == 16 and chief["steps_per_epoch"] == 8
    assert len(chief["history"]["loss"]) == 2 and all(np.isfinite(chief["history"]["loss"]))
    assert chief["history"]["loss"][-1] < chief["history"]["loss"][0]
    # the reduced metrics are global, so both workers report the same numbers
    np.testing.assert_allclose(chief["history"]["loss"], other["history"]["loss"], rtol=1e-6)

    w_chief = np.load(out_dir / "weights.npz")
    w_other = np.load(other["weights"])
    assert len(w_chief.files) == len(w_other.files) == 4
    for k in w_chief.files:
        np.testing.assert_allclose(w_chief[k], w_other[k], rtol=0, atol=1e-7)
