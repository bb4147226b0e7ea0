"""Pixel-statistics baseline: how far global brightness statistics alone get on a dataset.

Features per image: a 32-bin intensity histogram over 0..255 (fractions of the image's pixels, log-scaled) plus
global statistics (mean, std, percentiles, saturated fraction). Classifier: scikit-learn
`make_pipeline(StandardScaler(), LogisticRegression())`, scored by stratified group k-fold (groups = scene ids, so
a frame and its crop never sit on both sides). A dataset whose classes this separates well is too easy.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

HIST_BINS = 32
PERCENTILES = (1, 5, 25, 50, 75, 95, 99, 99.9)
FEATURE_NAMES = tuple([f"hist_{i}" for i in range(HIST_BINS)] + ["mean", "std"] +
                      [f"p{p:g}" for p in PERCENTILES] + ["saturated"])


@dataclasses.dataclass(frozen=True)
class BaselineResult:
    mean: float  # mean fold accuracy
    std: float  # std of the fold accuracies
    fold_accuracies: tuple
    majority: float  # accuracy of always answering the larger class
    n: int

    def __str__(self) -> str:
        return (f"pixel-statistics baseline: accuracy {self.mean:.3f} ± {self.std:.3f} over {len(self.fold_accuracies)}"
                f" folds (n={self.n}; majority class {self.majority:.3f})")


def pixel_features(images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, F) float32 features from uint8 grayscale images of any sizes (H×W or H×W×1)."""
    feats = []
    for img in images:
        a = np.asarray(img)
        a = a.reshape(a.shape[0], a.shape[1], -1)[..., 0] if a.ndim == 3 else a
        a = a.astype(np.float32).ravel()
        hist = np.bincount((a.astype(np.int32) * HIST_BINS) // 256, minlength=HIST_BINS)[:HIST_BINS] / a.size
        feats.append(np.concatenate([
            np.log10(hist + 1e-5),
            [a.mean(), a.std()],
            np.percentile(a, PERCENTILES),
            [np.log10((a >= 250).mean() + 1e-5)],
        ]))
    return np.asarray(feats, np.float32)


def evaluate_baseline(images: Optional[Sequence[np.ndarray]] = None, labels: Sequence[int] = (),
                      groups: Optional[Sequence[int]] = None, folds: int = 10, seed: int = 0,
                      features: Optional[np.ndarray] = None, max_iter: int = 2000) -> BaselineResult:
    """Mean ± std accuracy of the pixel-statistics classifier over stratified group folds (scene ids as groups;
    `groups=None`: every image its own group). Pass `features` to skip feature extraction."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = pixel_features(images) if features is None else np.asarray(features, np.float32)
    y = np.asarray(labels, np.int64)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    if len(X) != len(y) or len(g) != len(y):
        raise ValueError(f"images/features ({len(X)}), labels ({len(y)}) and groups ({len(g)}) differ in length")
    counts = np.bincount(y, minlength=2)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2 or (counts > 0).sum() < 2:
        raise ValueError(f"need both classes with at least 2 examples each for cross-validation, got {counts}")
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    accs = []
    for train, test in cv.split(X, y, g):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
        clf.fit(X[train], y[train])
        accs.append(float((clf.predict(X[test]) == y[test]).mean()))
    return BaselineResult(mean=float(np.mean(accs)), std=float(np.std(accs)), fold_accuracies=tuple(accs),
                          majority=float(counts.max() / counts.sum()), n=int(len(y)))


def baseline_on_night_sky(data_dir: Optional[str] = None, meteors: int = 1000, non_meteors: int = 660,
                          seed: int = 0, small: bool = False, folds: int = 10) -> BaselineResult:
    """The baseline on the embedded `night_sky` dataset (built into `data_dir` first if needed)."""
    from meteor_tf.data.night_sky import load_night_sky

    ds = load_night_sky(data_dir, meteors=meteors, non_meteors=non_meteors, seed=seed, small=small)
    images, labels, groups = [], [], []
    for ex in ds.as_numpy_iterator():
        images.append(ex["image"])
        labels.append(int(ex["label"]))
        groups.append(int(ex["scene_id"]))
    return evaluate_baseline(images, labels, groups, folds=folds, seed=seed)
