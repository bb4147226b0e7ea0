"""Run reports: the paper-style markdown summary and PNG plots (confusion matrix, learning curves)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from meteor_tf import CLASS_NAMES, io
from meteor_tf.config import input_rule_of
from meteor_tf.evaluation import metrics as m

ROWS = (("head", "No fine tuning"), ("fine_tune", "With fine tuning"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen on camera PCs and CI
    import matplotlib.pyplot as plt

    return plt


def summary_markdown(config: dict, stats: Dict[str, dict], threshold: Optional[dict], skipped: Sequence,
                     timings: Dict[str, float], title: str) -> str:
    """The run's summary: mean ± std over folds for both rows of the paper's tables."""
    lines = [f"# {title}", "",
             f"ResNet-{config['depth']} ({config['layout']} layout), pretrain={config['pretrain']}, "
             f"augment={config['augment']}, {config['image_size']} px "
             f"(input rule {input_rule_of(config)}), "
             f"{config['folds']} fold(s), head {config['head_epochs']} + fine-tune {config['fine_tune_epochs']} epochs, "
             f"batch {config['batch_size']}, seed {config['seed']}.", "",
             "Mean ± std over the test folds (threshold 0.5; precision, recall and F1 for the meteor class).", "",
             "| | accuracy | precision | recall | F1 | AUC |", "|---|---|---|---|---|---|"]
    for phase, label in ROWS:
        if phase not in stats:
            lines.append(f"| {label} | – | – | – | – | – |")
            continue
        s = stats[phase]
        lines.append(f"| {label} | {m.format_mean_std(s['accuracy'])} | {m.format_mean_std(s['precision'])} | "
                     f"{m.format_mean_std(s['recall'])} | {m.format_mean_std(s['f1'], percent=False)} | "
                     f"{m.format_mean_std(s['auc'], percent=False)} |")
    if threshold:
        lines += ["", "## Recall-first threshold", "",
                  f"Chosen on pooled out-of-fold inner-validation predictions to reach ≥ "
                  f"{100 * threshold['target_recall']:.0f}% meteor recall: **{threshold['value']:.4f}**"
                  + (" (stored with the final model, final/model_info.json)." if config.get("retrain_final")
                     else "."), "",
                  "| threshold | accuracy | precision | recall | F1 |", "|---|---|---|---|---|"]
        for name, s in (("0.5", threshold["at_0.5"]), (f"{threshold['value']:.4f}", threshold["at_threshold"])):
            lines.append(f"| {name} | {m.format_mean_std(s['accuracy'])} | {m.format_mean_std(s['precision'])} | "
                         f"{m.format_mean_std(s['recall'])} | {m.format_mean_std(s['f1'], percent=False)} |")
    lines += ["", "## Skipped files", ""]
    if skipped:
        lines += [f"- `{path}`: {reason}" for path, reason in skipped]
    else:
        lines.append("None.")
    if timings:
        lines += ["", "## Wall time", ""]
        lines += [f"- {k}: {v:.1f} s" for k, v in timings.items()]
    return "\n".join(lines) + "\n"


def plot_confusion(matrix: np.ndarray, path: Path, title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, str(int(value)), ha="center", va="center",
                color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks([0, 1], CLASS_NAMES)
    ax.set_yticks([0, 1], CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with io.atomic_path(path, unique=True) as partial:  # unique: parallel fold workers each write the report
        fig.savefig(partial, dpi=120)
    plt.close(fig)


def plot_learning_curves(histories: Dict[str, List[dict]], path: Path) -> None:
    """histories: fold name → list of per-phase dicts {phase, history: {loss: [...], val_loss: [...], lr: [...]}}."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for fold, phases in sorted(histories.items()):
        epoch0 = 0
        for phase in phases:
            hist = phase["history"]
            n = len(hist.get("loss", []))
            xs = np.arange(epoch0 + 1, epoch0 + n + 1)
            style = "-" if phase["phase"] != "head" else "--"
            axes[0].plot(xs, hist.get("loss", []), style, lw=1, label=f"{fold} {phase['phase']}" if fold == "fold_0" else None)
            if "val_loss" in hist:
                axes[1].plot(xs, hist["val_loss"], style, lw=1)
            if "lr" in hist:
                axes[2].plot(xs, hist["lr"], style, lw=1)
            epoch0 += n
    axes[0].set_title("training loss (-- head, — fine-tune)")
    axes[1].set_title("inner-validation loss")
    axes[2].set_title("learning rate (end of epoch)")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    with io.atomic_path(path, unique=True) as partial:
        fig.savefig(partial, dpi=110)
    plt.close(fig)
