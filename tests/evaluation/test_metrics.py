import numpy as np
import pytest

from meteor_tf.evaluation import metrics as m


def test_metrics_are_for_the_meteor_class():
    labels = np.array([0, 0, 0, 1, 1])  # 0 = meteor
    prob = np.array([0.9, 0.8, 0.2, 0.7, 0.1])  # meteor probabilities
    out = m.classification_metrics(labels, prob)
    # predicted meteor: 0, 1, 3 -> TP 2, FP 1, FN 1
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["accuracy"] == pytest.approx(3 / 5)
    assert out["auc"] == pytest.approx(5 / 6)


def test_recall_first_threshold_reaches_the_target_and_is_the_highest_such():
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(200, int), np.ones(150, int)]
    prob = np.r_[rng.beta(5, 2, 200), rng.beta(2, 5, 150)]
    t = m.recall_first_threshold(labels, prob, 0.99)
    recall = m.classification_metrics(labels, prob, t)["recall"]
    assert recall >= 0.99
    # any higher threshold (the next meteor score up) would lose too many meteors
    higher = np.sort(prob[labels == 0])[np.searchsorted(np.sort(prob[labels == 0]), t, side="right")]
    assert m.classification_metrics(labels, prob, higher)["recall"] < 0.99


def test_recall_first_threshold_with_perfect_target_keeps_every_meteor():
    labels = np.array([0, 0, 1])
    prob = np.array([0.3, 0.9, 0.5])
    assert m.recall_first_threshold(labels, prob, 1.0) == pytest.approx(0.3)


def test_recall_first_threshold_needs_meteors():
    with pytest.raises(ValueError, match="at least one meteor"):
        m.recall_first_threshold(np.array([1, 1]), np.array([0.2, 0.3]), 0.99)


def test_mean_std_and_format():
    stats = m.mean_std([{"accuracy": 0.9}, {"accuracy": 0.94}], names=("accuracy",))
    assert stats["accuracy"]["mean"] == pytest.approx(0.92)
    assert stats["accuracy"]["std"] == pytest.approx(0.02)
    assert m.format_mean_std(stats["accuracy"]) == "92±2%"


def test_confusion_rows_are_true_classes():
    cm = m.confusion(np.array([0, 0, 1]), np.array([0.9, 0.1, 0.2]))
    assert cm.tolist() == [[1, 1], [0, 1]]


def test_a_metric_undefined_in_a_fold_is_never_averaged_away():
    # nanmean reported the AUC over the folds where it existed as if over all of them, silently
    stats = m.mean_std([{"auc": 0.9}, {"auc": float("nan")}, {"auc": 0.7}], names=("auc",))
    assert np.isnan(stats["auc"]["mean"]) and np.isnan(stats["auc"]["std"])
    assert m.format_mean_std(stats["auc"], percent=False) == "undefined in 1 of 3 folds"
    assert m.format_mean_std(m.mean_std([{"auc": 0.9}, {"auc": 0.7}], names=("auc",))["auc"], percent=False) == "0.80±0.10"


def test_recall_at_precision():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # 0 = meteor
    prob = np.array([0.9, 0.8, 0.7, 0.2, 0.75, 0.3, 0.1, 0.05])
    # thresholds: >=0.8 → 2/2 meteors right (precision 1, recall .5); >=0.7 → 3 of 4 meteors with 1 false alarm
    assert m.recall_at_precision(labels, prob, 1.0) == pytest.approx(0.5)
    assert m.recall_at_precision(labels, prob, 0.75) == pytest.approx(0.75)
    assert m.recall_at_precision(labels, prob, 0.5) == pytest.approx(1.0)
