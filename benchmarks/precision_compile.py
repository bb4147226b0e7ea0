"""Which execution settings are fastest here: precision policy x XLA, tf.data options, and an accuracy check.

    python benchmarks/precision_compile.py [--depth 18] [--size 112] [--batch 32] [--steps 2]
                                           [--precisions none bfloat16 float16] [--jit off on]
                                           [--accuracy_size 32] [--out benchmarks/results/precision_compile.json]

1. Model: training and inference img/s of the classifier under each `--mixed_precision` policy ("none" = float32,
   "bfloat16" = mixed_bfloat16, "float16" = mixed_float16, set with the library's `set_mixed_precision`) and each
   `jit_compile` (XLA) setting, passed to the library's `compile_for_phase`; one child process per combination (the
   policy is global). The config fields these map to: `ExperimentConfig.mixed_precision`, `.jit_compile`.
2. Input pipeline: JPEG files -> decode/resize -> batch -> augment, img/s under tf.data options: decode map
   sequential / num_parallel_calls=2 / AUTOTUNE, prefetch on/off, a private thread pool, caching the decoded images;
   and the runner's in-memory pipeline (`meteor_tf.data.pipeline.make_dataset`) with and without `.cache()`.
3. Accuracy check: a hold-out run (`run_experiment`, `--folds=1`) on the embedded dataset with float32 and with the
   fastest training setting, same seed, compared side by side (skipped when the fastest is float32 without XLA).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

POLICY_NAMES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


# --------------------------------------------------------------------------------------------------- children
def model_child(spec: dict) -> dict:
    import numpy as np

    from meteor_tf.models.classifier import build_classifier, count_flops
    from meteor_tf.training.distribute import set_mixed_precision
    from meteor_tf.training.phases import compile_for_phase

    policy = set_mixed_precision(spec["precision"])
    size, batch = spec["size"], spec["batch"]
    model = build_classifier(spec["depth"], "torchvision", image_size=size, normalization="torch")
    # compile first: Keras applies jit_compile to the predict function too
    compile_for_phase(model, 1e-4, jit_compile=spec["jit"])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 1)).astype("float32")
    y = rng.integers(0, 2, (batch,)).astype("int32")
    out = {"policy": policy, "flops_per_image": count_flops(model), "loadavg_start": common.loadavg()}
    infer = common.time_steps(lambda: model.predict_on_batch(x), spec["warmup"], spec["steps"])
    out["infer"] = {**infer, "img_s": batch / infer["median_s"], "peak_rss_mb": common.peak_rss_mb()}
    train = common.time_steps(lambda: model.train_on_batch(x, y), spec["warmup"], spec["steps"])
    out["train"] = {**train, "img_s": batch / train["median_s"], "peak_rss_mb": common.peak_rss_mb()}
    return out


def pipeline_child(spec: dict) -> dict:
    import numpy as np

    from bench import file_pipeline
    from meteor_tf.data.pipeline import make_dataset

    paths = sorted(str(p) for p in Path(spec["jpeg_dir"]).glob("*.jpg"))
    size, batch, augment = spec["size"], spec["batch"], spec["augment"]
    variants = {
        "sequential decode, no prefetch": dict(parallel=1, prefetch=False),
        "sequential decode, prefetch": dict(parallel=1),
        "num_parallel_calls=2, prefetch": dict(parallel=2),
        "AUTOTUNE, prefetch (bench default)": dict(),
        "AUTOTUNE, prefetch, private pool 2": dict(private_threads=2),
        "AUTOTUNE, prefetch, cache decoded": dict(cache=True),
    }
    out = {"file_pipeline": {}, "in_memory": {}, "loadavg_start": common.loadavg()}
    for name, kwargs in variants.items():
        it = iter(file_pipeline(paths, size, batch, augment, **kwargs))
        # warm-up covers one pass over the files, so the cached variant is timed in its steady state
        timing = common.time_steps(lambda: next(it), max(2, -(-len(paths) // batch) + 1), spec["steps"])
        out["file_pipeline"][name] = {**timing, "img_s": batch / timing["median_s"]}
    images = np.random.default_rng(0).uniform(0, 255, (spec["memory_images"], size, size, 1)).astype("float32")
    labels = np.zeros((len(images),), np.int32)
    for cache in (True, False):
        ds = make_dataset(images, labels, batch, training=True, augment=augment, seed=0, cache=cache)
        it = iter(ds.repeat())
        timing = common.time_steps(lambda: next(it), 2, spec["steps"])
        out["in_memory"][f"make_dataset(cache={cache}, augment={augment!r})"] = {
            **timing, "img_s": batch / timing["median_s"]}
    out["peak_rss_mb"] = common.peak_rss_mb()
    return out


def accuracy_child(spec: dict) -> dict:
    import logging

    from meteor_tf.config import ExperimentConfig
    from meteor_tf.experiment.runner import run_experiment

    logging.getLogger("meteor_tf").setLevel(logging.WARNING)
    config = ExperimentConfig(**spec["config"])
    t = time.time()
    result = run_experiment(config, progress=lambda _: None)
    return {"wall_s": round(time.time() - t, 1), "stats": result["stats"], "timings": result["timings"],
            "per_fold": result["per_fold"]}


def paired_child(spec: dict) -> dict:
    """Several settings in one process, timed step by step in turn, so all see the same background load. A layer
    keeps the dtype policy that was global when it was built, so the models can differ in policy."""
    import statistics

    import numpy as np

    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.training.distribute import set_mixed_precision
    from meteor_tf.training.phases import compile_for_phase

    size, batch = spec["size"], spec["batch"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch, size, size, 1)).astype("float32")
    y = rng.integers(0, 2, (batch,)).astype("int32")
    models = {}
    for name in spec["settings"]:
        precision, jit = name.split(",")
        set_mixed_precision(precision)
        models[name] = compile_for_phase(build_classifier(spec["depth"], "torchvision", image_size=size),
                                         1e-4, jit_compile=jit == "on")
    set_mixed_precision("none")
    out = {"loadavg_start": common.loadavg(), "settings": spec["settings"]}
    for kind in ("infer", "train"):
        calls = {n: (lambda m=m: m.predict_on_batch(x)) if kind == "infer" else (lambda m=m: m.train_on_batch(x, y))
                 for n, m in models.items()}
        warm = {n: common.time_steps(fn, 0, 1)["median_s"] for n, fn in calls.items()}  # trace + compile
        steps = {n: [] for n in calls}
        for _ in range(spec["steps"]):
            for n, fn in calls.items():
                steps[n].append(common.time_steps(fn, 0, 1)["median_s"])
        first = spec["settings"][0]
        out[kind] = {"first_call_s": warm, "step_s": steps,
                     "img_s": {n: batch / statistics.median(t) for n, t in steps.items()},
                     "vs_first": {n: statistics.median([a / b for a, b in zip(steps[first], t)])
                                  for n, t in steps.items()}}
    out["peak_rss_mb"] = common.peak_rss_mb()
    return out


def child(spec: dict) -> dict:
    common.configure_threads()
    return {"model": model_child, "pipeline": pipeline_child, "accuracy": accuracy_child,
            "paired": paired_child}[spec["kind"]](spec)


# --------------------------------------------------------------------------------------------------- parent
def _progress(text: str) -> None:
    print(f"[precision {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(args) -> dict:
    started = time.time()
    record = {"command": " ".join([Path(sys.executable).name, "benchmarks/precision_compile.py"] + sys.argv[1:]),
              "device": common.device_record(), "settings": vars(args), "loadavg_start": common.loadavg(),
              "conventions": common.CONVENTIONS, "models": []}
    peak = common.cpu_peak(args.clock_ghz)
    record["peak"] = peak
    for precision in ([] if args.skip_models else args.precisions):
        for jit in args.jit:
            spec = {"kind": "model", "precision": precision, "jit": jit == "on", "depth": args.depth,
                    "size": args.size, "batch": args.batch, "warmup": args.warmup, "steps": args.steps}
            result = common.run_child(Path(__file__), spec, timeout=args.timeout)
            row = {"precision": precision, "jit_compile": jit == "on", **result}
            for kind, factor in (("train", 3), ("infer", 1)):
                if kind in row:
                    row[f"{kind}_img_s"] = round(row[kind]["img_s"], 2)
                    row[f"{kind}_peak_fraction"] = round(
                        row[kind]["img_s"] * factor * row["flops_per_image"] / 1e9 / peak["peak_gflops"], 4)
            record["models"].append(row)
            _progress(f"{precision} jit={jit}: train {row.get('train_img_s')} img/s, infer "
                      f"{row.get('infer_img_s')} img/s {row.get('error', '')}")
    ok = [r for r in record["models"] if "train_img_s" in r]
    base = next((r for r in ok if r["precision"] == "none" and not r["jit_compile"]), None)
    compare_to_fp32(ok, base)
    if ok:
        best_train = max(ok, key=lambda r: r["train_img_s"])
        best_infer = max(ok, key=lambda r: r["infer_img_s"])
        record["fastest"] = {"train": {"mixed_precision": best_train["precision"],
                                       "jit_compile": best_train["jit_compile"]},
                             "infer": {"mixed_precision": best_infer["precision"],
                                       "jit_compile": best_infer["jit_compile"]}}

    if args.paired_steps:
        spec = {"kind": "paired", "settings": args.paired_settings, "depth": args.depth, "size": args.size,
                "batch": args.batch, "steps": args.paired_steps}
        record["paired"] = common.run_child(Path(__file__), spec, timeout=args.timeout)
        _progress(f"paired: train {record['paired'].get('train', {}).get('vs_first')}, infer "
                  f"{record['paired'].get('infer', {}).get('vs_first')} {record['paired'].get('error', '')}")
    if not args.skip_pipeline:
        with tempfile.TemporaryDirectory(prefix="meteor_prec_jpeg_") as tmp:
            common.write_jpegs(common.night_sky_jpegs(args.jpeg_count, *args.jpeg_size), Path(tmp))
            spec = {"kind": "pipeline", "jpeg_dir": tmp, "size": args.size, "batch": args.batch,
                    "augment": args.augment, "steps": args.pipeline_steps, "memory_images": args.memory_images}
            record["pipeline"] = common.run_child(Path(__file__), spec, timeout=args.timeout)
            _progress("tf.data options measured")

    if args.accuracy_size and args.accuracy_epochs > 0 and "fastest" in record:  # --accuracy_epochs=0: no check
        record["accuracy"] = accuracy_check(args, record["fastest"]["train"])
    record["loadavg_end"] = common.loadavg()
    record["wall_s"] = round(time.time() - started, 1)
    record["markdown"] = markdown(record)
    return record


def compare_to_fp32(rows, base) -> None:
    """Ratios to float32 without XLA: of img/s, and of images per CPU-second (robust to background load)."""
    for r in rows:
        for kind in ("train", "infer"):
            r[f"{kind}_img_per_cpu_s"] = round(r[kind]["img_s"] / r[kind]["cores_used"], 3) \
                if r[kind].get("cores_used") else None
        if not base:
            continue
        for kind in ("train", "infer"):
            r[f"{kind}_vs_fp32"] = round(r[f"{kind}_img_s"] / base[f"{kind}_img_s"], 3)
            if r.get(f"{kind}_img_per_cpu_s") and base.get(f"{kind}_img_per_cpu_s"):
                r[f"{kind}_vs_fp32_cpu"] = round(r[f"{kind}_img_per_cpu_s"] / base[f"{kind}_img_per_cpu_s"], 3)


def accuracy_check(args, candidate: dict) -> dict:
    """Hold-out run fp32 vs the fastest training setting, same data, split and seed."""
    settings = [{"mixed_precision": "none", "jit_compile": False}]
    if candidate != settings[0]:
        settings.append(candidate)
    elif args.accuracy_compare:
        mp, jit = args.accuracy_compare.split(",")
        settings.append({"mixed_precision": mp, "jit_compile": jit == "on"})
    out = {"runs": []}
    with tempfile.TemporaryDirectory(prefix="meteor_prec_acc_") as tmp:
        for i, setting in enumerate(settings):
            config = dict(data=args.accuracy_data, depth=args.depth, pretrain="none", image_size=args.accuracy_size,
                          folds=1, fine_tune_epochs=args.accuracy_epochs, batch_size=args.batch,
                          retrain_final=False, output_dir=str(Path(tmp) / str(i)), **setting)
            result = common.run_child(Path(__file__), {"kind": "accuracy", "config": config}, timeout=args.timeout)
            out["runs"].append({**setting, **result})
            _progress(f"accuracy check {setting}: {result.get('stats', result.get('error'))}")
    if len(settings) == 1:
        out["note"] = "the fastest setting is float32 without XLA, the library default: nothing to compare"
    return out


def markdown(record: dict) -> str:
    s = record["settings"]
    rows = []
    for r in record["models"]:
        if "error" in r:
            rows.append([POLICY_NAMES[r["precision"]], r["jit_compile"], r["error"]] + [None] * 5)
            continue
        rows.append([POLICY_NAMES[r["precision"]], "on" if r["jit_compile"] else "off", r["train_img_s"],
                     _ratio(r, "train_vs_fp32"), 100 * r["train_peak_fraction"], r["infer_img_s"],
                     _ratio(r, "infer_vs_fp32"), r["train"].get("cores_used"), r["train"]["peak_rss_mb"]])
    lines = [f"Device: {record['device']['device']}, {record['device']['cpu']} ({record['peak']['vector_units']}; "
             f"bf16 hardware: {record['peak']['bf16_hardware']}); {record['device']['date']}; "
             f"--mixed_precision=auto here: {POLICY_NAMES.get(record['device'].get('auto_precision'), '?')} "
             f"(CPU bf16 path: {record['device'].get('cpu_bf16')})",
             f"ResNet-{s['depth']} (torchvision layout) at {s['size']} px, batch {s['batch']}, {s['warmup']} warm-up "
             f"+ {s['steps']} timed steps; load average at start {record['loadavg_start']}, at end "
             f"{record.get('loadavg_end')}",
             "",
             common.markdown_table(["policy", "XLA", "train img/s", "train vs fp32 (per CPU-s)", "train % peak",
                                    "infer img/s", "infer vs fp32 (per CPU-s)", "cores used (train)",
                                    "peak RSS MiB"], rows)]
    if "fastest" in record:
        f = record["fastest"]
        lines += ["", f"Fastest training (img/s): mixed_precision={f['train']['mixed_precision']}, jit_compile="
                      f"{f['train']['jit_compile']}; fastest inference: mixed_precision="
                      f"{f['infer']['mixed_precision']}, jit_compile={f['infer']['jit_compile']}"]
        ok = [r for r in record["models"] if r.get("train_img_per_cpu_s") and r.get("infer_img_per_cpu_s")]
        if ok:
            t = max(ok, key=lambda r: r["train_img_per_cpu_s"])
            i = max(ok, key=lambda r: r["infer_img_per_cpu_s"])
            lines.append(f"Per CPU-second: training {POLICY_NAMES[t['precision']]} with XLA "
                         f"{'on' if t['jit_compile'] else 'off'}, inference {POLICY_NAMES[i['precision']]} with XLA "
                         f"{'on' if i['jit_compile'] else 'off'}")
    paired = record.get("paired")
    if paired and "error" not in paired:
        rows = [[n, paired["train"]["img_s"][n], paired["train"]["vs_first"][n], paired["train"]["first_call_s"][n],
                 paired["infer"]["img_s"][n], paired["infer"]["vs_first"][n]] for n in paired["settings"]]
        lines += ["", f"Paired (one process, steps in turn; ratio = median per-round speed-up over "
                      f"'{paired['settings'][0]}'; load at start {paired['loadavg_start']}):", "",
                  common.markdown_table(["policy,XLA", "train img/s", "train ratio", "first train call s",
                                         "infer img/s", "infer ratio"], rows)]
    elif paired:
        lines += ["", f"Paired: {paired['error']}"]
    pipe = record.get("pipeline")
    if pipe and "error" not in pipe:
        rows = [[name, v["img_s"]] for name, v in pipe["file_pipeline"].items()]
        rows += [[name, v["img_s"]] for name, v in pipe["in_memory"].items()]
        lines += ["", f"tf.data at {s['size']} px, batch {s['batch']}, augment '{s['augment']}' (JPEG "
                      f"{s['jpeg_size'][0]}x{s['jpeg_size'][1]} files; in-memory: {s['memory_images']} arrays):", "",
                  common.markdown_table(["pipeline", "img/s"], rows)]
    elif pipe:
        lines += ["", f"tf.data: {pipe['error']}"]
    acc = record.get("accuracy")
    if acc:
        rows = []
        for run in acc["runs"]:
            st = run.get("stats", {}).get("fine_tune", {})
            cells = [f"{st[k]['mean']:.3f}" if k in st else run.get("error") for k in ("accuracy", "auc", "f1")]
            rows.append([POLICY_NAMES[run["mixed_precision"]], "on" if run["jit_compile"] else "off", *cells,
                         run.get("wall_s")])
        lines += ["", f"Accuracy check: hold-out run on {s['accuracy_data']} data, ResNet-{s['depth']} from scratch, "
                      f"{s['accuracy_size']} px, {s['accuracy_epochs']} epochs (test split, threshold 0.5):", "",
                  common.markdown_table(["policy", "XLA", "accuracy", "AUC", "F1", "wall s"], rows)]
        if acc.get("note"):
            lines.append(acc["note"])
    return "\n".join(lines)


def _ratio(row: dict, key: str):
    if row.get(key) is None:
        return None
    return f"{row[key]:.2f} ({row[key + '_cpu']:.2f})" if row.get(key + "_cpu") else f"{row[key]:.2f}"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=18, choices=[18, 34, 50, 101])
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--precisions", nargs="+", default=["none", "bfloat16", "float16"],
                   choices=list(POLICY_NAMES), help="ExperimentConfig.mixed_precision values")
    p.add_argument("--jit", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--skip_models", action="store_true", help="skip the one-process-per-setting table")
    p.add_argument("--paired_steps", type=int, default=0,
                   help="also time --paired_settings in one process, step by step in turn (robust to load); 0: off")
    p.add_argument("--paired_settings", nargs="+", default=["none,off", "none,on", "bfloat16,on"],
                   help="POLICY,on|off entries; the first is the reference")
    p.add_argument("--skip_pipeline", action="store_true")
    p.add_argument("--pipeline_steps", type=int, default=8)
    p.add_argument("--augment", default="complete", choices=["none", "on_side", "complete"])
    p.add_argument("--jpeg_size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    p.add_argument("--jpeg_count", type=int, default=32)
    p.add_argument("--memory_images", type=int, default=256, help="arrays for the in-memory pipeline")
    p.add_argument("--accuracy_size", type=int, default=32, help="px of the accuracy check; 0 skips it")
    p.add_argument("--accuracy_epochs", type=int, default=2, help="epochs of the accuracy check; 0 skips it")
    p.add_argument("--accuracy_data", default="embedded", help="'embedded' or a capture folder")
    p.add_argument("--accuracy_compare", default="none,on",
                   help="POLICY,on|off compared with float32 when float32 without XLA is itself the fastest")
    p.add_argument("--clock_ghz", type=float, default=None)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--rerender", default=None, metavar="JSON",
                   help="recompute the ratios and table of a finished run's JSON in place, measure nothing")
    args = p.parse_args(argv)
    if args.size < 32 or (args.accuracy_size and args.accuracy_size < 32):
        p.error("--size and --accuracy_size need at least 32 px")
    return args


def rerender(path: Path) -> dict:
    """Recompute the ratios and the table of a finished run's JSON (after a change of conventions)."""
    import json

    record = json.loads(path.read_text())
    ok = [r for r in record["models"] if "train_img_s" in r]
    base = next((r for r in ok if r["precision"] == "none" and not r["jit_compile"]), None)
    compare_to_fp32(ok, base)
    record["markdown"] = markdown(record)
    return record


def main(argv=None) -> int:
    args = parse(argv)
    if args.rerender:
        record = rerender(Path(args.rerender))
        common.write_json(args.rerender, record)
        print(record["markdown"])
        return 0
    out = Path(args.out) if args.out else common.RESULTS / f"precision_compile_{time.strftime('%Y%m%d_%H%M')}.json"
    common.refuse_overwrite(out, args.overwrite)
    record = run(args)
    common.write_json(out, record)
    print(record["markdown"])
    print(f"\nJSON: {out}")
    return 1 if any("error" in r for r in record["models"]) else 0


if __name__ == "__main__":
    if not common.child_main(sys.argv, child):
        sys.exit(main())
