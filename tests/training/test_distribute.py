"""Strategies by name, batch scaling, mixed precision, and 2-replica MirroredStrategy training on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from meteor_tf.training import distribute

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_make_strategy_by_name_on_cpu():
    assert not tf.config.list_physical_devices("GPU")  # conftest hides GPUs
    auto = distribute.make_strategy("auto")
    assert auto is tf.distribute.get_strategy() and auto.num_replicas_in_sync == 1
    cpu = distribute.make_strategy("cpu")
    assert isinstance(cpu, tf.distribute.OneDeviceStrategy)
    mirrored = distribute.make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy) and mirrored.num_replicas_in_sync == 1
    assert distribute.scaled_batch_size(32, mirrored) == 32
    assert distribute.is_chief(cpu)
    with pytest.raises(ValueError, match="auto, cpu, mirrored"):
        distribute.make_strategy("gpu")


def test_tpu_without_tpu_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no TPU found"):
        distribute.make_strategy("tpu")


def test_set_mixed_precision():
    try:
        assert distribute.set_mixed_precision("bfloat16") == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert distribute.set_mixed_precision("float16") == "mixed_float16"
        with pytest.raises(ValueError):
            distribute.set_mixed_precision("float8")
    finally:
        assert distribute.set_mixed_precision("none") == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_fit_custom_loop_default_strategy_with_mixed_float16_and_regularizer():
    """Single device: the loop trains, applies loss scaling under mixed_float16, counts regularisation
    losses."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int32")

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)),
                                 keras.layers.Dense(8, activation="relu", kernel_regularizer="l2"),
                                 keras.layers.Dense(2, activation="softmax", dtype="float32")])

    def dataset_fn(ctx):
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(ctx.get_per_replica_batch_size(16))

    distribute.set_mixed_precision("float16")
    try:
        res = distribute.fit_custom_loop(build, dataset_fn, epochs=3, steps_per_epoch=4, lr_fn=lambda s: 0.05)
    finally:
        distribute.set_mixed_precision("none")
    assert isinstance(res.optimizer, keras.optimizers.LossScaleOptimizer)
    h = res.history
    assert len(h["loss"]) == 3 and h["loss"][-1] < h["loss"][0] and h["lr"] == [0.05] * 3


def test_mirrored_two_logical_cpus_fit_and_custom_loop(tmp_path):
    """In a fresh process (logical devices must be set before TF initialises): 2 replicas, global batch 2 ×
    8."""
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([sys.executable, str(HERE / "mirrored_cpu_script.py")], env=env,
                          capture_output=True, text=True, timeout=240)  # run() kills the child on timeout
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2 and out["global_batch"] == 16
    # Keras fit (train_phase: LR range test + SGDR on mirrored variables)
    assert out["fit_steps_per_epoch"] == 8
    assert out["fit_lr_used"] == pytest.approx(out["single_lr_suggestion"], rel=1e-6)  # not the 0.02 fallback
    assert out["fit_loss"][-1] < out["fit_loss"][0]
    assert len(out["fit_lr"]) == 3
    # custom loop: trains, per-step SGDR LR, validation, and the same weights as one device with the same
    # batch
    h = out["loop_history"]
    assert h["loss"][-1] < h["loss"][0] and len(h["accuracy"]) == 3 and len(h["val_loss"]) == 3
    np.testing.assert_allclose(h["lr"], out["loop_expected_lr"], rtol=1e-12)
    assert out["loop_vs_single_device_max_diff"] < 1e-5
    np.testing.assert_allclose(h["loss"], out["single_loss"], rtol=1e-5)
    assert out["loop_eval_accuracy"] > 0.8


@pytest.mark.parametrize("capabilities, expected", [([], "none"), ([(9, 0)], "bfloat16"), ([(8, 0), (9, 0)], "bfloat16"),
                                                    ([(7, 5)], "float16"), ([(8, 6), (7, 0)], "float16"),
                                                    ([(6, 1)], "none")])
def test_auto_mixed_precision_per_device_type(monkeypatch, capabilities, expected):
    import tensorflow as tf

    gpus = [f"GPU:{i}" for i in range(len(capabilities))]
    details = dict(zip(gpus, capabilities))
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda gpu: {"compute_capability": details[gpu]})
    assert distribute.auto_mixed_precision(gpus) == expected


def test_auto_precision_without_cpu_bf16_is_float32_and_the_default():
    from meteor_tf.config import ExperimentConfig

    assert ExperimentConfig().mixed_precision == "auto" and ExperimentConfig().jit_compile is None
    try:
        assert distribute.set_mixed_precision("auto") == "float32"  # no GPU; conftest fakes a CPU without bf16
    finally:
        distribute.set_mixed_precision("none")


@pytest.mark.parametrize("flags, path, expected", [
    ("fpu sse2 avx2 fma", None, "none"),
    ("avx2 avx512f avx512_vnni", None, "none"),  # AVX-512 without its bf16 instructions: emulated, slower
    ("avx2 avx512f avx512_bf16", "avx512_bf16", "bfloat16"),
    ("avx512f avx512_bf16 amx_tile amx_bf16", "amx_bf16", "bfloat16"),
    ("", None, "none")])
def test_auto_precision_on_a_cpu_follows_its_bf16_instructions(monkeypatch, flags, path, expected):
    monkeypatch.setenv(distribute.CPU_FLAGS_ENV, flags)
    assert distribute.cpu_flags() == frozenset(flags.split())
    assert distribute.cpu_bf16_path() == path
    assert distribute.auto_mixed_precision([]) == expected
    try:
        assert distribute.set_mixed_precision("auto") == {"none": "float32", "bfloat16": "mixed_bfloat16"}[expected]
    finally:
        distribute.set_mixed_precision("none")


def test_cpu_flags_are_read_from_proc_cpuinfo(monkeypatch, tmp_path):
    monkeypatch.delenv(distribute.CPU_FLAGS_ENV, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path,
                                                                          *a, **k))
    assert distribute.cpu_flags() == {"fpu", "avx2", "avx512_bf16"}
    assert distribute.cpu_bf16_path() == "avx512_bf16"


def test_a_gpu_decides_over_the_cpu_flags(monkeypatch):
    import tensorflow as tf

    monkeypatch.setattr(tf.config.experimental, "get_device_details", lambda gpu: {"compute_capability": (6, 1)})
    assert distribute.auto_mixed_precision(["GPU:0"], flags={"amx_bf16"}) == "none"


def test_a_run_resumes_in_the_precision_it_started_with(monkeypatch, caplog):
    from meteor_tf.experiment.runtime import resolve_precision

    monkeypatch.setenv(distribute.CPU_FLAGS_ENV, "avx512_bf16")
    assert resolve_precision("auto") == "bfloat16"  # a new run on a bf16 CPU
    assert resolve_precision("auto", {"mixed_precision": "none"}) == "none"  # started on a CPU without bf16
    monkeypatch.setenv(distribute.CPU_FLAGS_ENV, "avx2")
    assert resolve_precision("auto", {"mixed_precision": "bfloat16"}) == "bfloat16"  # moved to one without
    # started by a meteor_tf whose "auto" was float32 on every CPU and did not record it
    monkeypatch.setenv(distribute.CPU_FLAGS_ENV, "avx512_bf16")
    assert resolve_precision("auto", {"threads": {}}) == "none"
    with caplog.at_level("WARNING", logger="meteor_tf"):
        assert resolve_precision("none", {"mixed_precision": "bfloat16"}) == "none"  # an explicit flag wins, loudly
    assert "started in bfloat16" in caplog.text


def test_unset_jit_compile_is_keras_auto_which_is_off_on_cpu():
    import keras

    from meteor_tf.training.phases import compile_for_phase

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    compile_for_phase(model, 1e-3, jit_compile=None)
    assert model.jit_compile is False
    compile_for_phase(model, 1e-3, jit_compile=True)
    assert model.jit_compile is True
