"""Shared helpers of the benchmark scripts: the machine and its peak, load, child processes, test JPEGs, tables.

Each script runs every configuration in a child process of its own (`run_child`): a global Keras dtype policy or
XLA setting cannot leak into the next configuration, and the child's RSS high-water mark is its own peak memory.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from meteor_tf import io as mio

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

CONVENTIONS = (
    "Conventions: FLOPs = 2 x multiply-adds of the Conv2D and Dense layers (BatchNorm, ReLU, pooling, additions left "
    "out); one training step = 3 x the forward FLOPs (forward + two backward products); achieved fraction = "
    "measured FLOP/s / peak; peak = cores x nominal clock x fp32 FLOPs per cycle of the vector units; 'cores used' = "
    "CPU seconds of the process / wall seconds over the timed steps (below the core count when other processes "
    "share the CPU), and '% of used' = FLOP/s / (cores used x per-core peak). img/s are "
    "steady state: the median step time after the warm-up steps (the first calls trace and compile), batch as "
    "given. Peak memory: the child process's RSS high-water mark (getrusage ru_maxrss) after each measurement.")


# --------------------------------------------------------------------------------------------------- machine
def _cpuinfo() -> Dict[str, str]:
    info: Dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if ":" in line:
                key, value = (part.strip() for part in line.split(":", 1))
                info.setdefault(key, value)  # the first core's values
    except OSError:
        pass
    return info


def cpu_peak(clock_ghz: Optional[float] = None) -> dict:
    """fp32 peak of this CPU: cores x clock x FLOPs/cycle, with how each factor was found.

    FLOPs/cycle assume two FMA pipes (true of Zen 2-4 and of Intel server cores with AVX2, and of AVX-512 Xeons with
    two 512-bit FMA units; a one-FMA-unit AVX-512 part has half): AVX-512 64, AVX2+FMA 32, AVX 16, SSE 8.
    """
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if "avx512f" in flags:
        units, per_cycle = "AVX-512 (2 x 512-bit FMA: 2 x 16 lanes x 2)", 64
    elif "avx2" in flags and "fma" in flags:
        units, per_cycle = "AVX2 + FMA (2 x 256-bit FMA: 2 x 8 lanes x 2)", 32
    elif "avx" in flags:
        units, per_cycle = "AVX (256-bit add + mul, no FMA)", 16
    else:
        units, per_cycle = "SSE (128-bit)", 8
    source = "--clock_ghz"
    if clock_ghz is None:
        # On a VM "cpu MHz" is the TSC clock the hypervisor reports, which is the nominal (base) clock.
        clock_ghz, source = float(info.get("cpu MHz", "0") or 0) / 1000.0, "/proc/cpuinfo 'cpu MHz'"
    peak = cores * clock_ghz * per_cycle
    extra = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx_vnni", "avx512_bf16"))
    return {"cores": cores, "clock_ghz": round(clock_ghz, 3), "clock_source": source, "vector_units": units,
            "fp32_flops_per_cycle": per_cycle, "peak_gflops": round(peak, 1), "bf16_hardware": any(
                f in flags for f in ("avx512_bf16", "amx_bf16")), "avx512_amx_flags": extra,
            "formula": f"{cores} cores x {clock_ghz:.3f} GHz x {per_cycle} FLOPs/cycle = {peak:.1f} GFLOP/s"}


def device_record() -> dict:
    """What ran the benchmark: CPU, GPUs, package versions, time, load."""
    import keras
    import tensorflow as tf

    info = _cpuinfo()
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"cpu": info.get("model name", platform.processor()), "cpu_family": info.get("cpu family"),
            "cpu_model": info.get("model"), "platform": platform.platform(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "keras": keras.__version__, "keras_backend": keras.backend.backend(),
            "gpus": gpus, "device": "GPU: " + ", ".join(gpus) if gpus else "CPU only",
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 builds)"),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "loadavg": loadavg(), "peak": cpu_peak(), **auto_precision()}


def auto_precision() -> dict:
    """What --mixed_precision=auto picks here and why: {"auto_precision": "none"/"bfloat16"/..., "cpu_bf16": the CPU's
    native bf16 instructions (amx_bf16 / avx512_bf16) or None}."""
    from meteor_tf.training import distribute

    return {"auto_precision": distribute.auto_mixed_precision(), "cpu_bf16": distribute.cpu_bf16_path()}


def loadavg() -> List[float]:
    return [round(v, 2) for v in os.getloadavg()]


def peak_rss_mb() -> float:
    """RSS high-water mark of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


# --------------------------------------------------------------------------------------------------- timing
def time_steps(step: Callable[[], object], warmup: int, steps: int) -> dict:
    """Run `step` `warmup` times untimed (tracing, compilation, allocator warm-up), then `steps` times timed."""
    warm = []
    for _ in range(warmup):
        t = time.perf_counter()
        step()
        warm.append(time.perf_counter() - t)
    times = []
    cpu = time.process_time()  # CPU seconds of all this process's threads
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    cpu = time.process_time() - cpu
    # cores_used < the machine's cores means other processes took the rest (or the work did not parallelise)
    return {"warmup_s": [round(v, 4) for v in warm], "step_s": [round(v, 4) for v in times],
            "median_s": statistics.median(times), "cpu_s": round(cpu, 3),
            "cores_used": round(cpu / sum(times), 3) if sum(times) > 0 else None}


# --------------------------------------------------------------------------------------------------- children
def run_child(script: Path, spec: dict, timeout: Optional[float] = None,
              inprocess: Optional[Callable[[dict], dict]] = None) -> dict:
    """Run `script --child SPEC_JSON` in a fresh interpreter; return the JSON it writes (or the error).

    `inprocess`: call this child function here instead (quick smoke runs: no second TensorFlow start-up; the peak
    memory is then this process's, and global settings are not isolated)."""
    if inprocess is not None:
        started = time.time()
        try:
            result = json.loads(json.dumps(inprocess(spec), default=mio.jsonable))
        except Exception as e:  # noqa: BLE001 — reported in the table like a failed child
            return {"error": f"{type(e).__name__}: {e}", "spec": spec}
        result.update(child_wall_s=round(time.time() - started, 1), inprocess=True, loadavg_end=loadavg())
        return result
    with tempfile.TemporaryDirectory(prefix="meteor_bench_") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(script), "--child", json.dumps(spec), "--child_out", str(out)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
        started = time.time()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=str(REPO))
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s", "spec": spec}
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
            return {"error": f"child exited with status {proc.returncode}", "log_tail": tail, "spec": spec}
        result = json.loads(out.read_text())
        result["child_wall_s"] = round(time.time() - started, 1)
        return result


def child_main(argv: Sequence[str], work: Callable[[dict], dict]) -> bool:
    """If argv asks for a child run, do it, write its JSON and return True."""
    if "--child" not in argv:
        return False
    spec = json.loads(argv[argv.index("--child") + 1])
    out = Path(argv[argv.index("--child_out") + 1])
    result = work(spec)
    result.setdefault("loadavg_end", loadavg())
    out.write_text(json.dumps(result, default=mio.jsonable))
    return True


def write_json(path, data) -> Path:
    """Write a benchmark record atomically (the package's one JSON writer)."""
    return mio.write_json(path, data)


def refuse_overwrite(path, overwrite: bool) -> None:
    if path is not None and Path(path).exists() and not overwrite:
        raise SystemExit(f"{path} exists; pass --overwrite to replace it or choose another --out")


# --------------------------------------------------------------------------------------------------- inputs
def night_sky_jpegs(count: int, width: int = 640, height: int = 480, seed: int = 0) -> List[bytes]:
    """`count` distinct night-sky CCTV frames as gray JPEG bytes of exactly width x height (the renderer's 640x480
    CCTV frames; its occasional all-sky frames are resized to that size)."""
    from PIL import Image

    from meteor_tf.data.night_sky import render

    small = width <= 160  # the renderer's test profile (160x120) keeps tiny runs fast
    subs = render.SUB_LABELS
    out = []
    for i in range(count):
        img = render.render_example(subs[i % len(subs)], "frame", seed=seed + i, small=small)
        if img.shape != (height, width):
            img = np.asarray(Image.fromarray(img).resize((width, height), Image.BILINEAR))
        out.append(render.encode_jpeg(img))
    return out


def write_jpegs(jpegs: Sequence[bytes], folder: Path) -> List[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(jpegs):
        path = folder / f"frame_{i:04d}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------------------------------- tables
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"
    return str(value)


def configure_threads() -> None:
    """Quiet TensorFlow's C++ log; GPUs stay visible (the device record says what ran)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
