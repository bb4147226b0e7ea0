"""Stratified, grouped splits (scikit-learn's StratifiedGroupKFold): the paper's 10-fold cross validation, the
inner validation split of each training fold, and a single hold-out split.

- Stratified: every part keeps roughly the meteor / non-meteor proportion of the whole (paper section 4).
- Grouped: the examples of one group (a scene: frames of one capture) never sit on both sides of a split, so a
  model is not tested on near-copies of its training pictures.
- Stable: pass the examples' `ids` and the splits are computed in id order, so the same seed gives the same
  folds whatever order the examples arrived in, at every depth and on every machine.

Every function returns sorted int64 index arrays into the arrays given.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from meteor_tf.data import DataLayoutError

Split = Tuple[np.ndarray, np.ndarray]


class TooFewExamplesError(DataLayoutError):
    """A class has fewer examples (scenes) than a split needs: every fold must hold some of each class."""


def _check_per_class(labels, groups, n_splits: int, what: str) -> None:
    for label in np.unique(labels):
        n = len(np.unique(groups[labels == label]))
        if n < n_splits:
            raise TooFewExamplesError(
                f"class {int(label)} ({'meteor' if label == 0 else 'non_meteor'}) has {n} capture(s) (scenes) but "
                f"{what} needs at least {n_splits} of each class: add captures of that class or use fewer folds / a "
                "larger --val_fraction")


def stratified_group_folds(labels, groups, n_folds: int = 10, seed: int = 42, ids=None) -> List[Split]:
    """`n_folds` (train_idx, test_idx) pairs; every example is in exactly one test fold."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    n_groups = len(np.unique(groups))
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds} (use holdout_split for a single split)")
    if n_groups < n_folds:
        raise ValueError(f"Cannot make {n_folds} folds from {n_groups} groups (scenes): "
                         "use fewer folds or more data")
    if len(np.unique(labels)) < 2:
        raise TooFewExamplesError(f"only one class in the data ({int(labels[0]) if len(labels) else 'none'}): a "
                                  "meteor filter needs captures of both classes")
    _check_per_class(labels, groups, n_folds, f"a {n_folds}-way split (--folds, or the inner validation split of "
                                              "--val_fraction / the hold-out of --holdout_fraction)")
    order = _id_order(ids, len(labels))
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(np.sort(order[train]), np.sort(order[test]))
            for train, test in splitter.split(np.zeros(len(labels)), labels[order], groups[order])]


def holdout_split(labels, groups, fraction: float = 0.2, seed: int = 42, ids=None) -> Split:
    """(train_idx, test_idx) with about `fraction` of the examples (and of each class) in the test part.

    The fraction is met as 1/k of the data for k = round(1/fraction) (0.2 → 1/5, 0.15 → 1/7 ≈ 0.143): the
    first fold of a k-fold stratified group split, which is what keeps the split grouped and stratified at
    once.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    n_splits = max(2, int(round(1.0 / fraction)))
    return stratified_group_folds(labels, groups, n_folds=n_splits, seed=seed, ids=ids)[0]


def inner_validation_split(train_idx, labels, groups, fraction: float = 0.15, seed: int = 42,
                           ids=None) -> Split:
    """Split a training fold into (fit_idx, val_idx), grouped and stratified; both index the full arrays.

    The validation part picks the learning rate (LR range test), the checkpoint and the decision threshold, so
    the test fold stays untouched until the end.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    sub_ids = None if ids is None else np.asarray(ids)[train_idx]
    fit, val = holdout_split(np.asarray(labels)[train_idx], np.asarray(groups)[train_idx], fraction=fraction,
                             seed=seed, ids=sub_ids)
    return np.sort(train_idx[fit]), np.sort(train_idx[val])


def _id_order(ids: Optional[np.ndarray], n: int) -> np.ndarray:
    """Positions in id order (identity when no ids are given: the caller's order is then taken as stable)."""
    if ids is None:
        return np.arange(n, dtype=np.int64)
    ids = np.asarray(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} labels")
    if len(np.unique(ids)) != n:
        raise ValueError("ids must be unique")
    return np.argsort(ids, kind="stable").astype(np.int64)
