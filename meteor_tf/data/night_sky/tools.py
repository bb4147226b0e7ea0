"""Library side of the `meteor-dataset` commands: export captures to folders, draw a contact sheet."""

from __future__ import annotations

import os
from typing import Dict, Iterable, List, Mapping, Optional

import numpy as np

from meteor_tf.data.night_sky import render


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def capture_filename(example: Mapping) -> str:
    """`scene<scene_id>__<example_id>_<sub_label>_<kind>.jpg` (`sub_label` an index or a name). The `<scene>__` prefix
    is the folder loader's grouping rule, so captures of one scene (a frame and its crop) stay on one side of every
    split when the export is trained on with --data; without a `scene_id` the prefix is left out."""
    sub = example["sub_label"]
    sub = render.SUB_LABELS[int(sub)] if not isinstance(sub, (str, bytes)) else _text(sub)
    scene = f"scene{int(example['scene_id']):05d}__" if example.get("scene_id") is not None else ""
    return f"{scene}{_text(example['example_id'])}_{sub}_{_text(example['kind'])}.jpg"


def export_captures(examples: Iterable[Mapping], out_dir: str, overwrite: bool = False) -> Dict[str, int]:
    """Write every capture as a JPEG into `out_dir/meteor/` or `out_dir/non_meteor/` (the layout a capture-folder
    source reads). `examples`: dicts with `image` (uint8 H×W×1 or H×W, or JPEG bytes), `label`, `sub_label`,
    `kind`, `example_id`. Refuses to overwrite existing files unless `overwrite`. Returns counts per class."""
    from PIL import Image

    examples = list(examples)
    paths = [os.path.join(out_dir, render.CLASS_NAMES[int(ex["label"])], capture_filename(ex)) for ex in examples]
    if not overwrite:
        existing = [p for p in paths if os.path.exists(p)]
        if existing:
            raise FileExistsError(f"{len(existing)} capture file(s) already exist in {out_dir} (first: {existing[0]});"
                                  " pass overwrite=True (--overwrite) to replace them")
    for name in render.CLASS_NAMES:
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    counts = {name: 0 for name in render.CLASS_NAMES}
    for ex, path in zip(examples, paths):
        img = ex["image"]
        if isinstance(img, (bytes, bytearray)):
            data = bytes(img)  # already JPEG: keep the bytes
        else:
            import io
            a = np.asarray(img, np.uint8)
            a = a[..., 0] if a.ndim == 3 else a
            buf = io.BytesIO()
            Image.fromarray(a).save(buf, format="JPEG", quality=render.JPEG_QUALITY)
            data = buf.getvalue()
        with open(path, "wb") as f:
            f.write(data)
        counts[render.CLASS_NAMES[int(ex["label"])]] += 1
    return counts


def pick_for_sheet(examples: Iterable[Mapping], per_sub_label: int = 4) -> Dict[str, List[Mapping]]:
    """Up to `per_sub_label` examples per sub-label, preferring a mix of kinds (frames and crops)."""
    buckets: Dict[str, Dict[str, List[Mapping]]] = {s: {k: [] for k in render.KINDS} for s in render.SUB_LABELS}
    for ex in examples:
        sub = ex["sub_label"]
        sub = render.SUB_LABELS[int(sub)] if not isinstance(sub, (str, bytes)) else _text(sub)
        kind = _text(ex["kind"])
        if len(buckets[sub][kind]) < per_sub_label:
            buckets[sub][kind].append(ex)
    chosen: Dict[str, List[Mapping]] = {}
    for sub, by_kind in buckets.items():
        # one whole frame, then crops (the majority of the captures since 2.0.0)
        order = [("frame", 1), ("gmn_crop", 1), ("allsky_cutout", 1), ("dslr_crop", 1)]
        picked: List[Mapping] = []
        for kind, k in order:
            picked += by_kind[kind][:k]
        rest = [e for kind in render.KINDS for e in by_kind[kind] if not any(e is p for p in picked)]
        picked += rest[:max(0, per_sub_label - len(picked))]
        if picked:
            chosen[sub] = picked[:per_sub_label]
    return chosen


def make_contact_sheet(examples: Iterable[Mapping], out_path: str, per_sub_label: int = 4, dpi: int = 80) -> str:
    """A grid of examples per sub-label (one row each), labelled with class, sub-label, kind and size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = pick_for_sheet(examples, per_sub_label)
    if not chosen:
        raise ValueError("no examples to draw")
    rows = [s for s in render.SUB_LABELS if s in chosen]
    fig, axes = plt.subplots(len(rows), per_sub_label, figsize=(per_sub_label * 3.2, len(rows) * 2.75),
                             squeeze=False)
    fig.patch.set_facecolor("white")
    for r, sub in enumerate(rows):
        cls = render.CLASS_NAMES[0 if sub in render.METEOR_SUB_LABELS else 1]
        for c in range(per_sub_label):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if c >= len(chosen[sub]):
                continue
            ex = chosen[sub][c]
            img = np.asarray(ex["image"])
            img = img[..., 0] if img.ndim == 3 else img
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="antialiased")
            ax.set_title(f"{_text(ex['kind'])} {img.shape[1]}×{img.shape[0]}  {_text(ex['example_id'])}", fontsize=7)
            if c == 0:
                ax.set_ylabel(f"{sub}\n({cls})", fontsize=9, color="#b00" if cls == "meteor" else "#036")
    fig.suptitle("night_sky: procedural captures per sub-label (label 0 = meteor, red; 1 = non_meteor, blue)",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    plt.close(fig)
    buf.seek(0)
    with Image.open(buf) as im:  # 256-colour palette: a third of the size, same look
        im.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(out_path, optimize=True)
    return out_path


def dataset_examples(ds) -> Iterable[Dict]:
    """Numpy feature dicts from a `load_night_sky` dataset."""
    for ex in ds.as_numpy_iterator():
        yield ex


def limit(examples: Iterable[Mapping], n: Optional[int]) -> Iterable[Mapping]:
    for i, ex in enumerate(examples):
        if n is not None and i >= n:
            return
        yield ex
