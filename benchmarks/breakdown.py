"""Accuracy of a finished run per kind of capture and per sub-label, on the pooled test folds.

    python benchmarks/breakdown.py runs/<run id>                      # fine-tuned predictions (head-only with --phase)
    python benchmarks/breakdown.py runs/<run id> --phase=head --json=out.json

Where the kind and sub-label come from: for the embedded night_sky data, the generator's scene plan (the same
counts and seed as the run; `--dataset_seed`, default 0); for an exported folder (`meteor-dataset export`), the file
names (`…_<sub_label>_<kind>.jpg`). Example ids are the run's sorted ids (`folds.json`), the runner's example order.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from common import cpu_peak  # benchmarks/ is the script's folder
from meteor_tf import io
from meteor_tf.run_dir import RunDir


def example_table(run_dir: Path, dataset_seed: int):
    """[(label, sub_label, kind)] in the runner's example order."""
    from meteor_tf.data.night_sky import render

    run = RunDir(run_dir)
    folds = io.read_json(run.split)
    ids = sorted(folds[0]["fit"] + folds[0]["val"] + folds[0]["test"])
    flags = run.read_flags()
    if flags["data"] == "embedded":
        plan = render.plan_dataset(flags["embedded_meteors"], flags["embedded_non_meteors"], dataset_seed)
        by_index = {i: (p.label, p.sub_label, kind) for p in plan for i, kind in zip(p.example_indices, p.kinds)}
        return [by_index[int(i.split("-")[1])] for i in ids]
    pattern = re.compile(r"_(" + "|".join(render.SUB_LABELS) + r")_(" + "|".join(render.KINDS) + r")\.jpg$")
    rows = []
    for i in ids:
        m = pattern.search(i)
        label = 0 if i.split("/")[0] == flags["class_dirs"][0] else 1
        rows.append((label, m.group(1) if m else "?", m.group(2) if m else "?"))
    return rows


def breakdown(run_dir: Path, phase: str = "fine_tune", dataset_seed: int = 0, threshold: float = 0.5) -> dict:
    table = example_table(run_dir, dataset_seed)
    correct = defaultdict(list)
    for part in RunDir(run_dir).folds_on_disk():
        if not part.predictions(phase).is_file():
            continue
        p = part.read_predictions(phase)
        for idx, prob in zip(p["test_idx"], p["test_prob"]):
            label, sub, kind = table[int(idx)]
            ok = (prob >= threshold) == (label == 0)  # column 0 = meteor probability
            for key in (f"kind/{kind}", f"sub_label/{sub}", f"kind×class/{kind}/{'meteor' if label == 0 else 'non_meteor'}",
                        "all"):
                correct[key].append(bool(ok))
    return {k: {"accuracy": float(np.mean(v)), "n": len(v)} for k, v in sorted(correct.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--phase", default="fine_tune", choices=["head", "fine_tune"])
    parser.add_argument("--dataset_seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = breakdown(args.run_dir, args.phase, args.dataset_seed)
    print(f"# {args.run_dir} ({args.phase}, threshold 0.5; CPU: {cpu_peak()['formula']}, {cpu_peak()['vector_units']})")
    print("| group | accuracy | n |\n|---|---|---|")
    for key, r in result.items():
        print(f"| {key} | {r['accuracy']:.3f} | {r['n']} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
