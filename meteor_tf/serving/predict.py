"""Classify a folder of captures: a CSV of meteor probabilities, optional review folders and Grad-CAM overlays.

    with client.open_backend(model="savedmodels/meteor") as backend:        # or server="http://host:8501"
        summary = classify_folder(backend, "captures/2024-08-12", output="results.csv", sort_dir="review")
    print(summary.format())

- Files: every image under the input folder, recursively, found and checked by the rules training uses
  (`meteor_tf.data.folder`: extensions .jpg .jpeg .png .bmp .gif .tif .tiff, hidden files and folders skipped,
  header checks for empty, non-image, too small and too large files). TIFF goes through Pillow (re-encoded as PNG,
  see `client.prepare_image_bytes`), so it works against TF Serving too.
- CSV (`output`): columns `path` (relative to the input folder, "/"-separated), `meteor_probability`, `label`,
  `error` (why a file has no prediction), and `sorted_to` when sorting; rows in path order. Written as the run goes
  to `partial.<name>` and renamed at the end; an existing CSV is not overwritten unless asked.
- Labels: the model's stored recall-first threshold (in process: the SavedModel's or the .tflite's metadata; through a
  server: the server's labels), or `threshold` when given (relabelled here from the probabilities).
- Review folders (`sort_dir`): each classified capture is copied (moved with `move=True`) to `sort_dir/meteor/` or
  `sort_dir/non_meteor/` as `<stem>_p-0.973<ext>`, the meteor probability in the name as the Global Meteor Network's
  filter names its review crops; an existing file is never overwritten (`_1`, `_2`, ... are added), nothing is deleted
  (a move removes the source only once its copy is complete).
- Overlays (`explainer`): one Grad-CAM PNG per classified capture, `explain_dir/<path>_gradcam.png`.
- Unreadable files are listed with their reason in the CSV and the summary; the run goes on.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from meteor_tf import CLASS_NAMES, io
from meteor_tf.config import DEFAULT_INPUT_RULE
from meteor_tf.run_dir import RunDir
from meteor_tf.serving import client

CSV_COLUMNS = ("path", "meteor_probability", "label", "error")


@dataclasses.dataclass
class FileResult:
    path: str  # relative to the input folder, "/"-separated
    meteor_probability: Optional[float] = None
    label: Optional[str] = None
    error: Optional[str] = None
    sorted_to: Optional[str] = None
    explanation: Optional[str] = None


@dataclasses.dataclass
class Summary:
    input_dir: str
    results: List[FileResult]
    seconds: float
    backend: str
    threshold: Optional[float]
    threshold_source: str
    output: Optional[str] = None
    sort_dir: Optional[str] = None
    moved: bool = False
    explain_dir: Optional[str] = None

    @property
    def errors(self) -> List[FileResult]:
        return [r for r in self.results if r.error]

    @property
    def counts(self) -> Dict[str, int]:
        return {name: sum(r.label == name for r in self.results) for name in CLASS_NAMES}

    def format(self, max_errors: int = 20) -> str:
        """The end-of-run summary a person reads: counts per label, errors with reasons, time."""
        done = len(self.results) - len(self.errors)
        rate = done / self.seconds if self.seconds > 0 else float("nan")
        threshold = f"threshold {self.threshold:.4f} ({self.threshold_source})" if self.threshold is not None \
            else self.threshold_source
        lines = [f"{len(self.results)} files in {self.input_dir}: " + ", ".join(
                     f"{n} {name}" for name, n in self.counts.items()) + f", {len(self.errors)} errors",
                 f"model: {self.backend}; {threshold}",
                 f"time: {self.seconds:.1f} s ({rate:.1f} images/s)"]
        if self.output:
            lines.append(f"results: {self.output}")
        if self.sort_dir:
            lines.append(f"review folders ({'moved' if self.moved else 'copied'}): "
                         + ", ".join(os.path.join(self.sort_dir, n) for n in CLASS_NAMES))
        if self.explain_dir:
            lines.append(f"Grad-CAM overlays: {self.explain_dir}")
        if self.errors:
            lines.append(f"errors ({len(self.errors)}; also in the CSV's error column):")
            lines += [f"  {r.path}: {r.error}" for r in self.errors[:max_errors]]
            if len(self.errors) > max_errors:
                lines.append(f"  ... and {len(self.errors) - max_errors} more")
        return "\n".join(lines)


class NoImagesError(FileNotFoundError):
    """The input folder is missing or holds no image file."""


def find_images(input_dir, exclude: Sequence = ()) -> List[str]:
    """Image files under `input_dir`, recursively (meteor_tf.data.folder's rules), sorted by relative path;
    anything under an `exclude` folder (review or overlay folders inside the input) left out."""
    from meteor_tf.data import folder

    root = os.path.abspath(os.fspath(input_dir))
    if not os.path.isdir(root):
        raise NoImagesError(f"input folder {input_dir} does not exist or is not a folder (--input)")
    excluded = [os.path.abspath(os.fspath(e)) + os.sep for e in exclude if e]
    paths = [p for p in folder.image_files(root) if not any(p.startswith(e) for e in excluded)]
    if not paths:
        raise NoImagesError(f"no image files under {input_dir} (extensions read: "
                            f"{', '.join(folder.IMAGE_EXTENSIONS)}; hidden files and folders are skipped)")
    return sorted(paths, key=lambda p: _relative(p, root))


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def classify_folder(backend: client.Backend, input_dir, *, output=None, overwrite: bool = False,
                    threshold: Optional[float] = None, batch_size: int = 32, sort_dir=None, move: bool = False,
                    explainer: Optional["GradCamExplainer"] = None, explain_dir=None,
                    progress: bool = True) -> Summary:
    """Classify every image under `input_dir` with `backend` (see the module docstring for what is written).

    Raises NoImagesError (no input), FileExistsError (output exists, `overwrite` not set) before any work, and
    client.ServingError (other than InvalidImageError) when the backend fails for every file (server down, unknown
    model): that ends the run.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if move and not sort_dir:
        raise ValueError("move needs a sort folder (--sort=DIR): it moves captures into the review folders")
    if (explainer is None) != (explain_dir is None):
        raise ValueError("explain needs both an explainer (the Keras model) and an output folder")
    root = os.path.abspath(os.fspath(input_dir))
    paths = find_images(root, exclude=[sort_dir, explain_dir])
    check_output_path(output, overwrite)
    if threshold is not None:
        source = "--threshold"
    elif backend.threshold is not None:
        threshold, source = backend.threshold, "the model's recall-first threshold"
    else:
        source = "labels from the server (the model's stored recall-first threshold)"

    from tqdm.auto import tqdm

    start = time.perf_counter()
    results: List[FileResult] = []
    writer = _CsvWriter(output, with_sorted=bool(sort_dir)) if output is not None else None
    try:
        with tqdm(total=len(paths), desc="classifying", unit="img", disable=not progress) as bar:
            for first in range(0, len(paths), batch_size):
                batch = paths[first:first + batch_size]
                batch_results = _classify_batch(backend, root, batch, threshold if source == "--threshold" else None)
                if explainer is not None:  # before sorting: a move takes the capture away
                    explainer.explain_files(root, batch, batch_results, explain_dir)
                for r, path in zip(batch_results, batch):
                    if sort_dir and r.label is not None:
                        try:
                            r.sorted_to = str(sort_capture(path, sort_dir, r.label, r.meteor_probability, move))
                        except OSError as e:
                            r.error = f"cannot {'move' if move else 'copy'} to {sort_dir}: {e.strerror or e}"
                    if writer:  # row by row, flushed: a moved file's original path is on disk before the next move
                        writer.write([r])
                results += batch_results
                bar.update(len(batch))
    except BaseException:
        if writer:
            writer.abandon()  # keep the partial CSV (its name says partial) for a look; no final file
        raise
    if writer:
        writer.finish()
    return Summary(str(input_dir), results, time.perf_counter() - start, backend.describe(),
                   threshold, source, output=None if output is None else str(output),
                   sort_dir=None if sort_dir is None else str(sort_dir), moved=move,
                   explain_dir=None if explain_dir is None else str(explain_dir))


def _classify_batch(backend: client.Backend, root: str, paths: List[str], threshold: Optional[float]):
    """FileResults for one batch: header checks, then one backend call; when the backend refuses the batch, each
    image again on its own so only the bad ones carry an error."""
    from meteor_tf.data import folder

    results = [FileResult(_relative(p, root)) for p in paths]
    todo, images = [], []
    for r, path in zip(results, paths):
        _fmt, reason = folder.check_image_file(path)
        if reason:
            r.error = reason
            continue
        try:
            with open(path, "rb") as f:
                images.append(client.prepare_image_bytes(f.read()))
            todo.append(r)
        except client.InvalidImageError as e:
            r.error = str(e)
        except OSError as e:
            r.error = f"cannot be read: {e.strerror or e}"
    if not todo:
        return results
    try:
        _fill(todo, backend.predict_bytes(images), threshold)
    except client.InvalidImageError:
        # A decoder refused the batch: find the images it refuses by decoding alone (cheap), give those Pillow's
        # chance (folder.load_images's rule: what TensorFlow refuses, Pillow may read, sent on as PNG), then predict
        # the rest as one batch again.
        kept = []
        for r, data in zip(todo, images):
            if client.first_undecodable([data]) is None:
                kept.append((r, data))
                continue
            try:
                kept.append((r, client.reencode_with_pillow(data)))
            except client.InvalidImageError as e:
                r.error = str(e)
        if kept:
            try:
                _fill([r for r, _ in kept], backend.predict_bytes([d for _, d in kept]), threshold)
            except client.InvalidImageError:  # refused for another reason: one at a time, each its own answer
                for r, data in kept:
                    try:
                        _fill([r], backend.predict_bytes([data]), threshold)
                    except client.InvalidImageError as e:
                        r.error = str(e)
    return results


def _fill(results: List[FileResult], predictions: client.Predictions, threshold: Optional[float]) -> None:
    if threshold is not None:
        predictions = client.Predictions.from_probabilities(predictions.meteor_probability, threshold)
    for r, p, label in zip(results, predictions.meteor_probability, predictions.label):
        r.meteor_probability, r.label = float(p), label


def review_name(path, probability: float) -> str:
    """`FF_XX0001_20240812_031200.png` → `FF_XX0001_20240812_031200_p-0.973.png`."""
    stem, ext = os.path.splitext(os.path.basename(path))
    return f"{stem}_p-{probability:.3f}{ext}"


def sort_capture(path, sort_dir, label: str, probability: float, move: bool = False) -> Path:
    """Copy (or move) a capture into `sort_dir/label/` under its review name; returns where it went.

    Never overwrites: the destination name is claimed with an exclusive create, adding `_1`, `_2`, ... when taken.
    """
    folder = Path(sort_dir) / label
    folder.mkdir(parents=True, exist_ok=True)
    stem, ext = os.path.splitext(review_name(path, probability))
    for n in range(100_000):
        destination = folder / (f"{stem}{ext}" if n == 0 else f"{stem}_{n}{ext}")
        try:
            with open(destination, "xb") as claimed:  # exclusive: fails when the name exists, so nothing is replaced
                if not move:
                    with open(path, "rb") as source:
                        shutil.copyfileobj(source, claimed)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, f"no free name for {path} in {folder}")
    try:
        if move:
            _move_onto_claimed(path, destination)
        else:
            shutil.copystat(path, destination)
    except BaseException:
        if move and os.path.exists(path):
            destination.unlink(missing_ok=True)  # our empty claim; the source is still in place
        raise
    return destination


def _move_onto_claimed(path, destination: Path) -> None:
    """Move `path` onto the empty file we created at `destination` (ours to replace)."""
    try:
        os.replace(path, destination)  # same filesystem: one rename
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        with open(path, "rb") as source, open(destination, "wb") as target:  # other filesystem: copy, then remove
            shutil.copyfileobj(source, target)
        shutil.copystat(path, destination)
        os.unlink(path)


def check_output_path(output, overwrite: bool) -> None:
    """Refuse, before any work, an --output the CSV could not replace at the end: an existing file without
    `overwrite`, or a folder (with or without it: a CSV cannot take a folder's place)."""
    if output is None:
        return
    if os.path.isdir(output):
        raise IsADirectoryError(f"--output={output} is a folder; --output names the CSV to write, e.g. "
                                f"--output={os.path.join(output, 'predictions.csv')}")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output} exists; pass --overwrite to replace it, or another --output")


class _CsvWriter:
    """Rows written as batches finish, to `partial.<name>`; renamed to the real name when the run completes."""

    def __init__(self, path, with_sorted: bool):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = io.partial_path(self.path)
        self.columns = CSV_COLUMNS + (("sorted_to",) if with_sorted else ())
        # surrogateescape: a file name that is not valid UTF-8 (Latin-1 from an old station PC) is written as its
        # original bytes, so reading the CSV back with the same handler gives the exact path
        self.file = open(self.partial, "w", newline="", encoding="utf-8", errors="surrogateescape")
        self.writer = csv.writer(self.file)
        self.writer.writerow(self.columns)

    def write(self, results: List[FileResult]) -> None:
        for r in results:
            row = {"path": r.path, "label": r.label or "", "error": r.error or "", "sorted_to": r.sorted_to or "",
                   "meteor_probability": "" if r.meteor_probability is None else f"{r.meteor_probability:.6f}"}
            self.writer.writerow([row[c] for c in self.columns])
        self.file.flush()

    def finish(self) -> None:
        self.file.close()
        try:
            self.partial.replace(self.path)
        except OSError as e:  # e.g. the output became a folder during the run: say where the rows are
            raise OSError(f"could not put the results at {self.path} ({e.strerror or e}); every row is in "
                          f"{self.partial}") from None

    def abandon(self) -> None:
        self.file.close()


def read_csv(path) -> List[dict]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------------------------------
# Grad-CAM overlays


class ExplainNeedsKerasModel(FileNotFoundError):
    """--explain was asked for without a model that can take gradients (a Keras model or an export's Grad-CAM
    signature)."""


class GradCamExplainer:
    """Grad-CAM overlays (`meteor_tf.serving.gradcam`) on the same model input as training, from a Keras classifier
    or from an exported SavedModel (its `explain_images` signature: no Keras needed at the station)."""

    def __init__(self, model, source: str, input_rule: Optional[str] = None):
        self.model = model
        self.source = source
        self.image_size = int(model.image_size if hasattr(model, "signature_names") else model.input_shape[1])
        self.input_rule = input_rule or getattr(model, "input_rule", None) or DEFAULT_INPUT_RULE

    @classmethod
    def load(cls, keras_model=None, backend: Optional[client.Backend] = None) -> "GradCamExplainer":
        """From `keras_model` (a .keras file, a run directory holding final/model.keras, or an exported SavedModel
        dir), else from the in-process SavedModel `backend` runs; ExplainNeedsKerasModel when there is neither."""
        if keras_model:
            path = Path(keras_model)
            for candidate in ([path] if path.suffix == ".keras" else [RunDir(path).final.model,
                                                                        path / "model.keras"]):
                if candidate.is_file():
                    return cls(_load_keras(candidate), str(candidate), _input_rule_beside(candidate))
            try:
                backend = client.LocalBackend(path)  # an exported savedmodels/NAME (or version) dir
            except FileNotFoundError:
                raise ExplainNeedsKerasModel(
                    f"--keras_model={keras_model}: neither a .keras file, a run directory holding final/model.keras, "
                    f"nor an exported model directory") from None
        exported = getattr(backend, "model", None)
        if "explain_images" in getattr(exported, "signature_names", ()):
            return cls(exported, f"{backend.path} (its explain_images signature)")
        without = (f"{backend.path} was exported without the Grad-CAM signature"
                   if isinstance(backend, client.LocalBackend) else "a .tflite model or a server cannot")
        raise ExplainNeedsKerasModel(
            f"--explain needs a model that can take gradients ({without}): pass "
            f"--keras_model=RUN_DIR/final/model.keras (or the run directory, or an exported savedmodels/NAME dir)")

    def explain_files(self, root: str, paths: List[str], results: List[FileResult], explain_dir) -> None:
        """One overlay per file of `results` without an error; a failure becomes that file's error."""
        import tensorflow as tf

        from meteor_tf.data import preprocess
        from meteor_tf.serving import gradcam

        todo, images = [], []
        for r, path in zip(results, paths):
            if r.error:
                continue
            try:
                with open(path, "rb") as f:
                    data = client.prepare_image_bytes(f.read())
                try:
                    image = preprocess.preprocess_bytes(tf.constant(data), self.image_size, self.input_rule)
                except tf.errors.InvalidArgumentError:  # TensorFlow refused it and Pillow read it when classifying
                    image = preprocess.preprocess_bytes(tf.constant(client.reencode_with_pillow(data)),
                                                        self.image_size, self.input_rule)
                images.append(image.numpy())
                todo.append(r)
            except Exception as e:  # noqa: BLE001 — the capture changed under us: note it, keep its prediction
                r.error = f"no Grad-CAM overlay: cannot read the image again ({type(e).__name__}: {e})"
        if not todo:
            return
        batch = np.stack(images)
        heatmaps = np.asarray(gradcam.grad_cam(self.model, batch))
        for r, image, heatmap in zip(todo, batch, heatmaps):
            stem = os.path.splitext(r.path)[0]
            target = Path(explain_dir) / f"{stem}_gradcam.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            target = _free_name(target)
            gradcam.save_overlay(image, heatmap, target, probability=r.meteor_probability)
            r.explanation = str(target)


def _load_keras(path):
    from meteor_tf.serving.export import load_keras_model

    return load_keras_model(path)


def _free_name(path: Path) -> Path:
    """`path`, or `path` with `_1`, `_2`, ... before the suffix when taken: overlays never replace a file."""
    n, candidate = 0, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return candidate


def _input_rule_beside(path):
    from meteor_tf.serving.export import input_rule_beside

    return input_rule_beside(path)
