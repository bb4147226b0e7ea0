"""What a search leaves in its tuner directory: results table (markdown + CSV), objective-per-trial plot, and the
best trial as a flagfile (`best.cfg`) that `python -m meteor_tf.main --flagfile=...` runs unchanged.

Everything is read from the Keras Tuner oracle (`oracle.trials`, ranked by `ranked_trials`), so the chief of a
distributed search writes the same report as a single process.
"""

from __future__ import annotations

import csv
import glob
import math
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import keras_tuner as kt

from meteor_tf import io
from meteor_tf.config import ExperimentConfig
from meteor_tf.evaluation import report as run_report
from meteor_tf.tuning.hypermodel import HYPERBAND_KEYS, MeteorHyperModel

METRIC_COLUMNS = ("val_f1", "val_accuracy", "val_precision", "val_recall", "val_auc", "val_recall_at_min_precision")


def load_oracle(tuner_dir: Path, objective: str) -> kt.Oracle:
    """An oracle holding the trials saved in `tuner_dir` (trial_*/trial.json): how a distributed worker, or anyone
    after the search, reads the results without the chief."""
    oracle = kt.Oracle(objective=kt.Objective(objective, direction="max"))
    from keras_tuner.engine.trial import Trial

    for fname in sorted(glob.glob(os.path.join(str(tuner_dir), "trial_*", "trial.json"))):
        trial = Trial.load(fname)
        oracle.trials[trial.trial_id] = trial
    return oracle


def ranked_trials(oracle) -> list:
    """Completed trials best first, then the rest. Keras Tuner's `get_best_trials` breaks ties by the order of
    `oracle.trials`, which a reloaded search may hold differently, so a resumed search could name another best
    trial among equal scores: ties go to the earlier trial here."""
    def order(trial):
        trial_id = str(trial.trial_id)
        return (int(trial_id), "") if trial_id.isdigit() else (float("inf"), trial_id)

    completed = sorted((t for t in oracle.trials.values() if t.status == "COMPLETED"), key=order)
    completed.sort(key=lambda t: t.score, reverse=oracle.objective.direction == "max")  # stable: ties keep order
    rest = sorted((t for t in oracle.trials.values() if t.status != "COMPLETED"), key=order)
    return completed + rest


def best_trial(oracle) -> Optional[object]:
    """The best completed trial (`ranked_trials`), or None."""
    trials = ranked_trials(oracle)
    return trials[0] if trials and trials[0].status == "COMPLETED" else None


def trial_rows(oracle, objective: str) -> List[dict]:
    """One row per trial, best first (completed trials by objective, then the rest)."""
    best = [t.trial_id for t in ranked_trials(oracle)]
    rows = []
    for rank, trial_id in enumerate(best, start=1):
        trial = oracle.trials[trial_id]
        metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
        values = trial.hyperparameters.values
        rows.append({
            "rank": rank if trial.status == "COMPLETED" else "",
            "trial": trial.trial_id, "status": trial.status,
            objective: trial.score if trial.status == "COMPLETED" else metrics.get(objective),
            **{k: v for k, v in metrics.items() if k != objective},
            "epochs": values.get("tuner/epochs", ""),
            "hp": {k: v for k, v in values.items() if k not in HYPERBAND_KEYS},
        })
    return rows


def write_results(tuner_dir: Path, oracle, objective: str, hypermodel: MeteorHyperModel,
                  settings: dict) -> Dict[str, Path]:
    """results.md, results.csv, objective.png, best.cfg and best.json in `tuner_dir`; returns their paths."""
    tuner_dir = Path(tuner_dir)
    rows = trial_rows(oracle, objective)
    tuned = list(hypermodel.tuned_names())
    hp_names = tuned + sorted({k for r in rows for k in r["hp"]} - set(tuned) - _fixed_names(rows, tuned))
    metric_names = [objective] + [m for m in METRIC_COLUMNS if m != objective and any(m in r for r in rows)]
    columns = ["rank", "trial", "status"] + metric_names + ["seconds"] + \
        (["epochs"] if any(r["epochs"] != "" for r in rows) else []) + hp_names
    paths = {"csv": tuner_dir / "results.csv", "markdown": tuner_dir / "results.md",
             "plot": tuner_dir / "objective.png"}
    io.write_text(paths["csv"], _csv_text(rows, columns))
    best = best_trial(oracle)
    lines = [f"# meteor_tf tuning results: {tuner_dir}", "",
             f"{settings.get('tuner')} search, objective {objective} (maximised; scored on the tuning split, never "
             f"on the held-out test part), {len(rows)} trial(s), "
             f"{sum(r['status'] == 'COMPLETED' for r in rows)} completed.", ""]
    fixed = {name: desc for name, desc in hypermodel.describe_space().items() if "fixed" in desc}
    if fixed:
        lines += ["Fixed: " + "; ".join(f"{k} = {v}" for k, v in fixed.items()), ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(_cell(r, c)) for c in columns) + " |")
    if best is not None:
        lines += ["", f"Best: trial {best.trial_id}, {objective} = {best.score:.4f}. Its flags: `best.cfg` "
                      f"(`python -m meteor_tf.main --flagfile={tuner_dir / 'best.cfg'}`)."]
    io.write_text(paths["markdown"], "\n".join(lines) + "\n")
    plot_objective(rows, objective, paths["plot"])
    if best is not None:
        config = best_config(hypermodel, best)
        values = {k: v for k, v in best.hyperparameters.values.items() if k in tuned}
        paths["flagfile"] = tuner_dir / "best.cfg"
        header = [f"Best trial {best.trial_id} of `python -m meteor_tf.tune` in {tuner_dir}",
                  f"({settings.get('tuner')} search, {objective} = {best.score:.4f} on the tuning split).",
                  "Tuned: " + (", ".join(f"{k}={_fmt(v)}" for k, v in values.items()) or "nothing"),
                  "Epochs are the flags' full budget (Hyperband may have scored this trial on fewer).",
                  f"Run: python -m meteor_tf.main --flagfile={paths['flagfile']}"]
        write_flagfile(paths["flagfile"], config, header)
        paths["best"] = tuner_dir / "best.json"
        io.write_json(paths["best"], {"trial_id": best.trial_id, "objective": objective,
                                               "score": best.score, "hyperparameters": values,
                                               "config": config.to_dict()})
    return paths


def _fixed_names(rows, tuned) -> set:
    """Hyperparameters with one value in every trial (Fixed ones): left out of the table's columns."""
    names = {k for r in rows for k in r["hp"]} - set(tuned)
    return {k for k in names if len({repr(r["hp"].get(k)) for r in rows}) <= 1}


def best_config(hypermodel: MeteorHyperModel, trial) -> ExperimentConfig:
    """The best trial's configuration at the flags' full epoch budget, written where the user's runs go."""
    return hypermodel.config_for(trial.hyperparameters.values, full_budget=True)


def _cell(row, column):
    if column in row:
        return row[column]
    return row["hp"].get(column, "")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.4g}"
    return str(v)


def _csv_text(rows, columns) -> str:
    import io

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if _cell(r, c) is None else _cell(r, c) for c in columns])
    return buf.getvalue()


def plot_objective(rows: Sequence[dict], objective: str, path: Path) -> None:
    """Objective per trial (in trial order) with the best-so-far line; failed trials marked on the axis."""
    plt = run_report._pyplot()
    ordered = sorted(rows, key=lambda r: _trial_number(r["trial"]))
    xs = list(range(len(ordered)))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.35 * len(xs) + 2), 3.6))
    done = [(x, r[objective]) for x, r in zip(xs, ordered) if r["status"] == "COMPLETED" and r[objective] is not None
            and not math.isnan(r[objective])]
    failed = [x for x, r in zip(xs, ordered) if r["status"] != "COMPLETED"]
    if done:
        ax.plot([x for x, _ in done], [y for _, y in done], "o", color="tab:blue", label="trial")
        best, running = -math.inf, []
        for _, y in done:
            best = max(best, y)
            running.append(best)
        ax.step([x for x, _ in done], running, where="post", color="tab:orange", label="best so far")
        bx, by = max(done, key=lambda p: p[1])
        ax.annotate(f"trial {ordered[bx]['trial']}: {by:.3f}", (bx, by), textcoords="offset points", xytext=(4, 6),
                    fontsize=8)
    if failed:
        ax.plot(failed, [0.0] * len(failed), "x", color="tab:red", label="failed / unfinished")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["trial"] for r in ordered], rotation=90 if len(xs) > 12 else 0, fontsize=8)
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{objective} per trial")
    fig.tight_layout()
    with io.atomic_path(path) as partial:
        fig.savefig(partial, dpi=110)
    plt.close(fig)


def _trial_number(trial_id) -> int:
    try:
        return int(trial_id)
    except (TypeError, ValueError):
        return 0


# --------------------------------------------------------------------------------------------------- flagfile
def flag_lines(config: ExperimentConfig) -> List[str]:
    """One `--flag=value` per experiment setting, as `meteor_tf.flags` parses them back into `config` (None values
    are the flags' defaults and are left out; booleans are --name / --noname; tuples comma-separated)."""
    lines = []
    for name, value in config.to_dict().items():
        if value is None:
            continue
        if isinstance(value, bool):
            lines.append(f"--{name}" if value else f"--no{name}")
        elif isinstance(value, tuple):
            lines.append(f"--{name}=" + ",".join(_flag_value(v) for v in value))
        else:
            lines.append(f"--{name}={_flag_value(value)}")
    return lines


def _flag_value(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def write_flagfile(path: Path, config: ExperimentConfig, header: Sequence[str] = ()) -> None:
    text = "".join(f"# {line}\n" for line in header) + "\n".join(flag_lines(config)) + "\n"
    io.write_text(path, text)
