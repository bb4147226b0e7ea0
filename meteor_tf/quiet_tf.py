"""Import TensorFlow without its start-up noise on a CPU machine, for the command-line tools.

TF 2.21 logs through absl before absl is initialised, so TF_CPP_MIN_LOG_LEVEL does not silence it: every command
printed "oneDNN custom operations are on", "Could not find cuda drivers", "failed call to cuInit" (an E-level line on
every machine without a GPU) and the CPU-feature note. `import_tensorflow()` sends file descriptor 2 to a temporary
file while TensorFlow loads and looks for GPUs, then restores it and prints every line that is not one of those known
start-up messages, so a real error still shows. METEOR_TF_SHOW_TF_LOGS=1 shows them all.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

STARTUP_NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|Could not find cuda drivers|"
    r"cpu_feature_guard|To enable the following instructions|failed call to cuInit|"
    r"Unable to register cu\w+ factory|computation placer already registered")


def import_tensorflow():
    """Import TensorFlow (and initialise its devices) with the start-up messages above filtered out; returns tf.
    A no-op filter when TensorFlow is already imported or METEOR_TF_SHOW_TF_LOGS is set."""
    if "tensorflow" in sys.modules or os.environ.get("METEOR_TF_SHOW_TF_LOGS"):
        import tensorflow as tf

        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")  # the CUDA probe (cuInit) logs here, not at import
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        for line in captured.read().decode("utf-8", errors="replace").splitlines():
            if line.strip() and not STARTUP_NOISE.search(line):
                print(line, file=sys.stderr)
    return tf
