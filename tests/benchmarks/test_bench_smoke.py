"""Smoke tests of the benchmark scripts in benchmarks/: their smallest modes write the JSON fields the README and the
issue note read, and their helpers compute what they say. The in-process harness run is the fast one; running each
script end to end in child processes takes minutes on 2 cores and is marked slow."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench  # noqa: E402
import cached_features  # noqa: E402
import common  # noqa: E402
import precision_compile  # noqa: E402
import scaling  # noqa: E402

from tests.conftest import write_capture_folder  # noqa: E402

TINY_JPEGS = ["--jpeg_size", "160", "120", "--jpeg_count", "2"]


# --------------------------------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("flags, per_cycle", [("fma avx avx2 avx512f", 64), ("fma avx avx2", 32), ("avx", 16),
                                              ("sse2", 8)])
def test_cpu_peak_is_cores_times_clock_times_flops_per_cycle(monkeypatch, flags, per_cycle):
    monkeypatch.setattr(common, "_cpuinfo", lambda: {"flags": flags, "cpu MHz": "2500.0"})
    peak = common.cpu_peak()
    cores = len(os.sched_getaffinity(0))
    assert peak["fp32_flops_per_cycle"] == per_cycle
    assert peak["peak_gflops"] == pytest.approx(cores * 2.5 * per_cycle, abs=0.1)
    assert common.cpu_peak(clock_ghz=1.0)["peak_gflops"] == pytest.approx(cores * per_cycle, abs=0.1)


def test_time_steps_reports_the_median_of_the_timed_steps():
    calls = []
    timing = common.time_steps(lambda: calls.append(1), warmup=2, steps=3)
    assert len(calls) == 5 and len(timing["warmup_s"]) == 2 and len(timing["step_s"]) == 3
    assert timing["median_s"] == pytest.approx(sorted(timing["step_s"])[1], abs=1e-4)


def test_scripts_refuse_bad_arguments_and_existing_outputs(tmp_path):
    with pytest.raises(SystemExit):
        bench.parse(["--sizes", "16"])
    with pytest.raises(SystemExit):
        cached_features.parse(["--folds", "1"])
    existing = tmp_path / "out.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit, match="--overwrite"):
        bench.main(["--depths", "18", "--sizes", "32", "--out", str(existing)])
    assert existing.read_text() == "{}"


def test_replicated_folder_has_n_distinct_files_sharing_the_bytes(tmp_path):
    base = write_capture_folder(tmp_path / "base", meteors=3, non_meteors=2)
    folder = scaling.replicated(base, 12, tmp_path / "work")
    files = scaling.capture_files(folder)
    base_files = scaling.capture_files(base)
    meteors = sum(base_files[i % len(base_files)].parent.name == "meteor" for i in range(12))
    assert len(files) == 12 and len({f.name for f in files if f.parent.name == "meteor"}) == meteors
    assert {f.read_bytes() for f in files} == {f.read_bytes() for f in scaling.capture_files(base)}
    assert scaling.replicated(base, 5, tmp_path / "work") == base
    with pytest.raises(SystemExit):
        scaling.replicated(base, 4, tmp_path / "work")


def test_scaling_projection_and_plot(tmp_path):
    args = scaling.parse(["--project_folds", "10", "--project_epochs", "7"])
    point = {"load": 5.0, "features": 10.0, "head_epoch": 1.0, "fine_tune_epoch": 20.0}
    fit_share = 0.9 * 0.85
    assert scaling.projection(point, args) == pytest.approx(15.0 + 10 * fit_share * 7 * 21.0)
    points = [{"n": n, "size": s, "load": n / 300, "features": n * s / 1e4, "head_epoch": n / 1e4,
               "fine_tune_epoch": n * s / 1e3, "wall_s": 0.0} for n, s in ((100, 32), (200, 32), (100, 64))]
    record = {"settings": vars(scaling.parse(["--size", "32"])), "points": points,
              "device": {"cpu": "test", "device": "CPU only", "date": "2026-01-01T00:00"},
              "loadavg_start": [1.0], "loadavg_end": [1.0]}
    scaling.plot(record, tmp_path / "scaling.png")
    assert (tmp_path / "scaling.png").stat().st_size > 1000


def test_cached_features_comparison_lines_folds_up():
    def fold(acc):
        return {"head": {m: acc for m in cached_features.METRICS}}

    cached = {"fold_0": fold(0.5), "fold_1": fold(0.7), "fold_10": fold(0.6)}
    uncached = {"fold_0": fold(0.5), "fold_1": fold(0.6), "fold_10": fold(0.6)}
    out = cached_features.compare_folds(cached, uncached)
    assert list(out)[:3] == ["fold_0", "fold_1", "fold_10"]
    assert out["max_abs_difference"]["accuracy"] == pytest.approx(0.1)
    timings = {"load data": 9.0, "cached features": 2.0, "fold 0": 1.5, "fold 1": 0.5, "total": 13.0}
    assert cached_features.cv_seconds(timings) == pytest.approx(4.0)


def test_precision_ratios_to_float32_per_wall_and_cpu_second():
    def row(precision, jit, train, infer, cores):
        return {"precision": precision, "jit_compile": jit, "train_img_s": train, "infer_img_s": infer,
                "train": {"img_s": train, "cores_used": cores}, "infer": {"img_s": infer, "cores_used": cores}}

    base, xla = row("none", False, 10.0, 40.0, 1.0), row("none", True, 12.0, 44.0, 2.0)
    precision_compile.compare_to_fp32([base, xla], base)
    assert xla["train_vs_fp32"] == pytest.approx(1.2) and xla["train_vs_fp32_cpu"] == pytest.approx(0.6)
    assert xla["infer_vs_fp32"] == pytest.approx(1.1) and base["infer_vs_fp32_cpu"] == pytest.approx(1.0)


# --------------------------------------------------------------------------------------------------- harness
def test_bench_smallest_mode_writes_every_field(tmp_path):
    from meteor_tf.models.classifier import flops_per_image

    out = tmp_path / "bench.json"
    code = bench.main(["--depths", "18", "--sizes", "32", "--batch", "2", "--steps", "1", "--pipeline_steps", "1",
                       "--inprocess", "--out", str(out)] + TINY_JPEGS)
    record = json.loads(out.read_text())
    assert code == 0, record
    row = record["rows"][0]
    assert row["flops_per_image"] == flops_per_image(18, "torchvision", 32)
    peak = record["peak"]["peak_gflops"]
    for kind, factor in (("train", 3), ("infer", 1)):
        assert row[f"{kind}_img_s"] > 0
        assert row[f"{kind}_peak_fraction"] == pytest.approx(
            row[kind]["img_s"] * factor * row["flops_per_image"] / 1e9 / peak, rel=1e-3)
        assert 0 < row[f"{kind}_cores_used"] and row[f"{kind}_img_per_cpu_s"] == pytest.approx(
            row[kind]["img_s"] / row[kind]["cores_used"], rel=1e-2)
    assert row["peak_rss_mb"] > 100 and record["pipeline"][0]["img_s"] > 0
    assert record["device"]["tensorflow"] and record["device"]["loadavg"]
    assert "FLOPs = 2 x multiply-adds" in record["markdown"] and "| 18 | 32 |" in record["markdown"]
    if record["savedmodel_available"]:
        assert row["savedmodel_img_s"] > 0
    else:
        assert "n/a (export missing)" in record["markdown"]
    again = bench.rerender(out)  # re-deriving a finished run's figures changes nothing
    assert {k: v for k, v in again["rows"][0].items() if k != "markdown"} == row


# --------------------------------------------------------------------------------------------------- slow
def _run(script, *args, cwd=REPO, timeout=900):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_bench_child_processes_report_per_configuration_memory(tmp_path):
    out = tmp_path / "bench.json"
    _run("bench.py", "--depths", "18", "--sizes", "32", "--batch", "2", "--steps", "1", "--pipeline_steps", "1",
         "--out", str(out), *TINY_JPEGS)
    row = json.loads(out.read_text())["rows"][0]
    assert "inprocess" not in row and row["infer"]["peak_rss_mb"] <= row["train"]["peak_rss_mb"]


@pytest.mark.slow
def test_precision_compile_smallest_mode(tmp_path):
    data = write_capture_folder(tmp_path / "caps", meteors=20, non_meteors=16)
    out = tmp_path / "prec.json"
    _run("precision_compile.py", "--size", "32", "--batch", "2", "--steps", "1", "--precisions", "none",
         "bfloat16", "--jit", "off", "--pipeline_steps", "1", "--memory_images", "8", "--accuracy_data", str(data),
         "--accuracy_epochs", "1", "--out", str(out), *TINY_JPEGS)
    record = json.loads(out.read_text())
    assert [r["precision"] for r in record["models"]] == ["none", "bfloat16"]
    assert all(r["train_img_s"] > 0 and r["infer_img_s"] > 0 for r in record["models"])
    assert record["models"][1]["policy"] == "mixed_bfloat16"
    assert len(record["pipeline"]["file_pipeline"]) == 6 and len(record["pipeline"]["in_memory"]) == 2
    assert record["fastest"]["train"]["mixed_precision"] in ("none", "bfloat16")
    assert all("stats" in run for run in record["accuracy"]["runs"])


@pytest.mark.slow
def test_cached_features_smallest_mode(tmp_path):
    data = write_capture_folder(tmp_path / "caps", meteors=20, non_meteors=16)
    out = tmp_path / "cached.json"
    _run("cached_features.py", "--size", "32", "--folds", "2", "--head_epochs", "1", "--batch", "8", "--data",
         str(data), "--out", str(out))
    record = json.loads(out.read_text())
    assert record["same_folds"] and record["cached_run_used_features"]
    assert record["speedup_cv"] > 0 and set(record["per_fold"]) == {"fold_0", "fold_1", "max_abs_difference"}


@pytest.mark.slow
def test_scaling_smallest_mode(tmp_path):
    data = write_capture_folder(tmp_path / "caps", meteors=20, non_meteors=16)
    out = tmp_path / "scaling.json"
    _run("scaling.py", "--data", str(data), "--counts", "36", "72", "--size", "32", "--sizes", "32", "--batch",
         "8", "--train_steps", "1", "--work_dir", str(tmp_path / "work"), "--out", str(out))
    record = json.loads(out.read_text())
    assert [p["n"] for p in record["points"]] == [36, 72]
    assert all(p["wall_s"] == pytest.approx(sum(p[k] for k in scaling.PARTS)) for p in record["points"])
    assert out.with_suffix(".png").stat().st_size > 1000
    assert np.isfinite([p["projected_cv_s"] for p in record["points"]]).all()
