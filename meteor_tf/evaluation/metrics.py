"""Classification metrics for the meteor class (scikit-learn), the recall-first threshold, recall at a minimum
precision, and mean ± std. The Keras metric trained models carry is in `keras_metrics`."""

from __future__ import annotations

from typing import Dict, Iterable, List

import numpy as np
from sklearn import metrics as skm

from meteor_tf import METEOR

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "auc")


def predicted_labels(meteor_probability: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Class ids (0 = meteor) from meteor probabilities: a capture is a meteor when p >= threshold."""
    return np.where(np.asarray(meteor_probability) >= threshold, METEOR, 1 - METEOR)


def classification_metrics(labels, meteor_probability, threshold: float = 0.5) -> Dict[str, float]:
    """Accuracy, and precision/recall/F1 for the meteor class, AUC of the meteor probability."""
    labels = np.asarray(labels)
    prob = np.asarray(meteor_probability, dtype=np.float64)
    pred = predicted_labels(prob, threshold)
    is_meteor = (labels == METEOR).astype(int)
    out = {
        "accuracy": float(skm.accuracy_score(labels, pred)),
        "precision": float(skm.precision_score(labels, pred, pos_label=METEOR, zero_division=0)),
        "recall": float(skm.recall_score(labels, pred, pos_label=METEOR, zero_division=0)),
        "f1": float(skm.f1_score(labels, pred, pos_label=METEOR, zero_division=0)),
        "auc": float(skm.roc_auc_score(is_meteor, prob)) if 0 < is_meteor.sum() < len(is_meteor) else float("nan"),
        "threshold": float(threshold),
        "n": int(len(labels)),
    }
    return out


def confusion(labels, meteor_probability, threshold: float = 0.5) -> np.ndarray:
    """2×2 confusion matrix, rows = true class, columns = predicted, in CLASS_NAMES order."""
    return skm.confusion_matrix(labels, predicted_labels(meteor_probability, threshold), labels=[0, 1])


def recall_first_threshold(labels, meteor_probability, target_recall: float = 0.99) -> float:
    """The highest threshold whose meteor recall is still >= target_recall (camera networks must not lose meteors).

    Chosen on inner-validation predictions, never on the test folds."""
    labels = np.asarray(labels)
    prob = np.asarray(meteor_probability, dtype=np.float64)
    meteor_probs = np.sort(prob[labels == METEOR])
    if len(meteor_probs) == 0:
        raise ValueError("recall_first_threshold needs at least one meteor among the validation predictions")
    # Keeping the k lowest-scored meteors below the threshold loses k of n; allow floor((1 - target) * n).
    allowed_misses = int(np.floor((1.0 - target_recall) * len(meteor_probs) + 1e-9))
    return float(meteor_probs[allowed_misses])


def mean_std(per_fold: Iterable[Dict[str, float]], names=METRIC_NAMES) -> Dict[str, Dict[str, float]]:
    """Mean and (population, as the paper's ±) standard deviation of each metric over folds.

    A metric undefined in some fold (NaN, e.g. the AUC of a test fold holding one class) is never averaged away:
    its mean and std are NaN and ``undefined`` counts the folds where it was (the report then says so)."""
    rows: List[Dict[str, float]] = list(per_fold)
    out = {}
    for name in names:
        values = np.array([r[name] for r in rows if name in r], dtype=np.float64)
        undefined = int(np.isnan(values).sum())
        defined = len(values) > 0 and not undefined
        out[name] = {"mean": float(np.mean(values)) if defined else float("nan"),
                     "std": float(np.std(values)) if defined else float("nan")}
        if undefined:
            out[name]["undefined"] = undefined
            out[name]["folds"] = int(len(values))
    return out


def format_mean_std(stats: Dict[str, float], percent: bool = True) -> str:
    if stats.get("undefined"):
        return f"undefined in {stats['undefined']} of {stats['folds']} folds"
    if percent:
        return f"{100 * stats['mean']:.0f}±{100 * stats['std']:.0f}%"
    return f"{stats['mean']:.2f}±{stats['std']:.2f}"


def recall_at_precision(labels, meteor_prob, min_precision: float) -> float:
    """The highest meteor recall of any threshold whose meteor precision is at least `min_precision` (0 if none)."""
    is_meteor = (np.asarray(labels) == METEOR).astype(int)
    if is_meteor.sum() == 0:
        return float("nan")
    precision, recall, _ = skm.precision_recall_curve(is_meteor, np.asarray(meteor_prob, dtype=np.float64))
    ok = precision >= min_precision - 1e-12
    return float(recall[ok].max()) if ok.any() else 0.0
