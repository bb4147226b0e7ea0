"""Score a model on a labelled folder of real captures (`meteor/`, `non_meteor/`, optional `manifest.csv`).

What a station operator asks first: does the filter work on my camera? `evaluate_folder` answers with the figures
that matter for a filter that must not lose meteors: accuracy, meteor recall and false alarms at the model's own
threshold and at 0.5, ROC AUC, the same on centre-square crops of each capture (a detector's crop is what many
archives keep), per source (camera / archive) recall or false-alarm rate with counts, and the AUC of a rule that sees
only the image's width, height and aspect ratio — a real filter must beat it by far: in a folder where the meteors
are all video frames and the non-meteors crops, size alone can separate the classes.

Every capture goes through `meteor_tf.serving.predict.classify_folder`, the code path of `meteor-predict`.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from meteor_tf import CLASS_NAMES

MANIFEST = "manifest.csv"


def read_manifest(data_dir: Path) -> Dict[str, dict]:
    """`file` (relative, "/"-separated) → its manifest row; {} when there is no manifest."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "file" not in rows[0]:
        raise ValueError(f"{path}: a manifest needs a 'file' column (file,label,label_strength,source)")
    return {row["file"].replace(os.sep, "/"): row for row in rows}


def _sizes(paths: Sequence[str]) -> np.ndarray:
    from PIL import Image

    out = []
    for p in paths:
        try:
            with Image.open(p) as im:
                out.append(im.size)  # (width, height), header only
        except OSError:
            out.append((0, 0))
    return np.asarray(out, np.float64)


def _centre_crops(paths: Sequence[str], root: Path, out_root: Path) -> None:
    from PIL import Image

    for p in paths:
        rel = Path(p).relative_to(root)
        dst = (out_root / rel).with_suffix(".png")
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            with Image.open(p) as im:
                w, h = im.size
                s = min(w, h)
                im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).save(dst)
        except OSError:
            continue


def rates(y_meteor: np.ndarray, prob: np.ndarray, threshold: float) -> dict:
    """Accuracy, meteor recall, false alarms (count and share of non-meteors) at `threshold`."""
    called = prob >= threshold
    meteors, others = y_meteor.sum(), (~y_meteor).sum()
    tp, fp = int((called & y_meteor).sum()), int((called & ~y_meteor).sum())
    return {"threshold": float(threshold), "accuracy": float(np.mean(called == y_meteor)),
            "meteor_recall": tp / meteors if meteors else float("nan"), "meteors_found": tp, "meteors": int(meteors),
            "false_alarms": fp, "non_meteors": int(others),
            "false_alarm_rate": fp / others if others else float("nan")}


def auc(y_meteor: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(set(y_meteor.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(y_meteor, score))


def size_rule_auc(sizes: np.ndarray, y_meteor: np.ndarray, seed: int = 0) -> float:
    """Out-of-fold AUC of a logistic regression on width, height and aspect ratio (5 stratified folds)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    w, h = sizes[:, 0], np.maximum(sizes[:, 1], 1)
    x = np.stack([w, h, w / h], axis=1)
    folds = min(5, int(y_meteor.sum()), int((~y_meteor).sum()))
    if folds < 2:
        return float("nan")
    prob = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression()), x, y_meteor.astype(int),
                             cv=StratifiedKFold(folds, shuffle=True, random_state=seed), method="predict_proba")[:, 1]
    return auc(y_meteor, prob)


def _classify(backend, root: Path, class_dirs, batch_size: int, progress: bool):
    """(absolute paths, relative paths, is_meteor, probability or nan, error) over both class folders."""
    from meteor_tf.serving.predict import classify_folder

    paths, rels, labels, probs, errors = [], [], [], [], []
    for k, name in enumerate(class_dirs):
        class_root = root / name
        if not class_root.is_dir():
            raise FileNotFoundError(f"{class_root} does not exist: --data needs {class_dirs[0]}/ and {class_dirs[1]}/ "
                                    "subfolders of labelled captures")
        summary = classify_folder(backend, class_root, batch_size=batch_size, progress=progress)
        for r in summary.results:
            rels.append(f"{name}/{r.path}")
            paths.append(str(class_root / r.path))
            labels.append(k == 0)
            probs.append(np.nan if r.meteor_probability is None else r.meteor_probability)
            errors.append(r.error)
    return paths, rels, np.asarray(labels, bool), np.asarray(probs, np.float64), errors


def evaluate_folder(backend, data_dir, class_dirs: Sequence[str] = CLASS_NAMES, threshold: Optional[float] = None,
                    batch_size: int = 32, crops: bool = True, progress: bool = True) -> dict:
    """All the figures of the module docstring for `backend` on `data_dir`; also the per-file rows (`files`)."""
    root = Path(data_dir).resolve()
    manifest = read_manifest(root)
    paths, rels, y, prob, errors = _classify(backend, root, class_dirs, batch_size, progress)
    if not len(rels):
        raise FileNotFoundError(f"no images under {root}/{class_dirs[0]} or {root}/{class_dirs[1]}")
    ok = ~np.isnan(prob)
    model_threshold = threshold if threshold is not None else backend.threshold
    result = {"data": str(root), "model": backend.describe(), "images": len(rels), "scored": int(ok.sum()),
              "errors": [{"file": f, "error": e} for f, e in zip(rels, errors) if e],
              "threshold_source": "--threshold" if threshold is not None else "the model's recall-first threshold"}
    yo, po = y[ok], prob[ok]
    result["whole"] = {"auc": auc(yo, po), "at_threshold": rates(yo, po, model_threshold) if model_threshold
                       is not None else None, "at_0.5": rates(yo, po, 0.5)}
    sizes = _sizes(paths)
    result["size_rule_auc"] = size_rule_auc(sizes[ok], yo)
    crop_prob = None
    if crops:
        with tempfile.TemporaryDirectory(prefix="meteor-evaluate-crops-") as tmp:
            _centre_crops([p for p, good in zip(paths, ok) if good], root, Path(tmp))
            _, crop_rels, cy, cprob, _ = _classify(backend, Path(tmp), class_dirs, batch_size, progress)
        by_rel = {Path(r).with_suffix("").as_posix(): p for r, p in zip(crop_rels, cprob)}
        crop_prob = np.asarray([by_rel.get(Path(r).with_suffix("").as_posix(), np.nan) for r in rels])
        cok = ok & ~np.isnan(crop_prob)
        result["centre_crops"] = {"auc": auc(y[cok], crop_prob[cok]),
                                  "at_threshold": rates(y[cok], crop_prob[cok], model_threshold)
                                  if model_threshold is not None else None,
                                  "at_0.5": rates(y[cok], crop_prob[cok], 0.5)}
    sources: Dict[str, List[int]] = {}
    for i, rel in enumerate(rels):
        sources.setdefault(manifest.get(rel, {}).get("source", "(no manifest entry)" if manifest else "all"), []).append(i)
    t = model_threshold if model_threshold is not None else 0.5
    per_source = {}
    for source, idx in sorted(sources.items()):
        idx = np.asarray([i for i in idx if ok[i]], int)
        if not len(idx):
            continue
        r = rates(y[idx], prob[idx], t)
        per_source[source] = {"images": int(len(idx)),
                              **{k: r[k] for k in ("meteors", "meteors_found", "non_meteors", "false_alarms")}}
    result["per_source"] = {"threshold": float(t), "sources": per_source}
    result["files"] = [{"file": r, "label": CLASS_NAMES[0] if m else CLASS_NAMES[1],
                        "meteor_probability": None if np.isnan(p) else float(p),
                        "centre_crop_probability": None if crop_prob is None or np.isnan(crop_prob[i])
                        else float(crop_prob[i]), "width": int(sizes[i, 0]), "height": int(sizes[i, 1]),
                        "source": manifest.get(r, {}).get("source"), "error": errors[i]}
                       for i, (r, m, p) in enumerate(zip(rels, y, prob))]
    return result


def worst_misses(result: dict, n: int = 8) -> List[dict]:
    """The meteors scored lowest and the non-meteors scored highest (n each)."""
    scored = [f for f in result["files"] if f["meteor_probability"] is not None]
    meteors = sorted((f for f in scored if f["label"] == CLASS_NAMES[0]), key=lambda f: f["meteor_probability"])
    others = sorted((f for f in scored if f["label"] != CLASS_NAMES[0]), key=lambda f: -f["meteor_probability"])
    return meteors[:n] + others[:n]


def misses_sheet(result: dict, out_png: Path, n: int = 8) -> Path:
    """A contact sheet (PNG) of `worst_misses` with their probabilities. Real pixels: write it outside the repo."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    misses = worst_misses(result, n)
    cols = max(1, min(n, 8))
    rows = max(1, int(np.ceil(len(misses) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, f in zip(axes.ravel(), misses):
        with Image.open(Path(result["data"]) / f["file"]) as im:
            ax.imshow(np.asarray(im.convert("L")), cmap="gray")
        ax.set_title(f"{f['label']}\np={f['meteor_probability']:.3f}\n{Path(f['file']).name[:28]}", fontsize=6)
    fig.suptitle("worst misses: lowest-scored meteors, highest-scored non-meteors", fontsize=8)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out_png


def markdown(result: dict) -> str:
    """The report a person reads."""
    def row(name, part):
        cells = []
        for key in ("at_threshold", "at_0.5"):
            r = part.get(key)
            cells.append("–" if r is None else f"{r['accuracy']:.3f} | {r['meteors_found']}/{r['meteors']} | "
                         f"{r['false_alarms']}/{r['non_meteors']}")
        t = part["at_threshold"]["threshold"] if part.get("at_threshold") else float("nan")
        return f"| {name} | {part['auc']:.3f} | {t:.3f} | {cells[0]} | {cells[1]} |"

    lines = [f"# {result['model']} on {result['data']}", "",
             f"{result['scored']} of {result['images']} images scored ({len(result['errors'])} unreadable); "
             f"threshold: {result['threshold_source']}.", "",
             "| input | AUC | threshold | accuracy | meteors found | false alarms | accuracy @0.5 | meteors found @0.5 "
             "| false alarms @0.5 |", "|---|---|---|---|---|---|---|---|---|", row("whole capture", result["whole"])]
    if "centre_crops" in result:
        lines.append(row("centre-square crop", result["centre_crops"]))
    lines += ["", f"Size/aspect-only rule (logistic regression on width, height, aspect; 5-fold): AUC "
              f"{result['size_rule_auc']:.3f}. A filter must beat it by far.", "",
              f"Per source at threshold {result['per_source']['threshold']:.3f}:", "",
              "| source | images | meteors found | false alarms |", "|---|---|---|---|"]
    for source, r in result["per_source"]["sources"].items():
        found = f"{r['meteors_found']}/{r['meteors']}" if r["meteors"] else "–"
        alarms = f"{r['false_alarms']}/{r['non_meteors']}" if r["non_meteors"] else "–"
        lines.append(f"| {source} | {r['images']} | {found} | {alarms} |")
    lines += ["", "Worst misses (file, meteor probability):", ""]
    lines += [f"- {f['file']} ({f['label']}): {f['meteor_probability']:.3f}" for f in worst_misses(result)]
    return "\n".join(lines) + "\n"
