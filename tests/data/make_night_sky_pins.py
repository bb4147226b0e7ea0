"""Write the night_sky pin fixture `tests/data/night_sky_pins_<VERSION>.npz` (read by test_night_sky_pins.py).

Run it ONLY when the generator's VERSION (meteor_tf.data.night_sky.builder.VERSION) changes on purpose, i.e. when
the captures are meant to change:

    .venv/bin/python tests/data/make_night_sky_pins.py

then delete the old `night_sky_pins_<old version>.npz` and commit the new one with the VERSION bump. Never rerun it
to make a failing pin test pass without bumping VERSION: the pins exist so that a refactor of the renderer (e.g.
splitting render.py into modules) provably leaves every capture as it was.

What is pinned: every capture of `render.generate_examples(meteors=10, non_meteors=6, seed=3, small=True)` (16
captures, 4x smaller images): its example id, label, sub_label, kind and scene id; its decoded JPEG pixels (under the
example id); the uint8 image `render.render_scene` returned before JPEG encoding (under "<id>__raw"); and the
sha256 of the JPEG bytes and of the raw bytes (shown by the test when pixels differ, never asserted: JPEG bytes and
float sums may differ across CPUs and library builds).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from typing import Dict, List

import numpy as np

PIN_ARGS = dict(meteors=10, non_meteors=6, seed=3, small=True)
HERE = os.path.dirname(os.path.abspath(__file__))


def pin_path(version: str) -> str:
    return os.path.join(HERE, f"night_sky_pins_{version}.npz")


def collect() -> Dict[str, object]:
    """Everything the fixture holds, freshly generated: metadata lists plus {id: decoded pixels} and raw images."""
    from PIL import Image

    from meteor_tf.data.night_sky import builder, render

    sizes = render.size_profile(PIN_ARGS["small"])
    raw: Dict[str, np.ndarray] = {}
    for plan in render.plan_dataset(PIN_ARGS["meteors"], PIN_ARGS["non_meteors"], PIN_ARGS["seed"]):
        images = render.render_scene(plan.sub_label, plan.kinds, render.scene_rng(PIN_ARGS["seed"], plan.scene_id),
                                     sizes)
        for idx, img in zip(plan.example_indices, images):
            raw[render.example_id(idx)] = np.asarray(img, np.uint8)
    ids: List[str] = []
    meta = {"labels": [], "sub_labels": [], "kinds": [], "scene_ids": [], "jpeg_sha256": [], "raw_sha256": []}
    pixels: Dict[str, np.ndarray] = {}
    for eid, ex in render.generate_examples(**PIN_ARGS):
        ids.append(eid)
        meta["labels"].append(int(ex["label"]))
        meta["sub_labels"].append(ex["sub_label"])
        meta["kinds"].append(ex["kind"])
        meta["scene_ids"].append(int(ex["scene_id"]))
        meta["jpeg_sha256"].append(hashlib.sha256(ex["image"]).hexdigest())
        meta["raw_sha256"].append(hashlib.sha256(raw[eid].tobytes()).hexdigest())
        pixels[eid] = np.asarray(Image.open(io.BytesIO(ex["image"])), np.uint8)
    return {"version": str(builder.VERSION), "ids": ids, **meta, "pixels": pixels, "raw": raw}


def save(pins: Dict[str, object], path: str) -> None:
    arrays = {
        "version": np.array(pins["version"]),
        "ids": np.array(pins["ids"]),
        "labels": np.array(pins["labels"], np.int64),
        "sub_labels": np.array(pins["sub_labels"]),
        "kinds": np.array(pins["kinds"]),
        "scene_ids": np.array(pins["scene_ids"], np.int64),
        "jpeg_sha256": np.array(pins["jpeg_sha256"]),
        "raw_sha256": np.array(pins["raw_sha256"]),
    }
    for eid in pins["ids"]:
        arrays[eid] = pins["pixels"][eid]
        arrays[f"{eid}__raw"] = pins["raw"][eid]
    np.savez_compressed(path, **arrays)


def main() -> int:
    pins = collect()
    path = pin_path(pins["version"])
    save(pins, path)
    print(f"wrote {path}: {len(pins['ids'])} captures of night_sky {pins['version']}, "
          f"{os.path.getsize(path) / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
