"""The experiment's examples in memory, from the embedded dataset or a capture folder, through one
preprocessing path.

`load_examples(config)` gives every example as the model sees it (`preprocess.to_model_input`: float32 (S, S,
1), 0..255), with labels, stable ids (sorted: the order never depends on the file system or the machine) and
group ids for the folds. Decoding runs once, in parallel (tf.data, AUTOTUNE); the folds then slice these
arrays.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from meteor_tf import CLASS_NAMES
from meteor_tf.data import DataLayoutError, folder, preprocess

EMBEDDED = "embedded"
EMBEDDED_SEED = 0
"""The embedded dataset is generated with this seed whatever the training seed: changing `--seed` reshuffles
the training, not the data, so results across seeds compare on the same pictures."""


@dataclasses.dataclass
class Examples:
    """Examples in memory, sorted by id. `images` are model inputs: float32 (N, S, S, 1), values 0..255."""

    images: np.ndarray
    labels: np.ndarray  # int32 (N,), 0 = meteor (meteor_tf.CLASS_NAMES)
    ids: np.ndarray  # str (N,): relative path (folder) or the embedded example_id
    groups: np.ndarray  # int64 (N,): examples of one group (scene) stay on one side of every split
    sub_labels: List[str]  # the embedded dataset's sub-class names ("" for folders)
    skipped: List[Tuple[str, str]]  # (path, reason) of files left out
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> "Examples":
        """The examples at `indices` (e.g. one fold); `skipped` and `source` are kept as they are."""
        indices = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(self, images=self.images[indices], labels=self.labels[indices],
                                   ids=self.ids[indices], groups=self.groups[indices],
                                   sub_labels=[self.sub_labels[i] for i in indices])

    def class_counts(self) -> dict:
        """{class name: count}."""
        return {name: int(np.sum(self.labels == k)) for k, name in enumerate(CLASS_NAMES)}


def load_examples(config, image_size: Optional[int] = None) -> Examples:
    """All examples of a `DataConfig` (`data`: "embedded" or a folder) at `image_size` by its input rule, in memory,
    by id. `config` may be an ExperimentConfig: its `dataset` part, at its model's image size."""
    from meteor_tf.config import DataConfig, part_of

    if image_size is None:
        if isinstance(config, DataConfig):
            raise ValueError("load_examples(DataConfig) needs the image_size")
        image_size = config.model.image_size
    data = part_of(config, DataConfig)
    if data.data == EMBEDDED:
        examples = load_embedded(image_size, data.embedded_meteors, data.embedded_non_meteors,
                                 data_dir=data.tfds_data_dir, rule=data.input_rule)
    else:
        examples = load_folder(data.data, image_size, class_dirs=data.class_dirs, rule=data.input_rule)
    logging.info("Loaded %d examples from %s (%s), %d skipped", len(examples), examples.source,
                 examples.class_counts(), len(examples.skipped))
    return examples


def load_folder(root, image_size: int, class_dirs=("meteor", "non_meteor"),
                max_pixels: int = folder.DEFAULT_MAX_PIXELS, rule: str = preprocess.DEFAULT_INPUT_RULE) -> Examples:
    """A capture folder (see `meteor_tf.data.folder` for the layout, the formats and the bad-file rules)."""
    scan = folder.scan_folder(root, class_dirs=class_dirs, max_pixels=max_pixels)
    logging.info("Decoding %d images from %s", len(scan.paths), scan.root)
    images, kept, skipped = folder.load_images(scan, image_size, rule=rule)
    for label, class_dir in enumerate(class_dirs):
        if not np.any(np.asarray(scan.labels, dtype=np.int64)[kept] == label):
            raise DataLayoutError(f"No image of class {class_dir!r} in {scan.root} could be decoded "
                             f"(see the warnings above).\n{folder.LAYOUT_HELP}")
    ids = np.array(scan.ids)[kept]
    return Examples(images=images,
                    labels=np.asarray(scan.labels, dtype=np.int32)[kept],
                    ids=ids,
                    groups=_group_ids(np.array(scan.scenes)[kept]),
                    sub_labels=[""] * len(ids),
                    skipped=sorted(scan.skipped + skipped),
                    source=scan.root)


def load_embedded(image_size: int, meteors: int, non_meteors: int, data_dir=None,
                  rule: str = preprocess.DEFAULT_INPUT_RULE) -> Examples:
    """The embedded synthetic night-sky dataset (`meteor_tf.data.night_sky`), made with `EMBEDDED_SEED`."""
    night_sky = _night_sky_module()
    ds = night_sky.load_night_sky(data_dir=data_dir, meteors=meteors, non_meteors=non_meteors,
                                  seed=EMBEDDED_SEED)
    keys = ("label", "sub_label", "scene_id", "example_id")
    ds = ds.map(lambda ex: {"image": preprocess.to_model_input(ex["image"], image_size, rule),
                            **{key: ex[key] for key in keys}},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    parts = {key: [] for key in ("image", "label", "sub_label", "scene_id", "example_id")}
    for batch in ds.batch(256).as_numpy_iterator():
        for key in parts:
            parts[key].append(batch[key])
    columns = {key: np.concatenate(values) if values else np.zeros((0,)) for key, values in parts.items()}
    if not len(columns["label"]):
        raise DataLayoutError(f"The embedded dataset is empty (meteors={meteors}, non_meteors={non_meteors})")
    ids = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in columns["example_id"]])
    order = np.argsort(ids, kind="stable")
    names = _sub_label_names(night_sky, data_dir)
    return Examples(images=columns["image"][order].astype(np.float32, copy=False),
                    labels=columns["label"][order].astype(np.int32),
                    ids=ids[order],
                    groups=_group_ids(columns["scene_id"][order]),
                    sub_labels=[_name(names, k) for k in columns["sub_label"][order]],
                    skipped=[],
                    source=f"embedded night_sky (meteors={meteors}, non_meteors={non_meteors}, "
                           f"seed={EMBEDDED_SEED})")


def _night_sky_module():
    """The embedded dataset's module, imported late: importing it registers a tfds builder."""
    from meteor_tf.data import night_sky

    return night_sky


def _sub_label_names(night_sky, data_dir):
    """The sub_label ClassLabel's names, from the builder's info (None if it cannot say)."""
    try:
        return list(night_sky.NightSky(data_dir=data_dir).info.features["sub_label"].names)
    except Exception as e:  # noqa: BLE001 — names are for reports; numbers will do
        logging.warning("Could not read the night_sky sub_label names (%s); using their numbers", e)
        return None


def _name(names, index) -> str:
    return names[int(index)] if names is not None and 0 <= int(index) < len(names) else str(int(index))


def _group_ids(keys: np.ndarray) -> np.ndarray:
    """Dense int64 group ids, numbered in sorted key order (so the same keys always get the same numbers)."""
    if not len(keys):
        return np.zeros((0,), np.int64)
    return np.unique(keys, return_inverse=True)[1].astype(np.int64).reshape(-1)
