import numpy as np
import pytest

from meteor_tf.data import folds


def toy(n=200, seed=0):
    """Labels ~60/40 like the paper's data; groups (scenes) of 1-4 examples of mixed classes; string ids."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(np.int32)
    groups = np.repeat(np.arange(n), rng.integers(1, 5, n))[:n]
    ids = np.array([f"img{i:04d}" for i in range(n)])
    return labels, groups, ids


def assert_grouped(train, test, groups):
    assert not set(groups[train]) & set(groups[test])


def test_folds_are_grouped_stratified_and_cover_everything_once():
    labels, groups, ids = toy()
    splits = folds.stratified_group_folds(labels, groups, n_folds=10, seed=42, ids=ids)
    assert len(splits) == 10
    tested = np.concatenate([test for _, test in splits])
    assert sorted(tested) == list(range(len(labels)))  # every example tested exactly once
    for train, test in splits:
        assert_grouped(train, test, groups)
        assert len(train) + len(test) == len(labels)
        assert abs(labels[test].mean() - labels.mean()) < 0.12


def test_folds_are_stable_for_a_seed_and_any_input_order():
    labels, groups, ids = toy()
    first = folds.stratified_group_folds(labels, groups, seed=7, ids=ids)
    again = folds.stratified_group_folds(labels, groups, seed=7, ids=ids)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(first, again))
    perm = np.random.default_rng(1).permutation(len(labels))
    shuffled = folds.stratified_group_folds(labels[perm], groups[perm], seed=7, ids=ids[perm])
    as_ids = lambda splits, ids: [sorted(ids[test]) for _, test in splits]  # noqa: E731
    assert as_ids(shuffled, ids[perm]) == as_ids(first, ids)
    other_seed = folds.stratified_group_folds(labels, groups, seed=8, ids=ids)
    assert as_ids(other_seed, ids) != as_ids(first, ids)


def test_too_few_groups_is_a_clear_error():
    with pytest.raises(ValueError, match="groups"):
        folds.stratified_group_folds([0, 1, 0, 1], [0, 0, 1, 1], n_folds=3)


def test_holdout_split():
    labels, groups, ids = toy()
    train, test = folds.holdout_split(labels, groups, fraction=0.2, seed=3, ids=ids)
    assert_grouped(train, test, groups)
    assert sorted(np.concatenate([train, test])) == list(range(len(labels)))
    assert 0.12 < len(test) / len(labels) < 0.28
    assert abs(labels[test].mean() - labels.mean()) < 0.1


def test_inner_validation_split_stays_inside_the_training_fold():
    labels, groups, ids = toy()
    train, test = folds.stratified_group_folds(labels, groups, seed=42, ids=ids)[0]
    fit, val = folds.inner_validation_split(train, labels, groups, fraction=0.15, seed=42, ids=ids)
    assert set(fit) | set(val) == set(train) and not set(fit) & set(val)
    assert not set(val) & set(test)
    assert_grouped(fit, val, groups)
    assert 0.08 < len(val) / len(train) < 0.22
    assert abs(labels[val].mean() - labels[train].mean()) < 0.12
    again = folds.inner_validation_split(train, labels, groups, fraction=0.15, seed=42, ids=ids)
    assert np.array_equal(again[1], val)


def test_a_class_with_fewer_scenes_than_folds_is_a_clear_error():
    """One meteor among 20 captures used to train and report "48±48%" with NaN AUCs dropped from the mean."""
    from meteor_tf.data.folds import TooFewExamplesError

    labels = np.array([0] * 2 + [1] * 20)
    groups = np.arange(22)
    with pytest.raises(TooFewExamplesError, match=r"class 0 \(meteor\) has 2 capture\(s\).*at least 3"):
        folds.stratified_group_folds(labels, groups, n_folds=3)
    with pytest.raises(TooFewExamplesError, match="only one class"):
        folds.stratified_group_folds(np.ones(10, int), np.arange(10), n_folds=3)
    assert len(folds.stratified_group_folds(np.array([0] * 3 + [1] * 20), np.arange(23), n_folds=3)) == 3
