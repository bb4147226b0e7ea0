"""How far a capture's metadata alone tells the classes apart: a shortcut check for a labelled folder.

A filter must learn the event, not the file. This scores classifiers that see only width, height and aspect ratio
(and, as a second row, also the JPEG bytes per pixel, which depends on the content as well as on the compression)
with out-of-fold AUC: stratified 5-fold CV, grouped by scene for exported night_sky folders (file names
`scene<id>__...`), by file otherwise. Near 0.5 is what a dataset without a size shortcut gives.

    python benchmarks/metadata_only.py --data=/work/night_sky_seed1         # meteor-dataset export --seed=1
    python benchmarks/metadata_only.py --data=../shared/real_captures
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from meteor_tf.data.night_sky import render  # noqa: E402 (after the sys.path line)

SCENE = re.compile(r"scene(\d+)__")
KIND = re.compile(r"_(" + "|".join(render.KINDS) + r")\.[a-z]+$")


def read_folder(data: Path):
    """(width, height, bytes, is_meteor, group, kind) per image of data/{meteor,non_meteor}/ (headers only)."""
    from PIL import Image

    rows = []
    for cls in ("meteor", "non_meteor"):
        folder = data / cls
        if not folder.is_dir():
            raise SystemExit(f"--data={data}: no {cls}/ folder (expected meteor/ and non_meteor/)")
        for name in sorted(os.listdir(folder)):
            path = folder / name
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except OSError:
                continue
            scene, kind = SCENE.search(name), KIND.search(name)
            rows.append((w, h, path.stat().st_size, cls == "meteor", f"s{scene[1]}" if scene else f"{cls}/{name}",
                         kind[1] if kind else "-"))
    return rows


def main(argv=None) -> int:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, type=Path, help="a folder with meteor/ and non_meteor/")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = read_folder(args.data)
    w, h, size = (np.array([r[i] for r in rows], float) for i in range(3))
    y = np.array([r[3] for r in rows])
    groups = np.array([r[4] for r in rows])
    kinds = np.array([r[5] for r in rows])
    print(f"{args.data}: {y.sum()} meteor, {(~y).sum()} non_meteor images (majority {max(y.mean(), 1 - y.mean()):.3f})")
    cv = StratifiedGroupKFold(5, shuffle=True, random_state=args.seed)
    for name, x in (("width, height, aspect", np.stack([w, h, w / h], 1)),
                    ("+ JPEG bytes per pixel", np.stack([w, h, w / h, size / (w * h)], 1))):
        for cname, clf in (("logistic regression", make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))),
                           ("gradient boosting", HistGradientBoostingClassifier(max_depth=3, random_state=0))):
            prob = cross_val_predict(clf, x, y.astype(int), cv=cv, groups=groups, method="predict_proba")[:, 1]
            print(f"  {name:24s} {cname:20s} AUC {roc_auc_score(y, prob):.3f}  accuracy {((prob > 0.5) == y).mean():.3f}")
    for kind in np.unique(kinds):
        s = kinds == kind
        print(f"  {kind}: median width meteor {np.median(w[s & y]):.0f} / non-meteor {np.median(w[s & ~y]):.0f} px")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
