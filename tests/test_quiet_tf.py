"""The command-line tools import TensorFlow without its CPU start-up noise, and keep every other line."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNIPPET = ("from meteor_tf.quiet_tf import import_tensorflow\n"
           "tf = import_tensorflow()\n"
           "import sys; print('after import', file=sys.stderr)\n")


def _stderr(tmp_path, fake: bool, **env) -> str:
    path = [str(ROOT)]
    if fake:  # a stand-in `tensorflow` that writes TF's start-up lines and one real error straight to fd 2
        pkg = tmp_path / "tensorflow"
        pkg.mkdir()
        (pkg / "__init__.py").write_text(
            "import os, types\n"
            "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n')\n"
            "os.write(2, b'I0000 port.cc:153] oneDNN custom operations are on.\\n')\n"
            "os.write(2, b'E0000 something real went wrong: libfoo.so missing\\n')\n"
            "def _gpus(kind):\n"
            "    os.write(2, b'E0000 cuda_platform.cc:52] failed call to cuInit: UNKNOWN ERROR (303)\\n')\n"
            "    return []\n"
            "config = types.SimpleNamespace(list_physical_devices=_gpus)\n")
        path.insert(0, str(tmp_path))
    done = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(path), **env})
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_start_up_noise_is_dropped_and_other_lines_kept(tmp_path):
    err = _stderr(tmp_path, fake=True)
    assert "InitializeLog" not in err and "oneDNN" not in err and "cuInit" not in err
    assert "something real went wrong" in err and "after import" in err


def test_the_environment_variable_shows_everything(tmp_path):
    err = _stderr(tmp_path, fake=True, METEOR_TF_SHOW_TF_LOGS="1")
    assert "oneDNN" in err and "InitializeLog" in err and "something real went wrong" in err


def test_real_tensorflow_starts_silently(tmp_path):
    err = _stderr(tmp_path, fake=False)
    assert err.strip() == "after import", err
