"""TFLite models for station computers (Raspberry Pi class), converted from an export's float signature.

    convert("savedmodels/meteor/3", "savedmodels/meteor-tflite/meteor-v3-dynamic.tflite", quantize="dynamic")
    model = TFLiteModel("savedmodels/meteor-tflite/meteor-v3-dynamic.tflite")
    probabilities = model.predict_images(images)     # (N, S, S, 1) gray 0..255 → meteor probability (N,)

The conversion starts from the `predict_images` signature: TFLite's builtin ops cannot decode images, so the caller
decodes with `meteor_tf.data.preprocess.to_model_input` (the training path) and feeds float tensors. Quantisation:

    none (alias float)  float32 weights and activations: the SavedModel's numbers
    dynamic             int8 weights, float activations (~4× smaller; no calibration data needed)
    int8                int8 weights and activations, calibrated on representative captures; float input/output

Each .tflite has a `<name>.json` beside it with the export's metadata (threshold, image size, class names) plus the
quantisation, so the file pair is all a station needs. The LiteRT interpreter (`ai-edge-litert`) runs it when
installed, TensorFlow's own `tf.lite.Interpreter` otherwise.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from meteor_tf import METEOR, io
from meteor_tf.config import input_rule_of
from meteor_tf.serving.export import SIGNATURE_IMAGES, IMAGES_INPUT, load_metadata, resolve_model

QUANTIZATIONS = ("none", "dynamic", "int8")
_ALIASES = {"float": "none", "float32": "none"}


def normalize_quantization(quantize: str) -> str:
    q = _ALIASES.get(str(quantize).lower(), str(quantize).lower())
    if q not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} (or 'float' for 'none'), got {quantize!r}")
    return q


def metadata_path(tflite_path) -> Path:
    return Path(tflite_path).with_suffix(".json")


def convert(version_dir, out_path, quantize: str = "none", representative_images=None,
            max_calibration_images: int = 200) -> Path:
    """Convert an export's `predict_images` signature to a .tflite file (+ its metadata JSON). Returns the path.

    `representative_images` (N, S, S, 1) gray 0..255 calibrate the activation ranges for `quantize="int8"` (a few
    hundred captures of both classes, ideally not the ones the comparison is made on)."""
    import tensorflow as tf

    version_dir = resolve_model(version_dir)
    quantize = normalize_quantization(quantize)
    metadata = load_metadata(version_dir)
    size = int(metadata["image_size"])
    if quantize == "int8":
        if representative_images is None or len(representative_images) == 0:
            raise ValueError("int8 quantisation needs representative images to calibrate activation ranges "
                             "(give --data=DIR or export a run whose data is available)")
        calibration = np.asarray(representative_images, dtype=np.float32)[:max_calibration_images]
        if calibration.shape[1:] != (size, size, 1):
            raise ValueError(f"representative images must be (N, {size}, {size}, 1), got {calibration.shape}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(version_dir), signature_keys=[SIGNATURE_IMAGES])
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "int8":
        converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        # integer kernels throughout; the input and output stay float so callers feed what they feed the SavedModel
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    flatbuffer = converter.convert()

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    info = dict(metadata, quantize=quantize, source_savedmodel=str(version_dir.resolve()),
                source_version=metadata.get("version"), signature=SIGNATURE_IMAGES,
                input=f"{IMAGES_INPUT}: float32 [N, {size}, {size}, 1], gray 0..255 (decode outside the model)",
                tflite_bytes=len(flatbuffer))
    if quantize == "int8":
        info["calibration_images"] = int(len(calibration))
    for path, data in ((out_path, flatbuffer), (metadata_path(out_path), json.dumps(info, indent=2, sort_keys=True,
                                                                                   default=str).encode())):
        io.write_bytes(path, data)  # never a truncated model where a station looks
    return out_path


def interpreter_class():
    """LiteRT's Interpreter when `ai-edge-litert` is installed (the maintained runtime), else TensorFlow's."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    return Interpreter


class TFLiteModel:
    """A converted .tflite model with its metadata JSON; batches of any size (the input is resized per call)."""

    def __init__(self, path, num_threads: Optional[int] = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such .tflite file")
        meta_path = metadata_path(self.path)
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: missing; it holds the threshold and image size and must stay "
                                    f"beside {self.path.name} (python -m meteor_tf.export writes both)")
        self.metadata = json.loads(meta_path.read_text())
        self._interpreter = interpreter_class()(model_path=str(self.path), num_threads=num_threads)
        # The signature runner resizes the input to each batch and reallocates (TFLite's resize_tensor_input).
        self._runner = self._interpreter.get_signature_runner(SIGNATURE_IMAGES)
        shape = self._runner.get_input_details()[IMAGES_INPUT]["shape_signature"]
        self.image_size = int(shape[1])

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def input_rule(self) -> str:
        """How a capture becomes the model's input (`preprocess.INPUT_RULES`); "resize" for older files."""
        return input_rule_of(self.metadata)

    @property
    def quantize(self) -> str:
        return self.metadata.get("quantize", "none")

    def predict_images(self, images, batch_size: int = 32) -> np.ndarray:
        """Meteor probabilities (N,) float32 for model inputs (N, S, S, 1) float32 gray 0..255."""
        images = np.asarray(images, dtype=np.float32)
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 1):
            raise ValueError(f"images must be (N, {s}, {s}, 1) gray 0..255, got shape {images.shape}")
        out = [self._runner(**{IMAGES_INPUT: images[i:i + batch_size]})["meteor_probability"]
               for i in range(0, len(images), max(1, batch_size))]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)

    def predict_labels(self, images, batch_size: int = 32) -> np.ndarray:
        """Class ids (0 = meteor) at the model's threshold."""
        return np.where(self.predict_images(images, batch_size) >= self.threshold, METEOR, 1 - METEOR)


def compare(version_dir, tflite_paths: Sequence, images, labels=None, batch_size: int = 32) -> List[Dict]:
    """The SavedModel and each .tflite on the same model inputs: size, accuracy at the threshold (when labels are
    given), label agreement with the SavedModel, probability differences, time per image. One dict per model."""
    from meteor_tf.serving.export import ExportedModel

    images = np.asarray(images, dtype=np.float32)
    reference = ExportedModel(version_dir)
    threshold = reference.threshold
    reference.predict_images(images[:1])  # warm-up: the first call builds the graph, not what is timed
    started = time.perf_counter()
    ref_prob = reference.predict_images(images, batch_size)["meteor_probability"]
    rows = [_row("SavedModel", _dir_size(reference.path), ref_prob, ref_prob, threshold, labels,
                 time.perf_counter() - started)]
    for path in tflite_paths:
        model = TFLiteModel(path)
        model.predict_images(images[:1])
        started = time.perf_counter()
        prob = model.predict_images(images, batch_size)
        rows.append(_row(f"TFLite {model.quantize}", Path(path).stat().st_size, prob, ref_prob, threshold, labels,
                         time.perf_counter() - started, path=str(path)))
    return rows


def _row(name, size, prob, ref_prob, threshold, labels, seconds, path=None) -> Dict:
    predicted = np.where(prob >= threshold, METEOR, 1 - METEOR)
    reference = np.where(ref_prob >= threshold, METEOR, 1 - METEOR)
    diff = np.abs(prob - ref_prob)
    row = {"model": name, "bytes": int(size), "images": int(len(prob)),
           "agreement": float(np.mean(predicted == reference)) if len(prob) else float("nan"),
           "max_abs_diff": float(diff.max()) if len(prob) else float("nan"),
           "mean_abs_diff": float(diff.mean()) if len(prob) else float("nan"),
           "ms_per_image": 1000.0 * seconds / max(1, len(prob))}
    if labels is not None:
        row["accuracy"] = float(np.mean(predicted == np.asarray(labels))) if len(prob) else float("nan")
    if path:
        row["path"] = path
    return row


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def format_comparison(rows: List[Dict], threshold: float) -> str:
    """A plain-text table of `compare`'s rows."""
    has_acc = any("accuracy" in r for r in rows)
    head = f"{'model':<16}{'size MB':>9}" + (f"{'accuracy':>10}{'Δ acc':>8}" if has_acc else "") + \
        f"{'agree':>8}{'max|Δp|':>10}{'mean|Δp|':>10}{'ms/img':>8}"
    lines = [f"{rows[0]['images']} images, threshold {threshold:.4f} (label meteor when p >= threshold)", head]
    ref_acc = rows[0].get("accuracy")
    for r in rows:
        line = f"{r['model']:<16}{r['bytes'] / 2**20:>9.2f}"
        if has_acc:
            line += f"{100 * r['accuracy']:>9.2f}%{100 * (r['accuracy'] - ref_acc):>+7.2f}%"
        line += f"{100 * r['agreement']:>7.1f}%{r['max_abs_diff']:>10.5f}{r['mean_abs_diff']:>10.5f}" \
                f"{r['ms_per_image']:>8.2f}"
        lines.append(line)
    return "\n".join(lines)
