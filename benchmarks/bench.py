"""Throughput harness: our ResNet classifiers against keras.applications, per depth and image size.

    python benchmarks/bench.py [--depths 18 34 50 101] [--sizes 224 112] [--batch 32] [--steps 2]
                               [--out benchmarks/results/bench.json]

Per depth and size (each model in a child process of its own, so its peak memory is its own and nothing leaks
between configurations):
  - training img/s: `train_on_batch` of the whole classifier (every layer trainable, Adam, sparse cross-entropy, the
    library's `compile_for_phase`), median step after the warm-up;
  - in-memory inference img/s: `predict_on_batch` on (batch, S, S, 1) float32;
  - SavedModel img/s on encoded 640x480 JPEG bytes (`meteor_tf.serving.export`: decode + preprocess + model in the
    exported graph), when that module is importable;
  - FLOPs per image (`count_flops`, the model as built) and the achieved fraction of the machine's fp32 peak;
  - peak memory (RSS high-water mark after inference, SavedModel, training, in that order).
Per size, with no model: the input pipeline, JPEG files -> decode -> grayscale/pad/resize (`meteor_tf.data.
preprocess`) -> batch -> augmentation (`meteor_tf.data.augment`) -> prefetch, img/s.
For depth 50/101 the same figures for `keras.applications.ResNet50/101` (weights=None) with the same input,
preprocess layer and head, and our `layout="keras"` build (the same layout), with the ratio ours/baseline. Depth 18/34
have no keras.applications model, so no baseline.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (benchmarks/ is not a package: scripts run as files)

KERAS_APPS = {50: "ResNet50", 101: "ResNet101"}


# --------------------------------------------------------------------------------------------------- children
def build_model(variant: str, depth: int, size: int):
    """ours: the library default (torchvision layout); ours_keras: layout="keras"; keras_app: keras.applications'
    backbone with our preprocess layer, pooling and head, so only the backbone differs."""
    import keras

    from meteor_tf.models.classifier import Preprocess, build_classifier, build_head

    if variant == "ours":
        return build_classifier(depth, "torchvision", image_size=size, normalization="torch")
    if variant == "ours_keras":
        return build_classifier(depth, "keras", image_size=size, normalization="caffe")
    app = getattr(keras.applications, KERAS_APPS[depth])
    images = keras.Input((size, size, 1), dtype="float32", name="image")
    x = Preprocess("caffe", 3, name="preprocess")(images)
    x = app(include_top=False, weights=None, input_shape=(size, size, 3))(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = build_head(x.shape[-1])(x)
    return keras.Model(images, outputs, name=f"keras_applications_{KERAS_APPS[depth].lower()}")


def export_module():
    """meteor_tf.serving.export when it exists (it is written separately); None otherwise."""
    if importlib.util.find_spec("meteor_tf.serving") is None or \
            importlib.util.find_spec("meteor_tf.serving.export") is None:
        return None
    from meteor_tf.serving import export

    return export


def model_child(spec: dict) -> dict:
    import numpy as np

    from meteor_tf.models.classifier import count_flops
    from meteor_tf.training.phases import compile_for_phase

    size, batch = spec["size"], spec["batch"]
    t = time.time()
    model = build_model(spec["variant"], spec["depth"], size)
    out = {"build_s": round(time.time() - t, 2), "params": int(model.count_params()),
           "flops_per_image": count_flops(model), "loadavg_start": common.loadavg()}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 1)).astype("float32")
    y = rng.integers(0, 2, (batch,)).astype("int32")

    infer = common.time_steps(lambda: model.predict_on_batch(x), spec["warmup"], spec["steps"])
    out["infer"] = {**infer, "img_s": batch / infer["median_s"], "peak_rss_mb": common.peak_rss_mb()}

    if spec.get("savedmodel"):
        out["savedmodel"] = savedmodel_throughput(model, spec)

    compile_for_phase(model, 1e-4)
    train = common.time_steps(lambda: model.train_on_batch(x, y), spec["warmup"], spec["steps"])
    out["train"] = {**train, "img_s": batch / train["median_s"], "peak_rss_mb": common.peak_rss_mb()}
    return out


def savedmodel_throughput(model, spec: dict) -> dict:
    """Export with the library, reload, and time `predict_bytes` on batches of encoded JPEG frames."""
    export = export_module()
    if export is None:
        return {"error": "n/a (export missing)"}
    jpegs = [Path(p).read_bytes() for p in sorted(Path(spec["jpeg_dir"]).glob("*.jpg"))]
    batch = [jpegs[i % len(jpegs)] for i in range(spec["batch"])]
    with tempfile.TemporaryDirectory(prefix="meteor_bench_sm_") as tmp:
        t = time.time()
        version_dir = export.export_savedmodel(model, tmp, "bench", threshold=0.5, explain=False)
        export_s = time.time() - t
        exported = export.ExportedModel(version_dir)
        timing = common.time_steps(lambda: exported.predict_bytes(batch, batch_size=len(batch)), spec["warmup"],
                                     spec["steps"])
    return {**timing, "img_s": spec["batch"] / timing["median_s"], "export_s": round(export_s, 1),
            "jpeg_bytes_mean": int(sum(len(b) for b in batch) / len(batch)), "peak_rss_mb": common.peak_rss_mb()}


def pipeline_child(spec: dict) -> dict:
    """JPEG files -> decode -> preprocess -> batch -> augment -> prefetch, no model."""
    ds = file_pipeline(sorted(str(p) for p in Path(spec["jpeg_dir"]).glob("*.jpg")), spec["size"], spec["batch"],
                       spec["augment"])
    it = iter(ds)
    timing = common.time_steps(lambda: next(it), spec["warmup"], spec["steps"])
    return {**timing, "img_s": spec["batch"] / timing["median_s"], "peak_rss_mb": common.peak_rss_mb(),
            "loadavg_start": common.loadavg()}


def file_pipeline(paths, size: int, batch: int, augment: str, parallel=None, private_threads=None,
                  prefetch=True, cache=False):
    """The training input pipeline on image files, built from the library's own preprocess and augmentation.

    `parallel` = num_parallel_calls of the decode map (None: AUTOTUNE); `private_threads` = a private thread pool
    of that size for this pipeline; `cache` keeps the decoded, resized images in memory after the first pass.
    """
    import tensorflow as tf

    from meteor_tf.data.augment import build_augmentation
    from meteor_tf.data.preprocess import preprocess_bytes

    ds = tf.data.Dataset.from_tensor_slices(paths)
    ds = ds.map(lambda p: preprocess_bytes(tf.io.read_file(p), size),
                num_parallel_calls=tf.data.AUTOTUNE if parallel is None else parallel)
    if cache:
        ds = ds.cache()
    ds = ds.repeat().batch(batch)
    layers = build_augmentation(augment, seed=0)
    if layers is not None:
        # one map call per batch, as meteor_tf.data.pipeline.make_dataset does (the layers' seed is stateful)
        ds = ds.map(lambda x: layers(x, training=True))
    options = tf.data.Options()
    if private_threads:
        options.threading.private_threadpool_size = private_threads
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE) if prefetch else ds


def paired_child(spec: dict) -> dict:
    """ours (keras layout) and keras.applications in one process, timed step by step in turn (A, B, A, B, ...), so
    both see the same background load; the ratio is the median of the per-pair ratios."""
    import statistics

    import numpy as np

    from meteor_tf.training.phases import compile_for_phase

    size, batch = spec["size"], spec["batch"]
    models = {v: build_model(v, spec["depth"], size) for v in ("ours_keras", "keras_app")}
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 1)).astype("float32")
    y = rng.integers(0, 2, (batch,)).astype("int32")
    out = {"loadavg_start": common.loadavg()}
    for kind in ("infer", "train"):
        if kind == "train":
            for m in models.values():
                compile_for_phase(m, 1e-4)
        call = {v: (lambda m=m: m.predict_on_batch(x)) if kind == "infer" else (lambda m=m: m.train_on_batch(x, y))
                for v, m in models.items()}
        for fn in call.values():
            for _ in range(max(1, spec["warmup"])):
                fn()
        steps = {v: [] for v in models}
        for _ in range(spec["steps"]):
            for v, fn in call.items():
                steps[v].append(common.time_steps(fn, 0, 1)["median_s"])
        ratios = [b / a for a, b in zip(steps["ours_keras"], steps["keras_app"])]  # img/s ours / img/s baseline
        out[kind] = {"step_s": steps, "img_s": {v: batch / statistics.median(t) for v, t in steps.items()},
                     "pair_ratios": [round(r, 3) for r in ratios], "ours_over_baseline": statistics.median(ratios)}
    out["peak_rss_mb"] = common.peak_rss_mb()
    return out


def child(spec: dict) -> dict:
    common.configure_threads()
    if spec["kind"] == "pair":
        return paired_child(spec)
    return pipeline_child(spec) if spec["kind"] == "pipeline" else model_child(spec)


# --------------------------------------------------------------------------------------------------- parent
def variants_for(depth: int, baseline: bool):
    if baseline and depth in KERAS_APPS:
        return ["ours", "ours_keras", "keras_app"]
    return ["ours"]


MODEL_NAMES = {"ours": "ours (torchvision layout)", "ours_keras": "ours (keras layout)",
               "keras_app": "keras.applications"}


def run(args) -> dict:
    peak = common.cpu_peak(args.clock_ghz)
    started = time.time()
    record = {"command": " ".join([Path(sys.executable).name, "benchmarks/bench.py"] + sys.argv[1:]),
              "device": common.device_record(), "peak": peak, "conventions": common.CONVENTIONS,
              "settings": vars(args), "loadavg_start": common.loadavg(), "rows": [], "pipeline": [], "paired": []}
    export_available = export_module() is not None
    baseline_sizes = args.sizes[:1] if args.baseline_sizes is None else args.baseline_sizes
    record["savedmodel_available"] = export_available
    with tempfile.TemporaryDirectory(prefix="meteor_bench_jpeg_") as tmp:
        jpeg_dir = Path(tmp)
        common.write_jpegs(common.night_sky_jpegs(args.jpeg_count, *args.jpeg_size), jpeg_dir)
        for size in args.sizes:
            spec = {"kind": "pipeline", "size": size, "batch": args.batch, "augment": args.augment,
                    "jpeg_dir": str(jpeg_dir), "warmup": 2, "steps": args.pipeline_steps}
            if not args.paired_only:
                result = common.run_child(Path(__file__), spec, timeout=args.timeout,
                                          inprocess=child if args.inprocess else None)
                record["pipeline"].append({"size": size, **result})
                _progress(f"pipeline {size} px: {result.get('img_s', result.get('error'))}")
            for depth in args.depths:
                variants = [] if args.paired_only else variants_for(depth, args.baseline and size in baseline_sizes)
                for variant in variants:
                    spec = {"kind": "model", "variant": variant, "depth": depth, "size": size, "batch": args.batch,
                            "warmup": args.warmup, "steps": args.steps, "jpeg_dir": str(jpeg_dir),
                            "savedmodel": export_available and variant == "ours" and not args.no_savedmodel}
                    result = common.run_child(Path(__file__), spec, timeout=args.timeout,
                                      inprocess=child if args.inprocess else None)
                    row = {"depth": depth, "size": size, "variant": variant, "batch": args.batch, **result}
                    _derive(row, peak["peak_gflops"], peak["cores"])
                    record["rows"].append(row)
                    if args.out:
                        common.write_json(Path(args.out).with_suffix(".partial.json"), record)  # survives a kill
                    _progress(f"{MODEL_NAMES[variant]} ResNet-{depth} {size} px: train "
                              f"{row.get('train_img_s')} img/s, infer {row.get('infer_img_s')} img/s"
                              + (f" ({result['error']})" if "error" in result else ""))
                _ratios(record["rows"], depth, size)
                if args.paired_steps and depth in KERAS_APPS and size in baseline_sizes and args.baseline:
                    spec = {"kind": "pair", "depth": depth, "size": size, "batch": args.batch, "warmup": args.warmup,
                            "steps": args.paired_steps}
                    result = common.run_child(Path(__file__), spec, timeout=args.timeout,
                                              inprocess=child if args.inprocess else None)
                    record["paired"].append({"depth": depth, "size": size, **result})
                    _progress(f"paired ResNet-{depth} {size} px: ours/keras.app train "
                              f"{result.get('train', {}).get('ours_over_baseline')}, infer "
                              f"{result.get('infer', {}).get('ours_over_baseline')} {result.get('error', '')}")
    record["loadavg_end"] = common.loadavg()
    record["wall_s"] = round(time.time() - started, 1)
    record["markdown"] = markdown(record)
    return record


def _progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _derive(row: dict, peak_gflops: float, cores: int) -> None:
    """img/s, achieved GFLOP/s and fraction of peak for training (3 x forward) and inference (1 x forward)."""
    flops = row.get("flops_per_image")
    for kind, factor in (("train", 3), ("infer", 1)):
        part = row.get(kind)
        if not part:
            continue
        row[f"{kind}_img_s"] = round(part["img_s"], 2)
        gflops = part["img_s"] * factor * flops / 1e9
        row[f"{kind}_gflops"] = round(gflops, 2)
        row[f"{kind}_peak_fraction"] = round(gflops / peak_gflops, 6) if peak_gflops else None
        used = part.get("cores_used")
        row[f"{kind}_cores_used"] = used
        if used and peak_gflops:
            row[f"{kind}_used_fraction"] = round(gflops / (used * peak_gflops / cores), 6)
            # images per CPU-second: comparable between measurements taken under different background load
            row[f"{kind}_img_per_cpu_s"] = round(part["img_s"] / used, 3)
    sm = row.get("savedmodel")
    if sm and "img_s" in sm:
        row["savedmodel_img_s"] = round(sm["img_s"], 2)
        row["savedmodel_over_infer"] = round(sm["img_s"] / row["infer"]["img_s"], 3)
        if sm.get("cores_used") and row.get("infer_img_per_cpu_s"):
            row["savedmodel_over_infer_cpu"] = round(sm["img_s"] / sm["cores_used"] / row["infer_img_per_cpu_s"], 3)
    if row.get("train"):
        row["peak_rss_mb"] = row["train"]["peak_rss_mb"]


def _ratios(rows, depth: int, size: int) -> None:
    """ours (same layout) / keras.applications, for training and inference."""
    found = {r["variant"]: r for r in rows if r["depth"] == depth and r["size"] == size}
    base, ours = found.get("keras_app"), found.get("ours_keras")
    if not base or not ours:
        return
    for kind in ("train", "infer"):
        if base.get(f"{kind}_img_s") and ours.get(f"{kind}_img_s"):
            ours[f"{kind}_over_baseline"] = round(ours[f"{kind}_img_s"] / base[f"{kind}_img_s"], 3)
        if base.get(f"{kind}_img_per_cpu_s") and ours.get(f"{kind}_img_per_cpu_s"):
            ours[f"{kind}_over_baseline_cpu"] = round(ours[f"{kind}_img_per_cpu_s"] / base[f"{kind}_img_per_cpu_s"], 3)
    if base.get("train_img_s") and found["ours"].get("train_img_s"):
        found["ours"]["train_over_baseline_other_layout"] = round(found["ours"]["train_img_s"] /
                                                                   base["train_img_s"], 3)


def markdown(record: dict) -> str:
    pipeline = {p["size"]: p.get("img_s") for p in record["pipeline"]}
    headers = ["depth", "px", "model", "GFLOPs/img", "train img/s", "train % peak (% of used; cores used)",
               "infer img/s", "infer % peak (% of used; cores used)",
               "SavedModel JPEG img/s", "SavedModel / infer (per CPU-s)", "pipeline / train",
               "ours / keras.app (per CPU-s)",
               "peak RSS MiB"]
    rows = []
    for r in record["rows"]:
        if "error" in r:
            rows.append([r["depth"], r["size"], MODEL_NAMES[r["variant"]], None, r["error"]] + [None] * 8)
            continue
        sm = r.get("savedmodel")
        if r["variant"] != "ours":
            sm_cell, sm_ratio = None, None
        elif not record["savedmodel_available"]:
            sm_cell, sm_ratio = "n/a (export missing)", None
        elif sm is None:
            sm_cell, sm_ratio = "not run", None
        else:
            sm_cell, sm_ratio = r.get("savedmodel_img_s", sm.get("error")), _pair(r, "savedmodel_over_infer")
        pipe = pipeline.get(r["size"])
        ratio = None
        if r["variant"] == "ours_keras" and "train_over_baseline" in r:
            ratio = f"train {_pair(r, 'train_over_baseline')}; infer {_pair(r, 'infer_over_baseline')}"
        elif r["variant"] == "ours" and r["depth"] not in KERAS_APPS:
            ratio = "no keras.applications model"
        rows.append([r["depth"], r["size"], MODEL_NAMES[r["variant"]], r["flops_per_image"] / 1e9,
                     r["train_img_s"], _fraction(r, "train"), r["infer_img_s"], _fraction(r, "infer"), sm_cell,
                     sm_ratio,
                     round(pipe / r["train_img_s"], 1) if pipe else None, ratio, r.get("peak_rss_mb")])
    dev = record["device"]
    pipe_rows = [[p["size"], p.get("img_s", p.get("error")), p.get("peak_rss_mb"), p.get("loadavg_start")]
                 for p in record["pipeline"]]
    settings = record["settings"]
    paired_rows = [[p["depth"], p["size"], p.get("error")] + [None] * 4 if "error" in p else
                   [p["depth"], p["size"], p["train"]["ours_over_baseline"], p["train"]["pair_ratios"],
                    p["infer"]["ours_over_baseline"], p["infer"]["pair_ratios"], p["loadavg_start"]]
                   for p in record.get("paired", [])]
    paired = ["", "Paired comparison, ours (keras layout) / keras.applications, timed in turn in one process "
                  "(median of the per-pair ratios):", "",
              common.markdown_table(["depth", "px", "train ratio", "train pairs", "infer ratio", "infer pairs",
                                     "load at start"], paired_rows)] if paired_rows else []
    lines = [
        f"Device: {dev['device']}, {dev['cpu']} ({record['peak']['vector_units']}); TF {dev['tensorflow']}, "
        f"Keras {dev['keras']}; {dev['date']}",
        f"Peak fp32: {record['peak']['formula']}",
        f"Batch {settings['batch']}, {settings['warmup']} warm-up + {settings['steps']} timed steps per figure; "
        f"load average (1, 5, 15 min) at start {record['loadavg_start']}, at end {record['loadavg_end']}; "
        f"wall {record['wall_s']:.0f} s",
        "",
        common.markdown_table(headers, rows),
        "",
        f"Input pipeline (JPEG {settings['jpeg_size'][0]}x{settings['jpeg_size'][1]} files -> decode -> gray/pad/"
        f"resize -> batch -> augment '{settings['augment']}' -> prefetch, no model):",
        "",
        common.markdown_table(["px", "img/s", "peak RSS MiB", "load at start"], pipe_rows),
        *paired,
        "",
        record["conventions"],
    ]
    return "\n".join(lines)


def _pair(row: dict, key: str):
    """'wall ratio (ratio per CPU-second)' when both exist."""
    if row.get(key) is None:
        return None
    return f"{row[key]:.2f} (CPU {row[key + '_cpu']:.2f})" if row.get(key + "_cpu") else f"{row[key]:.2f}"


def _fraction(row: dict, kind: str) -> str:
    text = f"{100 * row[f'{kind}_peak_fraction']:.1f}%"
    if row.get(f"{kind}_used_fraction"):
        text += f" ({100 * row[f'{kind}_used_fraction']:.0f}%; {row[f'{kind}_cores_used']:.2f})"
    return text


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=common.CONVENTIONS)
    p.add_argument("--depths", type=int, nargs="+", default=[18, 34, 50, 101], choices=[18, 34, 50, 101])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 112], help="image sizes in px (>= 32)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (the first one traces)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per figure (median reported)")
    p.add_argument("--pipeline_steps", type=int, default=10, help="timed batches of the input pipeline")
    p.add_argument("--augment", default="complete", choices=["none", "on_side", "complete"])
    p.add_argument("--jpeg_size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    p.add_argument("--jpeg_count", type=int, default=16, help="distinct JPEG frames (reused round-robin)")
    p.add_argument("--no_baseline", dest="baseline", action="store_false",
                   help="skip keras.applications and our keras-layout build")
    p.add_argument("--baseline_sizes", type=int, nargs="+", default=None,
                   help="sizes that get the baseline rows (default: the first of --sizes; each baseline "
                        "model costs minutes of tracing)")
    p.add_argument("--paired_steps", type=int, default=0,
                   help="also time ours (keras layout) and keras.applications in one process, step by step in turn, "
                        "this many steps each (a ratio robust to background load); 0: off")
    p.add_argument("--paired_only", action="store_true", help="only the paired comparison (needs --paired_steps)")
    p.add_argument("--no_savedmodel", action="store_true", help="skip the SavedModel column")
    p.add_argument("--clock_ghz", type=float, default=None, help="nominal clock for the peak (default: cpuinfo)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per child process")
    p.add_argument("--inprocess", action="store_true",
                   help="measure in this process (smoke runs; peak memory is then not per configuration)")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/bench_<date>.json)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--rerender", default=None, metavar="JSON",
                   help="recompute the derived figures and table of a finished run's JSON in place, measure nothing")
    args = p.parse_args(argv)
    if min(args.sizes) < 32:
        p.error(f"--sizes: the ResNets need at least 32 px, got {args.sizes}")
    if args.paired_only and not args.paired_steps:
        p.error("--paired_only needs --paired_steps N")
    if args.batch < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--batch and --steps must be >= 1, --warmup >= 0")
    return args


def rerender(path: Path) -> dict:
    """Recompute the derived fields and the table of a finished run's JSON (after a change of conventions)."""
    import json

    record = json.loads(path.read_text())
    for row in record["rows"]:
        if "error" not in row:
            _derive(row, record["peak"]["peak_gflops"], record["peak"]["cores"])
    for depth, size in {(r["depth"], r["size"]) for r in record["rows"]}:
        _ratios(record["rows"], depth, size)
    record["conventions"] = common.CONVENTIONS
    record["markdown"] = markdown(record)
    return record


def main(argv=None) -> int:
    args = parse(argv)
    if args.rerender:
        record = rerender(Path(args.rerender))
        common.write_json(args.rerender, record)
        print(record["markdown"])
        return 0
    out = Path(args.out) if args.out else common.RESULTS / f"bench_{time.strftime('%Y%m%d_%H%M')}.json"
    common.refuse_overwrite(out, args.overwrite)
    args.out = str(out)
    record = run(args)
    common.write_json(out, record)
    out.with_suffix(".partial.json").unlink(missing_ok=True)
    print(record["markdown"])
    print(f"\nJSON: {out}")
    failed = [r for r in record["rows"] + record["pipeline"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    if not common.child_main(sys.argv, child):
        sys.exit(main())
