"""A capture folder as a dataset: one subfolder per class, images found recursively.

    DATA/meteor/**/*.jpg        label 0 (the first of `class_dirs`)
    DATA/non_meteor/**/*.jpg    label 1

Formats: JPEG, PNG, BMP, GIF, TIFF; 8- or 16-bit; gray, gray+alpha, RGB, RGBA; any size between `MIN_SIDE`
pixels a side and `max_pixels` in all. TensorFlow decodes JPEG/PNG/BMP/GIF (the same ops the serving signature
runs); TIFF, and anything TensorFlow refuses, goes to Pillow, and then through the same
`preprocess.to_model_input`.

Bad files (empty, not an image, truncated, unreadable, too small, too large) are skipped: one warning per
file, and a `(path, reason)` entry in `skipped` for the run's report. The rest loads.

Ids and groups:
- An example's id is its path relative to DATA, with "/" separators (stable across machines).
- Its group (kept on one side of every fold split) is the scene in its file name when the name reads
  `<scene>__<anything>.<ext>` (e.g. `cam1_20240812_0312__a.jpg` and `cam1_20240812_0312__b.png` share the
  scene `cam1_20240812_0312`, whichever class folder or subfolder they are in); otherwise the file is its own
  group.
"""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image, UnidentifiedImageError

from meteor_tf.data import DataLayoutError, DataNotFoundError

from meteor_tf.data import preprocess

DEFAULT_MAX_PIXELS = 50_000_000
"""Images above this many pixels are refused before decoding (a 50 MP frame is ~50 MB as 8-bit gray; far
bigger than any meteor camera frame, small enough that a stray panorama or a decompression bomb cannot exhaust
memory). Pillow refuses above ~179 MP on its own, whatever this is."""
MIN_SIDE = 8
"""Images narrower or lower than this many pixels are refused: nothing of a streak is left in them."""
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff")
TF_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "GIF")  # Pillow's names of the formats tf.io.decode_image reads
PIL_FORMATS = ("TIFF",)
SCENE_SEPARATOR = "__"
LAYOUT_HELP = ("Expected layout: one subfolder per class, images found recursively, e.g.\n"
               "    DATA/meteor/*.jpg\n"
               "    DATA/non_meteor/*.jpg\n"
               "Other subfolder names: --class_dirs=METEOR_DIR,NON_METEOR_DIR (meteor class first).")

Skipped = List[Tuple[str, str]]


@dataclasses.dataclass
class FolderScan:
    """The images found under a folder, in id order, checked from their headers (nothing decoded yet)."""

    root: str
    paths: List[str]  # absolute paths
    ids: List[str]  # paths relative to root, "/"-separated, sorted
    labels: List[int]  # index into class_dirs
    scenes: List[str]  # group key (see the module docstring)
    formats: List[str]  # Pillow's format name: decides TF or Pillow decoding
    skipped: Skipped  # (path relative to root, reason)


def scan_folder(root, class_dirs: Sequence[str] = ("meteor", "non_meteor"),
                max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE) -> FolderScan:
    """Find and check the images of every class folder under `root`.

    Raises DataNotFoundError (a FileNotFoundError) when `root` or a class folder is missing, DataLayoutError
    (a ValueError) when a class has no usable image; both messages show the expected layout. Bad files are logged and listed in `skipped`.
    """
    root = os.path.abspath(os.fspath(root))
    _check_layout(root, class_dirs)
    scan = FolderScan(root, [], [], [], [], [], [])
    for label, class_dir in enumerate(class_dirs):
        found = 0
        for path in image_files(os.path.join(root, class_dir)):
            example_id = os.path.relpath(path, root).replace(os.sep, "/")
            fmt, reason = check_image_file(path, max_pixels=max_pixels, min_side=min_side)
            if reason:
                _skip(scan.skipped, root, example_id, reason)
                continue
            scan.paths.append(path)
            scan.ids.append(example_id)
            scan.labels.append(label)
            scan.scenes.append(scene_of(example_id))
            scan.formats.append(fmt)
            found += 1
        if not found:
            bad = sum(p.startswith(class_dir + "/") for p, _ in scan.skipped)
            raise DataLayoutError(f"No usable image in {os.path.join(root, class_dir)} (class {class_dir!r}: "
                             f"{bad} bad files skipped; extensions read: {', '.join(IMAGE_EXTENSIONS)}).\n"
                             f"{LAYOUT_HELP}")
    return _sorted_by_id(scan)


def _check_layout(root: str, class_dirs: Sequence[str]) -> None:
    """Clear errors for a missing data folder or class folder, naming what is there instead."""
    if not os.path.isdir(root):
        raise DataNotFoundError(f"Data folder {root} does not exist or is not a folder.\n{LAYOUT_HELP}")
    if len(class_dirs) != 2 or len(set(class_dirs)) != 2:
        raise DataLayoutError(f"class_dirs needs two different folder names (meteor first), "
                         f"got {tuple(class_dirs)}")
    missing = [d for d in class_dirs if not os.path.isdir(os.path.join(root, d))]
    if missing:
        present = sorted(e.name for e in os.scandir(root) if e.is_dir())
        raise DataNotFoundError(
            f"Data folder {root} has no class folder {', '.join(map(repr, missing))} "
            f"(subfolders found: {', '.join(present) or 'none'}); both classes are needed.\n{LAYOUT_HELP}")


def image_files(class_root: str) -> List[str]:
    """Image-extension files under `class_root`, recursively, hidden files and folders left out (the training
    loader and `meteor-predict` use the same rule)."""
    found, ignored = [], 0
    for dirpath, dirnames, filenames in os.walk(class_root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
            else:
                ignored += 1
    if ignored:  # camera software writes .txt/.json beside its frames: not an error, just not images
        logging.info("%s: ignored %d files without an image extension (%s)", class_root, ignored,
                     ", ".join(IMAGE_EXTENSIONS))
    return found


def check_image_file(path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = MIN_SIDE):
    """(format, None) for a file whose header looks usable, else (None, reason). Reads the header only."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, below
            with Image.open(path) as image:  # lazy: parses the header, decodes no pixels
                fmt, (width, height) = image.format, image.size
    except Image.DecompressionBombError as e:  # Pillow's own hard limit (2x its 89 MP default): say it our way
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "more than Pillow opens"
        return None, f"too large: {size}, above the limit of {max_pixels / 1e6:g} megapixels (max_pixels)"
    except UnidentifiedImageError:
        return None, "not an image Pillow recognises (wrong extension, or a damaged or non-image file)"
    except OSError as e:  # PermissionError, I/O errors, broken headers
        return None, f"cannot be opened: {e.strerror or e}"
    except Exception as e:  # noqa: BLE001 — Pillow raises assorted errors on damaged headers: skip them
        return None, f"cannot be opened: {type(e).__name__}: {e}"
    if fmt not in TF_FORMATS + PIL_FORMATS:
        return None, f"format {fmt} is not supported (JPEG, PNG, BMP, GIF, TIFF are)"
    if width * height > max_pixels:
        return None, (f"too large: {width}x{height} = {width * height / 1e6:.1f} megapixels, "
                      f"above the limit of {max_pixels / 1e6:g} megapixels (max_pixels)")
    if min(width, height) < min_side:
        return None, f"too small: {width}x{height}, below {min_side} pixels a side"
    return fmt, None


def scene_of(example_id: str) -> str:
    """The group key of an example id: `<scene>` from `<scene>__<anything>.<ext>`, else the id itself."""
    name = example_id.rsplit("/", 1)[-1]
    scene, sep, _ = name.partition(SCENE_SEPARATOR)
    return f"scene:{scene}" if sep and scene else f"file:{example_id}"


def _skip(skipped: Skipped, root: str, example_id: str, reason: str) -> None:
    """Record a bad file: one warning (full path) and one report entry (path relative to root)."""
    logging.warning("Skipping %s: %s", os.path.join(root, example_id), reason)
    skipped.append((example_id, reason))


def _sorted_by_id(scan: FolderScan) -> FolderScan:
    order = sorted(range(len(scan.ids)), key=scan.ids.__getitem__)
    pick = lambda values: [values[i] for i in order]  # noqa: E731
    return FolderScan(scan.root, pick(scan.paths), pick(scan.ids), pick(scan.labels), pick(scan.scenes),
                      pick(scan.formats), sorted(scan.skipped))


# ----------------------------------------------------------------------------------------------------
# Decoding


def load_images(scan: FolderScan, image_size: int, progress: bool = True, rule: str = preprocess.DEFAULT_INPUT_RULE):
    """Decode and preprocess a scan's images → (images float32 (M, S, S, 1), kept indices (M,), skipped).

    TensorFlow decodes in parallel (tf.data, AUTOTUNE); files it cannot decode are retried with Pillow; files
    neither can decode (truncated, damaged) are skipped with a warning. `kept` indexes `scan.paths`, in order.
    """
    images = {}
    tf_indices = [i for i, fmt in enumerate(scan.formats) if fmt in TF_FORMATS]
    tf_paths = [scan.paths[i] for i in tf_indices]
    for index, image in _decode_with_tf(tf_paths, tf_indices, image_size, progress, rule):
        images[index] = image
    skipped: Skipped = []
    for index in range(len(scan.paths)):  # TIFF, and whatever TensorFlow refused
        if index in images:
            continue
        try:
            images[index] = to_model_input_numpy(read_with_pillow(scan.paths[index]), image_size, rule)
        except Exception as e:  # noqa: BLE001 — any decoder failure means: skip this file, load the rest
            _skip(skipped, scan.root, scan.ids[index], f"cannot be decoded ({_describe(e)})")
    kept = np.array(sorted(images), dtype=np.int64)
    stacked = (np.stack([images[i] for i in kept]) if len(kept)
               else np.zeros((0, image_size, image_size, 1), np.float32))
    return stacked, kept, skipped


def _decode_with_tf(paths: List[str], indices: List[int], image_size: int, progress: bool, rule: str):
    """Yield (index, model input) per file TensorFlow decodes; failures drop out (Pillow retries them)."""
    if not paths:
        return
    # paths as bytes: a name that is not valid UTF-8 (surrogate-escaped by Python) cannot become a str tensor
    ds = tf.data.Dataset.from_tensor_slices((np.array(indices, np.int64),
                                             np.array([os.fsencode(p) for p in paths], dtype=object)))
    ds = ds.map(lambda i, p: (i, preprocess.preprocess_bytes(tf.io.read_file(p), image_size, rule)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors().prefetch(tf.data.AUTOTUNE)  # a bad file drops out here; its index tells which
    bar = _progress(len(paths), "decoding images", enabled=progress)
    for index, image in ds.as_numpy_iterator():
        bar.update(1)
        yield int(index), image
    bar.close()


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar for big folders (≥ 500 files); a no-op bar otherwise."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled or total < 500)


def read_with_pillow(path) -> np.ndarray:
    """Decode a file with Pillow into uint8 (H, W, C), C in 1..4; 16-bit → high byte as in `preprocess`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()  # raises on truncated data (Pillow's default: LOAD_TRUNCATED_IMAGES = False)
            return pil_to_uint8(image)


def pil_to_uint8(image: Image.Image) -> np.ndarray:
    """A Pillow image (first frame) → uint8 (H, W, C) with 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA) channels."""
    if image.mode.startswith("I"):  # I;16* (16-bit TIFF/PNG) and I (Pillow's 32-bit mode for 16-bit PNGs)
        array = np.clip(np.asarray(image).astype(np.int64), 0, 65535) >> 8
        return array.astype(np.uint8)[..., None]
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode in ("1", "F"):
        image = image.convert("L")
    elif image.mode not in ("L", "LA", "RGB", "RGBA"):  # CMYK, YCbCr, LAB, ...
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def to_model_input_numpy(image: np.ndarray, image_size: int, rule: str = preprocess.DEFAULT_INPUT_RULE) -> np.ndarray:
    """`preprocess.to_model_input` on a numpy image, as numpy."""
    return preprocess.to_model_input(tf.constant(image), image_size, rule).numpy()


def _describe(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")
