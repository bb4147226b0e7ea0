"""Aggregates finished runs into the paper's table layout, beside the published numbers.

Runs are matched to the paper's cells by their settings (pretrain, depth, augment), and grouped by the settings the
paper leaves open (image size, folds, epochs, batch), so quick and full-size runs land in separate tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

from meteor_tf.config import DEFAULT_INPUT_RULE
from meteor_tf.evaluation import metrics as m
from meteor_tf.run_dir import runs_in

# (table, column label, match) → published accuracy (no fine tuning, with fine tuning), mean ± std in %.
PAPER = [
    ("2", "ImageNet ResNet-18, augmentation none", dict(pretrain="imagenet", depth=18, augment="none"),
     ("89±2%", "91±1%")),
    ("2", "ImageNet ResNet-18, augmentation on-side", dict(pretrain="imagenet", depth=18, augment="on_side"),
     ("88±3%", "90±3%")),
    ("2", "ImageNet ResNet-18, augmentation complete", dict(pretrain="imagenet", depth=18, augment="complete"),
     ("88±3%", "87±3%")),
    ("3", "ImageNet-50", dict(pretrain="imagenet", depth=50, augment="none"), ("92±2%", "93±2%")),
    ("3", "Fashion-MNIST-18", dict(pretrain="fashion_mnist", depth=18, augment="none"), ("94±1%", "96±1%")),
    ("3", "scratch-18", dict(pretrain="none", depth=18, augment="none"), ("–", "82±3%")),
    ("4", "ImageNet 18", dict(pretrain="imagenet", depth=18, augment="none"), ("89±2%", "91±1%")),
    ("4", "ImageNet 34", dict(pretrain="imagenet", depth=34, augment="none"), ("88±3%", "91±2%")),
    ("4", "ImageNet 50", dict(pretrain="imagenet", depth=50, augment="none"), ("92±2%", "93±2%")),
    ("4", "Fashion-MNIST 18", dict(pretrain="fashion_mnist", depth=18, augment="none"), ("94±1%", "96±1%")),
    ("Fig. 3", "ImageNet 18", dict(pretrain="imagenet", depth=18, augment="none"), ("plot", "plot")),
    ("Fig. 3", "ImageNet 34", dict(pretrain="imagenet", depth=34, augment="none"), ("plot", "plot")),
    ("Fig. 3", "ImageNet 50", dict(pretrain="imagenet", depth=50, augment="none"), ("plot", "plot")),
    ("Fig. 3", "ImageNet 101", dict(pretrain="imagenet", depth=101, augment="none"), ("plot", "plot")),
]
SETTING_KEYS = ("image_size", "input_rule", "folds", "head_epochs", "fine_tune_epochs", "batch_size", "data", "layout")
SETTING_DEFAULTS = {"input_rule": DEFAULT_INPUT_RULE}  # what runs from before a setting existed ran with


def finished_runs(output_dir: str) -> List[dict]:
    runs = []
    for run in runs_in(output_dir):
        result = run.read_metrics()
        if "stats" in result and "config" in result:
            result["run_dir"] = str(run.path)
            runs.append(result)
    return runs


def _cell(result: dict, phase: str) -> str:
    s = result["stats"].get(phase)
    return m.format_mean_std(s["accuracy"]) if s else "–"


def paper_tables(output_dir: str) -> str:
    """Markdown: for each group of comparable runs, the paper's rows with ours beside them."""
    runs = finished_runs(output_dir)
    groups: Dict[Tuple, List[dict]] = {}
    for r in runs:
        groups.setdefault(tuple(str(r["config"].get(k, SETTING_DEFAULTS.get(k))) for k in SETTING_KEYS), []).append(r)
    out = []
    for setting, members in groups.items():
        desc = ", ".join(f"{k}={v}" for k, v in zip(SETTING_KEYS, setting))
        out += [f"### Runs with {desc}", "",
                "| paper table | setup | paper: no fine tuning | ours | paper: with fine tuning | ours | ours F1 "
                "(fine-tuned) | run |", "|---|---|---|---|---|---|---|---|"]
        for table, label, match, (p_head, p_ft) in PAPER:
            hits = [r for r in members if all(r["config"].get(k) == v for k, v in match.items())]
            for r in hits:
                f1 = r["stats"].get("fine_tune", r["stats"].get("head", {})).get("f1")
                out.append(f"| {table} | {label} | {p_head} | {_cell(r, 'head')} | {p_ft} | {_cell(r, 'fine_tune')} "
                           f"| {m.format_mean_std(f1, percent=False) if f1 else '–'} | `{Path(r['run_dir']).name}` |")
        out.append("")
    if not runs:
        out.append(f"No finished runs under {output_dir}.")
    return "\n".join(out) + "\n"
