"""Head-only K-fold CV with cached backbone features against recomputing the backbone every step.

    python benchmarks/cached_features.py [--depth 18] [--size 64] [--folds 10] [--head_epochs 7]
                                         [--data embedded] [--out benchmarks/results/cached_features.json]

Runs the library's runner (`meteor_tf.experiment.runner.run_experiment`) twice on the same data, folds and
seeds, head phase only (`fine_tune=False`, no final retrain), once with `cache_features=True` (the default: pooled
features computed once per capture, the head trains on them) and once with `cache_features=False` (`--nocache_features`:
every head step runs the frozen backbone). Each run is a child process of its own. Reports wall time, the speed-up
(whole run, and cross-validation alone = feature extraction + folds, data loading left out), and per-fold test
metrics side by side, and checks that both runs used the same folds.

Backbone weights: `--weights PATH` (a backbone file, as `--weights` of the CLI) or, by default, a seeded random
initialisation written to a temporary file and loaded as a Fashion-MNIST backbone would be: the timing does not depend
on the weights' values, and both runs use the same ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

METRICS = ("accuracy", "auc", "f1", "recall", "precision")


def run_child_experiment(spec: dict) -> dict:
    import logging

    from meteor_tf.config import ExperimentConfig
    from meteor_tf.experiment.runner import run_experiment

    logging.getLogger("meteor_tf").setLevel(logging.WARNING)
    config = ExperimentConfig(**spec["config"])
    started = time.time()
    result = run_experiment(config, progress=lambda _: None)
    run_dir = Path(config.output_dir) / config.derived_run_id()
    return {"wall_s": round(time.time() - started, 1), "timings": result["timings"], "stats": result["stats"],
            "per_fold": result["per_fold"], "folds": json.loads((run_dir / "folds.json").read_text()),
            "features_file": (run_dir / "features.npy").exists(), "peak_rss_mb": common.peak_rss_mb()}


def write_random_backbone(spec: dict) -> dict:
    import keras

    from meteor_tf.models import weights
    from meteor_tf.models.classifier import build_classifier

    keras.utils.set_random_seed(spec["seed"])
    model = build_classifier(spec["depth"], "torchvision", image_size=spec["size"])
    weights.save_backbone(model.get_layer("backbone"), spec["path"])
    return {"path": spec["path"]}


def profile_child(spec: dict) -> dict:
    """cProfile of cached-feature head folds of the runner (`train_fold`), to show where a fold's time goes."""
    import cProfile
    import io
    import logging
    import pstats

    from meteor_tf.config import ExperimentConfig
    from meteor_tf.data.dataset import load_examples
    from meteor_tf.experiment import fold as ef
    from meteor_tf.experiment.features import backbone_features
    from meteor_tf.experiment.model_setup import initial_backbone_path
    from meteor_tf.experiment.runner import prepare_run_dir
    from meteor_tf.run_dir import RunRecord

    logging.getLogger("meteor_tf").setLevel(logging.WARNING)
    config = ExperimentConfig(**spec["config"])
    run = prepare_run_dir(config)
    backbone = initial_backbone_path(config, run)
    examples = load_examples(config)
    folds = ef.make_folds(config, examples)
    features = backbone_features(config, examples.images, backbone, run.features, config.batch_size)
    context = ef.FoldContext(config, examples, run, RunRecord(run), backbone, config.batch_size, features)
    out = {"fold_s": []}
    for k in range(spec["folds"]):
        profiler = cProfile.Profile()
        started = time.time()
        profiler.enable()
        context.cached_head = None  # a head compiled anew per fold: the cost this profile shows
        ef.train_fold(context, folds[k], f"fold_{k}", seed=config.seed + k)
        profiler.disable()
        out["fold_s"].append(round(time.time() - started, 1))
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)  # the last fold: traced anew too
    out["profile_last_fold"] = text.getvalue()
    return out


def reuse_child(spec: dict) -> dict:
    """What-if, not the runner: the same folds and features, but one head compiled once for every fold (weights and
    optimizer state restored per fold) and validation/test predicted from the cached features, so nothing is traced
    per fold. Plain Adam at the head LR, no SGDR or checkpoints: it measures the cost floor, not the recipe."""
    import logging

    import keras

    from meteor_tf.config import ExperimentConfig
    from meteor_tf.data.dataset import load_examples
    from meteor_tf.evaluation import metrics
    from meteor_tf.experiment import fold as ef
    from meteor_tf.experiment.features import backbone_features
    from meteor_tf.experiment.model_setup import initial_backbone_path
    from meteor_tf.experiment.runner import prepare_run_dir
    from meteor_tf.models.classifier import build_head
    from meteor_tf.training.phases import compile_for_phase

    logging.getLogger("meteor_tf").setLevel(logging.WARNING)
    config = ExperimentConfig(**spec["config"])
    run = prepare_run_dir(config)
    backbone = initial_backbone_path(config, run)
    t = time.time()
    examples = load_examples(config)
    out = {"load data": time.time() - t}
    folds = ef.make_folds(config, examples)
    t = time.time()
    features = backbone_features(config, examples.images, backbone, run.features, config.batch_size)
    out["cached features"] = time.time() - t
    keras.utils.set_random_seed(config.seed)
    head = build_head(features.shape[-1], config.head_units, config.head_dropout)
    compile_for_phase(head, config.lr_head_value)
    head.optimizer.build(head.trainable_variables)
    start_weights = head.get_weights()
    start_optimizer = [v.numpy() for v in head.optimizer.variables]
    y = examples.labels
    out["per_fold"] = {}
    for k, fold in enumerate(folds):
        t = time.time()
        head.set_weights(start_weights)
        for variable, value in zip(head.optimizer.variables, start_optimizer):
            variable.assign(value)
        head.fit(features[fold.fit_idx], y[fold.fit_idx], batch_size=config.batch_size, epochs=config.head_epochs,
                 validation_data=(features[fold.val_idx], y[fold.val_idx]), shuffle=True, verbose=0)
        prob = head.predict(features[fold.test_idx], batch_size=config.batch_size, verbose=0)[:, 0]
        out["per_fold"][f"fold_{k}"] = {"head": metrics.classification_metrics(y[fold.test_idx], prob)}
        out[f"fold {k}"] = time.time() - t
    out["stats"] = {"head": metrics.mean_std([r["head"] for r in out["per_fold"].values()])}
    return out


def child(spec: dict) -> dict:
    common.configure_threads()
    if spec["kind"] == "reuse":
        return reuse_child(spec)
    if spec["kind"] == "profile":
        return profile_child(spec)
    return write_random_backbone(spec) if spec["kind"] == "weights" else run_child_experiment(spec)


def _progress(text: str) -> None:
    print(f"[cached_features {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def cv_seconds(timings: dict) -> float:
    """Feature extraction + every fold: the cross-validation proper (loading the data is the same for both)."""
    return timings.get("cached features", 0.0) + sum(v for k, v in timings.items() if k.startswith("fold "))


def run(args) -> dict:
    started = time.time()
    record = {"command": " ".join([Path(sys.executable).name, "benchmarks/cached_features.py"] + sys.argv[1:]),
              "device": common.device_record(), "settings": vars(args), "loadavg_start": common.loadavg(),
              "runs": {}}
    with tempfile.TemporaryDirectory(prefix="meteor_cached_") as tmp:
        weights = args.weights
        if weights is None:
            weights = str(Path(tmp) / "random_backbone.weights.h5")
            result = common.run_child(Path(__file__), {"kind": "weights", "depth": args.depth, "size": args.size,
                                                       "seed": args.seed, "path": weights}, timeout=args.timeout)
            if "error" in result:
                raise SystemExit(f"could not write the backbone weights: {result}")
        base = dict(data=args.data, depth=args.depth, pretrain="fashion_mnist", weights=weights,
                    image_size=args.size, folds=args.folds, fine_tune=False, head_epochs=args.head_epochs,
                    batch_size=args.batch, lr_head=args.lr_head, retrain_final=False, seed=args.seed,
                    augment="none")
        # uncached first: a machine that gets busier later would favour the cached run, not the other way round
        for name, cache in (("uncached", False), ("cached", True)):
            config = dict(base, cache_features=cache, output_dir=str(Path(tmp) / name))
            record["loadavg_before_" + name] = common.loadavg()
            result = common.run_child(Path(__file__), {"kind": "experiment", "config": config},
                                      timeout=args.timeout)
            record["runs"][name] = result
            if "error" in result:
                raise SystemExit(f"the {name} run failed: {json.dumps(result, indent=1)}")
            _progress(f"{name}: {result['wall_s']} s (cross-validation {cv_seconds(result['timings']):.1f} s)")
        if args.what_if:
            config = dict(base, cache_features=True, output_dir=str(Path(tmp) / "what_if"))
            result = common.run_child(Path(__file__), {"kind": "reuse", "config": config}, timeout=args.timeout)
            record["what_if"] = result
            if "error" not in result:
                record["speedup_cv_what_if"] = round(cv_seconds(record["runs"]["uncached"]["timings"]) /
                                                     cv_seconds(result), 2)
            _progress(f"what-if (head traced once): {cv_seconds(result) if 'error' not in result else result}")
        if args.profile_folds:
            config = dict(base, cache_features=True, output_dir=str(Path(tmp) / "profile"))
            record["profile"] = common.run_child(Path(__file__), {"kind": "profile", "config": config,
                                                                  "folds": args.profile_folds}, timeout=args.timeout)
            _progress(f"profiled cached folds: {record['profile'].get('fold_s', record['profile'].get('error'))}")
    cached, uncached = record["runs"]["cached"], record["runs"]["uncached"]
    record["same_folds"] = cached["folds"] == uncached["folds"]
    record["cached_run_used_features"] = cached["features_file"] and not uncached["features_file"]
    record["speedup_total"] = round(uncached["wall_s"] / cached["wall_s"], 2)
    record["speedup_cv"] = round(cv_seconds(uncached["timings"]) / cv_seconds(cached["timings"]), 2)
    record["per_fold"] = compare_folds(cached["per_fold"], uncached["per_fold"])
    record["loadavg_end"] = common.loadavg()
    record["wall_s"] = round(time.time() - started, 1)
    record["markdown"] = markdown(record)
    return record


def compare_folds(cached: dict, uncached: dict) -> dict:
    out = {}
    for fold in sorted(cached, key=lambda f: int(f.split("_")[-1])):
        c, u = cached[fold]["head"], uncached[fold]["head"]
        out[fold] = {m: {"cached": c.get(m), "uncached": u.get(m)} for m in METRICS}
    diffs = {m: [abs(v[m]["cached"] - v[m]["uncached"]) for v in out.values()
                 if v[m]["cached"] is not None and v[m]["uncached"] is not None] for m in METRICS}
    out["max_abs_difference"] = {m: round(max(d), 4) if d else None for m, d in diffs.items()}
    return out


def markdown(record: dict) -> str:
    s = record["settings"]
    c, u = record["runs"]["cached"], record["runs"]["uncached"]
    time_rows = [["total (run_experiment)", u["wall_s"], c["wall_s"], record["speedup_total"]],
                 ["load data", u["timings"].get("load data"), c["timings"].get("load data"), None],
                 ["feature extraction", u["timings"].get("cached features"), c["timings"].get("cached features"),
                  None],
                 ["all folds", cv_seconds(u["timings"]) - u["timings"].get("cached features", 0),
                  cv_seconds(c["timings"]) - c["timings"].get("cached features", 0), None],
                 ["cross-validation (features + folds)", cv_seconds(u["timings"]), cv_seconds(c["timings"]),
                  record["speedup_cv"]]]
    fold_rows = []
    for fold, v in record["per_fold"].items():
        if fold == "max_abs_difference":
            continue
        fold_rows.append([fold] + [f"{v[m]['uncached']:.3f} / {v[m]['cached']:.3f}" for m in ("accuracy", "auc", "f1")])
    mad = record["per_fold"]["max_abs_difference"]
    stats = []
    for name, run in (("uncached", u), ("cached", c)):
        st = run["stats"]["head"]
        stats.append([name] + [f"{st[m]['mean']:.3f} ± {st[m]['std']:.3f}" for m in ("accuracy", "auc", "f1")])
    return "\n".join([
        f"ResNet-{s['depth']} head only, {s['size']} px, {s['folds']} folds, {s['head_epochs']} head epochs, batch "
        f"{s['batch']}, data {s['data']}, {record['device']['device']} ({record['device']['cpu']}), "
        f"{record['device']['date']}",
        f"Load average before the uncached run {record['loadavg_before_uncached']}, before the cached run "
        f"{record['loadavg_before_cached']}, at the end {record['loadavg_end']}. Same folds: {record['same_folds']}.",
        "",
        common.markdown_table(["seconds", "recompute backbone (--nocache_features)", "cached features", "speed-up"],
                              time_rows),
        "",
        "Per-fold test metrics, uncached / cached:",
        "",
        common.markdown_table(["fold", "accuracy", "AUC", "F1"], fold_rows),
        "",
        common.markdown_table(["run", "accuracy", "AUC", "F1"], stats),
        "",
        f"Largest per-fold difference: accuracy {mad['accuracy']}, AUC {mad['auc']}, F1 {mad['f1']}.",
    ] + _what_if_lines(record) + _profile_lines(record.get("profile")))


def _what_if_lines(record: dict) -> list:
    w = record.get("what_if")
    if not w:
        return []
    if "error" in w:
        return ["", f"What-if: {w['error']}"]
    return ["", f"What-if (not the runner): one head compiled once for every fold, predictions from the features: "
                f"cross-validation {cv_seconds(w):.1f} s, {record['speedup_cv_what_if']}x faster than uncached."]


def _profile_lines(profile) -> list:
    if not profile:
        return []
    if "error" in profile:
        return ["", f"Profile: {profile['error']}"]
    lines = profile["profile_last_fold"].splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return ["", f"cProfile of cached-feature folds (seconds per fold {profile['fold_s']}), last fold, by cumulative "
                "time:", "", "```", *[line[:160] for line in lines[start:start + 30]], "```"]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=18, choices=[18, 34, 50, 101])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--head_epochs", type=int, default=7, help="the runner's default: SGDR cycles 1 + 2 + 4")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr_head", type=float, default=0.03, help="the paper's head LR (the runner's default)")
    p.add_argument("--data", default="embedded", help="'embedded' or a capture folder")
    p.add_argument("--weights", default=None, help="backbone weights file (default: seeded random initialisation)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--what_if", action="store_true",
                   help="also time a head compiled once for all folds, predicting from the features (not the "
                        "runner: the cost floor of cached-feature CV)")
    p.add_argument("--what_if_only", metavar="EARLIER_JSON", default=None,
                   help="run only the what-if and compare it with the runner runs of an earlier JSON of this script "
                        "(same settings)")
    p.add_argument("--profile_folds", type=int, default=0,
                   help="then cProfile this many cached-feature folds (where a fold's time goes); 0: off")
    p.add_argument("--timeout", type=float, default=7200)
    p.add_argument("--out", default=None)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.folds < 2:
        p.error("--folds must be >= 2 (cross-validation)")
    return args


def what_if_only(args) -> dict:
    """The what-if alone, against the uncached and cached runner runs of an earlier record with the same settings."""
    earlier = json.loads(Path(args.what_if_only).read_text())
    keys = ("depth", "size", "folds", "head_epochs", "batch", "lr_head", "data", "seed")
    changed = [k for k in keys if earlier["settings"].get(k) != getattr(args, k)]
    if changed:
        raise SystemExit(f"--what_if_only: {args.what_if_only} was run with other settings ({', '.join(changed)})")
    record = {"command": " ".join([Path(sys.executable).name, "benchmarks/cached_features.py"] + sys.argv[1:]),
              "device": common.device_record(), "settings": vars(args), "loadavg_start": common.loadavg(),
              "compared_with": args.what_if_only}
    with tempfile.TemporaryDirectory(prefix="meteor_cached_") as tmp:
        weights = args.weights or str(Path(tmp) / "random_backbone.weights.h5")
        if args.weights is None:
            common.run_child(Path(__file__), {"kind": "weights", "depth": args.depth, "size": args.size,
                                              "seed": args.seed, "path": weights}, timeout=args.timeout)
        config = dict(data=args.data, depth=args.depth, pretrain="fashion_mnist", weights=weights,
                      image_size=args.size, folds=args.folds, fine_tune=False, head_epochs=args.head_epochs,
                      batch_size=args.batch, lr_head=args.lr_head, retrain_final=False, seed=args.seed,
                      augment="none", output_dir=str(Path(tmp) / "what_if"))
        result = common.run_child(Path(__file__), {"kind": "reuse", "config": config}, timeout=args.timeout)
    if "error" in result:
        raise SystemExit(f"the what-if run failed: {json.dumps(result, indent=1)}")
    record["what_if"] = result
    seconds = {"uncached (runner)": cv_seconds(earlier["runs"]["uncached"]["timings"]),
               "cached (runner)": cv_seconds(earlier["runs"]["cached"]["timings"]),
               "cached, head traced once (what-if)": cv_seconds(result)}
    record["cv_seconds"] = seconds
    record["speedup_cv_what_if"] = round(seconds["uncached (runner)"] / seconds["cached, head traced once (what-if)"], 2)
    record["loadavg_end"] = common.loadavg()
    stats = result["stats"]["head"]
    rows = [[name, value, round(seconds["uncached (runner)"] / value, 2)] for name, value in seconds.items()]
    record["markdown"] = "\n".join([
        f"What-if: ResNet-{args.depth} head only, {args.size} px, {args.folds} folds, {args.head_epochs} head epochs "
        f"(runner figures from {args.what_if_only}); load average {record['loadavg_start']} -> "
        f"{record['loadavg_end']}", "",
        common.markdown_table(["cross-validation (features + folds)", "seconds", "speed-up vs uncached"], rows), "",
        f"what-if metrics (plain Adam, no SGDR): accuracy {stats['accuracy']['mean']:.3f} ± "
        f"{stats['accuracy']['std']:.3f}, AUC {stats['auc']['mean']:.3f} ± {stats['auc']['std']:.3f}"])
    return record


def main(argv=None) -> int:
    args = parse(argv)
    out = Path(args.out) if args.out else common.RESULTS / f"cached_features_{time.strftime('%Y%m%d_%H%M')}.json"
    common.refuse_overwrite(out, args.overwrite)
    if args.what_if_only:
        record = what_if_only(args)
        common.write_json(out, record)
        print(record["markdown"])
        print(f"\nJSON: {out}")
        return 0
    record = run(args)
    common.write_json(out, record)
    print(record["markdown"])
    print(f"\nJSON: {out}")
    return 0 if record["same_folds"] else 1


if __name__ == "__main__":
    if not common.child_main(sys.argv, child):
        sys.exit(main())
