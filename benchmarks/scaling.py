"""How wall time grows with dataset size and image size.

    python benchmarks/scaling.py [--counts 1660 3320 6640] [--size 64] [--sizes 32 64 112 224]
                                 [--out benchmarks/results/scaling.json] [--png benchmarks/results/scaling.png]

"Wall time" here is one pass of the recipe's data-bound work over N captures at S px, each part measured in a child
process of its own:
  load       capture files -> decode -> grayscale/pad/resize -> in-memory arrays (`meteor_tf.data.dataset.load_folder`,
             the runner's loader), measured;
  features   one forward pass of the frozen backbone over every capture (what cached-feature CV computes once),
             `predict` at the batch size, tracing included, measured;
  head epoch one epoch of head training on the cached features (`make_dataset` + `fit`), measured after a one-step
             warm-up;
  fine-tune epoch  ceil(N / batch) x the median fine-tuning step (first 6 convs frozen, `train_on_batch`), extrapolated
             from `--train_steps` timed steps (a full epoch at 6,640 captures would take an hour here).
Points: N in `--counts` at `--size` px, and S in `--sizes` at the smallest N. N beyond the 1,660 embedded captures
replicates the exported capture files (hard links under new names: every file is still read and decoded).
A projection of a whole K-fold run (`--project_folds`, `--project_epochs` each phase) from these parts is printed
beside them, labelled as such.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

PARTS = ("load", "features", "head_epoch", "fine_tune_epoch")


# --------------------------------------------------------------------------------------------------- data
def export_embedded(folder: Path, data_dir=None) -> Path:
    """The embedded night_sky captures as JPEG files (meteor/, non_meteor/), written once and reused."""
    import tensorflow_datasets as tfds

    from meteor_tf.data.night_sky import builder, tools

    done = folder / ".complete"
    if done.exists():
        return folder
    b = builder.prepare(builder.night_sky_builder(data_dir))
    ds = b.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})  # the JPEG bytes as stored
    tools.export_captures(tools.dataset_examples(ds), str(folder), overwrite=True)
    done.write_text("ok\n")
    return folder


def capture_files(root: Path):
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def replicated(base: Path, count: int, work: Path) -> Path:
    """A folder of `count` captures: the base files, then copies under new names (hard links when possible)."""
    files = capture_files(base)
    if count <= len(files):
        if count == len(files):
            return base
        raise SystemExit(f"--counts: {count} is fewer than the {len(files)} base captures; use counts >= "
                         f"{len(files)}")
    target = work / f"n{count}"
    if (target / ".complete").exists():
        return target
    for i in range(count):
        src = files[i % len(files)]
        rel = src.relative_to(base)
        dst = target / rel.parent / f"r{i // len(files)}_{rel.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            continue
        try:
            os.link(src, dst)
        except OSError:  # another file system: copy
            dst.write_bytes(src.read_bytes())
    (target / ".complete").write_text("ok\n")
    return target


# --------------------------------------------------------------------------------------------------- child
def point_child(spec: dict) -> dict:
    import keras
    import numpy as np

    from meteor_tf.data.dataset import load_folder
    from meteor_tf.data.pipeline import make_dataset
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.freeze import set_phase
    from meteor_tf.training.phases import compile_for_phase

    size, batch = spec["size"], spec["batch"]
    out = {"loadavg_start": common.loadavg()}
    t = time.perf_counter()
    examples = load_folder(spec["folder"], size)
    out["load"] = time.perf_counter() - t
    out["n"] = len(examples)

    keras.utils.set_random_seed(0)
    model = build_classifier(spec["depth"], "torchvision", image_size=size)
    set_phase(model, "head")
    extractor = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    t = time.perf_counter()
    features = extractor.predict(examples.images, batch_size=batch, verbose=0)
    out["features"] = time.perf_counter() - t

    head = model.get_layer("head")
    compile_for_phase(head, 1e-3)
    ds = make_dataset(features, examples.labels, batch, training=True)
    head.fit(ds.take(1), epochs=1, verbose=0)  # traces the train function
    t = time.perf_counter()
    head.fit(ds, epochs=1, verbose=0)
    out["head_epoch"] = time.perf_counter() - t

    set_phase(model, "fine_tune", frozen_convs=6)
    compile_for_phase(model, 1e-4)
    x, y = examples.images[:batch], examples.labels[:batch]
    timing = common.time_steps(lambda: model.train_on_batch(x, y), 1, spec["train_steps"])
    out["fine_tune_step"] = timing
    out["fine_tune_epoch"] = timing["median_s"] * math.ceil(len(examples) / batch)
    out["peak_rss_mb"] = common.peak_rss_mb()
    return out


def child(spec: dict) -> dict:
    common.configure_threads()
    return point_child(spec)


# --------------------------------------------------------------------------------------------------- parent
def _progress(text: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run(args) -> dict:
    started = time.time()
    record = {"command": " ".join([Path(sys.executable).name, "benchmarks/scaling.py"] + sys.argv[1:]),
              "device": common.device_record(), "settings": vars(args), "loadavg_start": common.loadavg(),
              "definition": __doc__.split("\n\n", 2)[2].strip(), "points": []}
    work = Path(args.work_dir)
    if args.data == "embedded":
        base = export_embedded(work / "embedded", args.tfds_data_dir)
    else:
        base = Path(args.data)
        if not base.is_dir():
            raise SystemExit(f"--data={args.data}: not a folder (expected meteor/ and non_meteor/ subfolders)")
    n_base = len(capture_files(base))
    counts = args.counts or [n_base]
    points = [(n, args.size) for n in counts] + [(min(counts), s) for s in args.sizes if s != args.size]
    for n, size in points:
        folder = replicated(base, n, work)
        spec = {"folder": str(folder), "size": size, "depth": args.depth, "batch": args.batch,
                "train_steps": args.train_steps}
        result = common.run_child(Path(__file__), spec, timeout=args.timeout)
        if "error" in result:
            raise SystemExit(f"point N={n}, {size} px failed: {result}")
        result["wall_s"] = sum(result[p] for p in PARTS)
        result["projected_cv_s"] = projection(result, args)
        record["points"].append({"n": n, "size": size, **result})
        _progress(f"N={n} {size} px: " + ", ".join(f"{p} {result[p]:.1f} s" for p in PARTS))
    record["loadavg_end"] = common.loadavg()
    record["wall_s"] = round(time.time() - started, 1)
    record["markdown"] = markdown(record)
    return record


def projection(point: dict, args) -> float:
    """A K-fold run with `project_epochs` head and fine-tune epochs on the fit share of each fold: load + features
    once, then per fold (fit share x N) of both epochs. Validation and test passes and per-fold tracing are left
    out, so it is a lower bound."""
    fit_share = (1 - 1 / args.project_folds) * 0.85  # training folds minus the 15% inner validation split
    per_fold = fit_share * args.project_epochs * (point["head_epoch"] + point["fine_tune_epoch"])
    return point["load"] + point["features"] + args.project_folds * per_fold


def markdown(record: dict) -> str:
    s = record["settings"]
    rows = [[p["n"], p["size"], p["load"], p["features"], p["head_epoch"], p["fine_tune_epoch"], p["wall_s"],
             p["projected_cv_s"] / 3600, p["peak_rss_mb"], p["loadavg_start"]] for p in record["points"]]
    return "\n".join([
        f"ResNet-{s['depth']}, batch {s['batch']}, {record['device']['device']} ({record['device']['cpu']}), "
        f"{record['device']['date']}; load average at start {record['loadavg_start']}, at end "
        f"{record['loadavg_end']}",
        "",
        common.markdown_table(["N", "px", "load s", "features s", "head epoch s", "fine-tune epoch s (extrap.)",
                               "wall s", f"projected {s['project_folds']}-fold run h", "peak RSS MiB",
                               "load avg"], rows),
        "",
        f"wall = load + features + one head epoch + one fine-tune epoch. Projection: {s['project_folds']} folds x "
        f"{s['project_epochs']} head + {s['project_epochs']} fine-tune epochs on the fit share, plus load and "
        "features once (validation/test passes and tracing left out: a lower bound).",
    ])


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = record["settings"]
    by_n = sorted((p for p in record["points"] if p["size"] == s["size"]), key=lambda p: p["n"])
    n0 = min(p["n"] for p in record["points"])
    by_s = sorted((p for p in record["points"] if p["n"] == n0), key=lambda p: p["size"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    labels = {"load": "load (decode + resize)", "features": "backbone features (once)",
              "head_epoch": "head epoch (cached features)", "fine_tune_epoch": "fine-tune epoch (extrapolated)",
              "wall_s": "wall (sum)"}
    for ax, points, key, xlabel in ((axes[0], by_n, "n", "captures N"), (axes[1], by_s, "size", "image size S (px)")):
        xs = [p[key] for p in points]
        for part in PARTS + ("wall_s",):
            ax.plot(xs, [p[part] for p in points], marker="o", label=labels[part],
                    linewidth=2.5 if part == "wall_s" else 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_title(f"ResNet-{s['depth']} at {s['size']} px: time vs dataset size")
    axes[1].set_title(f"ResNet-{s['depth']}, N = {n0}: time vs image size")
    axes[1].legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{record['device']['cpu']}, {record['device']['device']}, {record['device']['date'][:10]}; "
                 f"load avg {record['loadavg_start'][0]}-{record['loadavg_end'][0]}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=18, choices=[18, 34, 50, 101])
    p.add_argument("--counts", type=int, nargs="+", default=[1660, 3320, 6640],
                   help="dataset sizes N (the first must be the base folder's count or more)")
    p.add_argument("--size", type=int, default=64, help="image size of the dataset-size curve")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 112, 224],
                   help="image sizes of the image-size curve (at the smallest N)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train_steps", type=int, default=3, help="timed fine-tune steps per point")
    p.add_argument("--data", default="embedded", help="'embedded' (exported once) or a capture folder")
    p.add_argument("--tfds_data_dir", default=None)
    p.add_argument("--work_dir", default=os.path.join(os.path.expanduser("~"), ".cache", "meteor_tf", "bench"),
                   help="exported and replicated capture folders (kept for reruns)")
    p.add_argument("--project_folds", type=int, default=10)
    p.add_argument("--project_epochs", type=int, default=7)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--out", default=None)
    p.add_argument("--png", default=None, help="default: the --out path with .png")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if min(args.sizes + [args.size]) < 32:
        p.error("image sizes need at least 32 px")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    out = Path(args.out) if args.out else common.RESULTS / f"scaling_{time.strftime('%Y%m%d_%H%M')}.json"
    png = Path(args.png) if args.png else out.with_suffix(".png")
    common.refuse_overwrite(out, args.overwrite)
    common.refuse_overwrite(png, args.overwrite)
    record = run(args)
    record["png"] = str(png)
    plot(record, png)
    common.write_json(out, record)
    print(record["markdown"])
    print(f"\nJSON: {out}\nPNG: {png}")
    return 0


if __name__ == "__main__":
    if not common.child_main(sys.argv, child):
        sys.exit(main())
