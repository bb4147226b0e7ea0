"""Planning the `night_sky` dataset: which scene yields which captures, with exact counts per class and per
sub-label (`sub_label_quotas`, `plan_dataset` -> `ScenePlan`), and the per-scene random generator (`scene_rng`)
that makes a capture depend on (seed, scene_id) only.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Tuple

import numpy as np

from meteor_tf.data.night_sky.labels import (METEOR_SUB_LABELS, NON_METEOR_SUB_LABELS, SCENE_LAYOUTS,
                                             SUB_LABEL_PROPORTIONS)


@dataclasses.dataclass(frozen=True)
class ScenePlan:
    scene_id: int
    label: int
    sub_label: str
    kinds: Tuple[str, ...]
    example_indices: Tuple[int, ...]


def sub_label_quotas(n: int, label: int) -> Dict[str, int]:
    """Exact number of captures per sub-label for `n` captures of class `label` (largest remainder; every
    sub-label gets at least one when `n` allows)."""
    names = METEOR_SUB_LABELS if label == 0 else NON_METEOR_SUB_LABELS
    shares = np.array([SUB_LABEL_PROPORTIONS[s] for s in names])
    shares = shares / shares.sum()
    if n >= len(names):
        base = np.ones(len(names), dtype=int)
        rest = n - len(names)
        raw = shares * n - 1
        raw = np.maximum(raw, 0)
        raw = raw / raw.sum() * rest if raw.sum() > 0 else shares * rest
    else:
        base = np.zeros(len(names), dtype=int)
        rest = n
        raw = shares * n
    q = base + np.floor(raw).astype(int)
    left = n - q.sum()
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    q[order[:left]] += 1
    return {s: int(c) for s, c in zip(names, q)}


def plan_dataset(meteors: int, non_meteors: int, seed: int) -> List[ScenePlan]:
    """The scene plan: exact `meteors` / `non_meteors` captures, grouped into scenes, in a seeded order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 987_654]))
    layouts = [k for k, _ in SCENE_LAYOUTS]
    probs = np.array([p for _, p in SCENE_LAYOUTS])
    probs = probs / probs.sum()
    single = [i for i, k in enumerate(layouts) if len(k) == 1]
    p_single = probs[single] / probs[single].sum()
    scenes: List[Tuple[int, str, Tuple[str, ...]]] = []
    for label, n in ((0, meteors), (1, non_meteors)):
        for sub, q in sub_label_quotas(n, label).items():
            while q > 0:
                i = rng.choice(len(layouts), p=probs)
                if len(layouts[i]) > q:
                    i = single[rng.choice(len(single), p=p_single)]
                scenes.append((label, sub, layouts[i]))
                q -= len(layouts[i])
    order = rng.permutation(len(scenes))
    plans = []
    idx = 0
    for scene_id, j in enumerate(order):
        label, sub, kinds = scenes[j]
        plans.append(ScenePlan(scene_id, label, sub, kinds, tuple(range(idx, idx + len(kinds)))))
        idx += len(kinds)
    return plans


def scene_rng(seed: int, scene_id: int) -> np.random.Generator:
    """Per-scene generator: captures depend on (seed, scene_id) only, not on generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, scene_id, 424_242]))
