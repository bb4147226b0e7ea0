"""Export a trained classifier as a SavedModel in TF Serving's layout, and load it back.

Layout (what `tensorflow_model_server --model_base_path=.../meteor` watches):

    savedmodels/meteor/1/{saved_model.pb, fingerprint.pb, variables/, assets/meteor_tf.json}
    savedmodels/meteor/2/...                      versions are integers that only grow; none is ever overwritten

A version is written to a temporary directory beside the versions (`.partial-export-*`, not an integer, so TF Serving
and `latest_version` skip it) and renamed into place, so a crash never leaves half a version a server would load.

Signatures (`keras.export.ExportArchive` endpoints):

    serving_default   image_bytes  string [N]  encoded JPEG/PNG/BMP/GIF, any size; decoded, grayscaled, padded,
                                               resized in the graph by `meteor_tf.data.preprocess` (the training code)
    predict_images    images       float32 [N, S, S, 1], gray 0..255 (`preprocess.to_model_input` already applied)
        → meteor_probability float32 [N], label string [N] ("meteor"/"non_meteor"), class_id int32 [N] (0 = meteor);
          label/class_id say meteor when meteor_probability >= the run's recall-first threshold (a graph constant).
    explain_images    images       → heatmap float32 [N, S, S] (Grad-CAM, 0..1), meteor_probability float32 [N]

`assets/meteor_tf.json` holds the metadata: depth, layout, pretraining, image size, normalisation, threshold, class
names, the run's cross-validation metrics, package versions and the run's provenance (`load_metadata`).
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from meteor_tf import CLASS_NAMES, METEOR, __version__, faults
from meteor_tf.config import input_rule_of
from meteor_tf.run_dir import RunDir, model_info_beside

log = logging.getLogger("meteor_tf")

SIGNATURE_BYTES = "serving_default"
SIGNATURE_IMAGES = "predict_images"
SIGNATURE_EXPLAIN = "explain_images"
BYTES_INPUT = "image_bytes"
IMAGES_INPUT = "images"
OUTPUTS = ("meteor_probability", "label", "class_id")
METADATA_ASSET = "meteor_tf.json"
TEMP_PREFIX = ".partial-export-"
# Leading bytes of every format tf.io.decode_image reads (JPEG, PNG, GIF, BMP, WebP's RIFF, JPEG XL code stream and
# container): a batch element matching none is named in the error, which TF's own decode error does not do.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF", b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")

PathLike = Union[str, os.PathLike]


class ExportError(Exception):
    """An export cannot be made or found as asked (the message names the path and what to do)."""


class VersionExistsError(ExportError, FileExistsError):
    pass


class ModelNotFoundError(ExportError, FileNotFoundError):
    pass


# --------------------------------------------------------------------------------------------------- versions
def _integer_versions(model_dir: Path) -> List[int]:
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and p.is_dir())


def latest_version(model_dir: PathLike) -> Path:
    """The newest version directory (highest integer subdirectory holding a saved_model.pb), as TF Serving picks it.

    Temporary directories of an interrupted export are not integers and are ignored."""
    model_dir = Path(model_dir)
    for version in reversed(_integer_versions(model_dir)):
        if (model_dir / str(version) / "saved_model.pb").is_file():
            return model_dir / str(version)
    raise ModelNotFoundError(
        f"{model_dir}: no exported version (an integer subdirectory holding saved_model.pb). Export one with "
        f"`python -m meteor_tf.export --run=runs/<run id> --base_dir={model_dir.parent} --name={model_dir.name}`.")


def resolve_model(path: PathLike) -> Path:
    """A version directory from `savedmodels/meteor` (its newest version) or `savedmodels/meteor/3` (that one)."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return path
    if path.is_file():  # a .keras file or a run's final/model.keras: say how to export its run, not a folder of it
        run = RunDir.of_final_model(path)
        how = (f"`python -m meteor_tf.export --run={run.path}`" if run is not None else
               "`python -m meteor_tf.export --run=runs/<run id>` on the run that wrote it")
        raise ModelNotFoundError(f"{path} is a file, not an exported model: export it first with {how}, then pass "
                                 "--model=savedmodels/meteor (or pass a .tflite file)")
    if not path.exists():
        raise ModelNotFoundError(f"{path}: no such model directory (expected savedmodels/<name> or "
                                 f"savedmodels/<name>/<version>)")
    return latest_version(path)


def load_metadata(version_dir: PathLike) -> dict:
    """The metadata JSON an export carries in its assets."""
    path = Path(version_dir) / "assets" / METADATA_ASSET
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: missing; {version_dir} was not written by meteor_tf.serving.export")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------------- signatures
def _outputs(model, images, threshold):
    """The three named outputs for a batch of model inputs."""
    import tensorflow as tf

    meteor = tf.cast(model(images, training=False)[:, METEOR], tf.float32)
    class_id = tf.where(meteor >= threshold, METEOR, 1 - METEOR)
    return {"meteor_probability": meteor, "label": tf.gather(tf.constant(CLASS_NAMES), class_id),
            "class_id": tf.cast(class_id, tf.int32)}


def _checked_bytes(image_bytes):
    """`image_bytes`, after an assertion naming the first element that is not an encoded image at all."""
    import tensorflow as tf

    known = tf.zeros_like(image_bytes, dtype=tf.bool)
    for magic in _MAGIC:
        known = tf.logical_or(known, tf.equal(tf.strings.substr(image_bytes, 0, len(magic)), magic))
    first_bad = tf.argmin(tf.cast(known, tf.int32), output_type=tf.int32)
    message = tf.strings.format(
        "image_bytes[{}] (of {} in this request) is not an encoded JPEG, PNG, GIF or BMP image; no image of the "
        "request was scored", (first_bad, tf.size(image_bytes)))
    check = tf.debugging.Assert(tf.reduce_all(known), [message])
    with tf.control_dependencies([check]):  # before decoding, whose own error does not say which image
        return tf.identity(image_bytes)


def _archive(model, image_size: int, threshold: float, explain: bool, input_rule: str):
    import keras
    import tensorflow as tf

    from meteor_tf.data.preprocess import preprocess_bytes_batch
    from meteor_tf.serving import gradcam

    # A graph constant: label/class_id need no outside configuration wherever the SavedModel is served.
    thr = tf.constant(threshold, tf.float32, name="recall_first_threshold")
    archive = keras.export.ExportArchive()
    # No archive.track(model): the endpoints capture every variable they use, and track() would store each weight a
    # second time through its keras.Variable wrapper (2x size on disk and in TF Serving's RAM, keras-team/keras#23553).

    def predict_bytes(image_bytes):
        return _outputs(model, preprocess_bytes_batch(_checked_bytes(image_bytes), image_size, input_rule), thr)

    def predict_images(images):
        return _outputs(model, images, thr)

    images_spec = tf.TensorSpec([None, image_size, image_size, 1], tf.float32, name=IMAGES_INPUT)
    archive.add_endpoint(SIGNATURE_BYTES, predict_bytes,
                         input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    archive.add_endpoint(SIGNATURE_IMAGES, predict_images, input_signature=[images_spec])
    if explain:
        explainer = gradcam.explanation_model(model)

        def explain_images(images):
            heatmap, meteor = gradcam.cam_tensors(explainer, images)
            return {"heatmap": heatmap, "meteor_probability": meteor}

        archive.add_endpoint(SIGNATURE_EXPLAIN, explain_images, input_signature=[images_spec])
    return archive


def _has_parts(model) -> bool:
    from meteor_tf.serving.gradcam import PARTS

    return all(part in {layer.name for layer in model.layers} for part in PARTS)


# --------------------------------------------------------------------------------------------------- export
def export_savedmodel(model, base_dir: PathLike, name: str = "meteor", *, threshold: float,
                      metadata: Optional[dict] = None, version: Optional[int] = None,
                      explain: Optional[bool] = None) -> Path:
    """Write `model` as `base_dir/name/<version>/` (TF Serving layout) and return that version directory.

    `model`: a meteor_tf classifier, (N, S, S, 1) float32 gray 0..255 → softmax (N, 2), meteor column 0.
    `threshold`: meteor when meteor_probability >= threshold (the run's recall-first threshold).
    `version`: None = one more than the highest existing version; an existing version raises VersionExistsError.
    `explain`: add the Grad-CAM signature (default: when the model has the classifier's named parts).
    """
    import keras
    import tensorflow as tf

    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}")
    if version is not None and (not isinstance(version, (int, np.integer)) or version < 0):
        raise ValueError(f"version must be a non-negative integer, got {version!r}")
    metadata = dict(metadata or {})
    image_size = model.input_shape[1] or metadata.get("image_size")
    if not image_size or model.input_shape[1:] not in ((image_size, image_size, 1), (None, None, 1)):
        raise ValueError(f"the model must take (N, S, S, 1) gray images of a known size S; its input shape is "
                         f"{model.input_shape} (give metadata['image_size'] for a size-agnostic model)")
    image_size = int(image_size)
    from meteor_tf.data.preprocess import check_input_rule

    input_rule = check_input_rule(input_rule_of(metadata))
    explain = _has_parts(model) if explain is None else explain
    model_dir = Path(base_dir) / name
    _check_version_free(model_dir, version)

    meta = {"name": name, "image_size": image_size, "input_rule": input_rule, "class_names": list(CLASS_NAMES),
            "meteor_index": METEOR}
    if _has_parts(model):
        meta["normalization"] = model.get_layer("preprocess").mode
    meta.update(metadata)
    meta.update({
        "threshold": float(threshold),
        "threshold_rule": "label 'meteor' (class_id 0) when meteor_probability >= threshold",
        "signatures": _signature_doc(image_size, explain),
        "package_version": __version__,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })

    model_dir.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(model_dir)
    # the exporting process's host and pid in the name: a later export can tell a dead one's leftover from a live one
    partial = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=model_dir))
    try:
        os.chmod(partial, 0o755)  # mkdtemp makes it owner-only; a server running as another user must read it
        _archive(model, image_size, float(threshold), explain, input_rule).write_out(str(partial), verbose=False)
        # ExportArchive has no public hook for extra asset files; TF Serving ships the whole version directory.
        (partial / "assets").mkdir(exist_ok=True)
        faults.point("export_write")
        final_version = _rename_into_place(partial, model_dir, version, meta)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    log.info("exported %s (threshold %.4f, %d px)", model_dir / str(final_version), threshold, image_size)
    return model_dir / str(final_version)


def _clean_leftovers(model_dir: Path) -> None:
    """Remove the temporary dirs of exports whose process is gone (killed mid-write, on this host); report any
    other leftover (another host's, or an export still running) and leave it."""
    for path in sorted(model_dir.glob(TEMP_PREFIX + "*")):
        host, _, rest = path.name[len(TEMP_PREFIX):].rpartition("-")[0].rpartition("-")
        pid = int(rest) if rest.isdigit() else None
        if pid is not None and host == socket.gethostname() and not _alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            log.warning("%s: removed %s, left by an export that was killed (process %d is gone)", model_dir,
                        path.name, pid)
        else:
            log.warning("%s: ignoring %s, left by an interrupted export or one still running (safe to delete once "
                        "no export is running)", model_dir, path.name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _check_version_free(model_dir: Path, version: Optional[int]) -> None:
    if version is not None and (model_dir / str(int(version))).exists():
        raise VersionExistsError(f"{model_dir / str(int(version))} already exists; versions are never "
                                 f"overwritten: leave out the version to write the next one")


def _rename_into_place(partial: Path, model_dir: Path, version: Optional[int], meta: dict) -> int:
    """Renames the finished temporary directory to the version number: atomic on one filesystem."""
    while True:
        number = int(version) if version is not None else max(_integer_versions(model_dir), default=0) + 1
        target = model_dir / str(number)
        meta["version"] = number
        (partial / "assets" / METADATA_ASSET).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        if target.exists():
            if version is not None:
                raise VersionExistsError(f"{target} already exists; versions are never overwritten")
            continue  # another export took that number meanwhile: take the next
        _fsync_tree(partial)
        try:
            os.rename(partial, target)  # fails on a non-empty existing directory: never replaces a version
            return number
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or version is not None:
                raise


def _fsync_tree(root: Path) -> None:
    """Flushes every file and directory under `root` to disk, so a power cut after the rename cannot leave a
    version whose files are still empty."""
    for path in [*sorted(root.rglob("*")), root]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _signature_doc(image_size: int, explain: bool) -> dict:
    outputs = {"meteor_probability": "float32 [N]", "label": "string [N] (meteor | non_meteor)",
               "class_id": "int32 [N] (0 = meteor)"}
    doc = {SIGNATURE_BYTES: {"inputs": {BYTES_INPUT: "string [N], encoded JPEG/PNG/BMP/GIF"}, "outputs": outputs},
           SIGNATURE_IMAGES: {"inputs": {IMAGES_INPUT: f"float32 [N, {image_size}, {image_size}, 1], gray 0..255"},
                              "outputs": outputs}}
    if explain:
        doc[SIGNATURE_EXPLAIN] = {"inputs": {IMAGES_INPUT: doc[SIGNATURE_IMAGES]["inputs"][IMAGES_INPUT]},
                                  "outputs": {"heatmap": f"float32 [N, {image_size}, {image_size}], Grad-CAM 0..1",
                                              "meteor_probability": "float32 [N]"}}
    return doc


def run_metadata(run_dir: PathLike) -> dict:
    """What an export of `run_dir/final/` records: the model's settings, threshold, CV metrics and provenance."""
    run = RunDir(run_dir)
    if not run.path.is_dir():
        raise ModelNotFoundError(f"{run.path}: no such run directory (runs are written by python -m meteor_tf.main "
                                 f"under --output_dir, runs/ by default)")
    model_path = run.final.model
    if not run.has_final_model():
        raise ModelNotFoundError(
            f"{run.path}: no final model (final/model.keras and final/model_info.json); it is written when a run "
            f"finishes with --retrain_final (the default): rerun python -m meteor_tf.main with the run's flags to "
            f"finish it")
    info = run.read_model_info()
    config = info.get("config", {})
    meta = {key: config.get(key) for key in ("depth", "layout", "pretrain", "image_size", "input_rule", "data",
                                             "augment", "target_recall", "seed")}
    meta["input_rule"] = input_rule_of(config)
    meta.update({"normalization": info.get("normalization"), "class_names": info.get("class_names"),
                 "threshold_source": info.get("threshold_source"), "config": config,
                 "run_id": run.name, "run_dir": str(run.path.resolve()), "source_model": str(model_path.resolve())})
    metrics = run.read_metrics()
    if metrics is not None:
        meta["cv_metrics"] = {key: metrics.get(key) for key in ("stats", "threshold", "per_fold")}
        meta["skipped_files"] = len(metrics.get("skipped") or [])
    provenance = run.read_provenance()
    if provenance is not None:
        meta["provenance"] = provenance
    meta["threshold"] = float(info["threshold"])
    return meta


def input_rule_beside(keras_path: PathLike) -> str:
    """The input rule of a run's final/model.keras, from the model_info.json beside it (the default without one)."""
    return input_rule_of(model_info_beside(keras_path).get("config", {}))


def load_keras_model(path: PathLike):
    """A saved meteor_tf classifier (`final/model.keras`) for inference, without its training configuration."""
    import keras

    # Even with compile=False Keras rebuilds a compiled sub-model's metrics (the head, trained alone on cached
    # features, carries MeteorAUC): importing these modules registers the Preprocess layer and that metric.
    from meteor_tf.models import classifier
    from meteor_tf.evaluation import keras_metrics  # noqa: F401

    with warnings.catch_warnings():  # the optimizer's state is not needed for inference, nor its mismatch warning
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        return classifier.as_float32(keras.saving.load_model(str(path), compile=False))


def export_run(run_dir: PathLike, base_dir: PathLike = "savedmodels", name: str = "meteor",
               version: Optional[int] = None) -> Path:
    """Export `run_dir/final/model.keras` with the threshold and metadata of its run. Returns the version dir."""
    meta = run_metadata(run_dir)
    _check_version_free(Path(base_dir) / name, version)  # before the slow imports and model load
    model = load_keras_model(meta["source_model"])
    meta.update(architecture_of(model, meta))
    return export_savedmodel(model, base_dir, name, threshold=meta["threshold"], metadata=meta, version=version)


def architecture_of(model, meta: dict) -> dict:
    """{"depth", "layout"} as the model's backbone knows them; a model saved before backbones knew their structure
    keeps the values its run's config recorded (`meta`)."""
    from meteor_tf.models import resnet

    backbone = model.get_layer("backbone")
    if isinstance(backbone, resnet.ResNetBackbone):
        return {"depth": backbone.depth, "layout": backbone.layout}
    return {"depth": meta.get("depth"), "layout": meta.get("layout")}


def export_final(result: dict, base_dir: PathLike) -> Optional[Path]:
    """Exports the final model of a `run_experiment` result (result["final"]["model"] is RUN_DIR/final/model.keras)
    with `export_run`. None when the run has none (--noretrain_final) and on a non-chief worker, whose run directory
    is a twin (`distribute.worker_save_path`): the chief exports."""
    if "final" not in result:
        return None
    run = RunDir.of_final_model(result["final"]["model"])
    if run.path.parent.name.startswith("workertemp_"):
        return None
    return export_run(run.path, base_dir=base_dir)


def comparison_data(meta: dict, data_dir: Optional[PathLike] = None, calibration_images: int = 200,
                    compare_images: int = 0):
    """What TFLite conversions of the export described by `meta` are calibrated and compared on: (validation
    images, labels, calibration images, description). From `data_dir` (captures kept out of the comparison calibrate,
    when there are enough), else the run's own data with the final model's inner validation split held out of
    calibration; all None when there is neither. `compare_images` > 0 caps the comparison."""
    from meteor_tf.config import ExperimentConfig
    from meteor_tf.data.dataset import load_examples, load_folder

    size = int(meta["image_size"])
    rng = np.random.default_rng(0)
    if data_dir:
        examples = load_folder(data_dir, size, rule=input_rule_of(meta))
        order = rng.permutation(len(examples.labels))
        # calibrate on captures kept out of the comparison when there are enough of them
        n_cal = min(calibration_images, len(order) // 2)
        cal_idx, val_idx = (order[:n_cal], order[n_cal:]) if n_cal else (order, order)
        source = f"{data_dir} ({{n}} captures not used for int8 calibration)"
    elif meta.get("config"):
        config = ExperimentConfig.from_dict(meta["config"])
        examples = load_examples(config)
        split = final_validation_split(Path(meta.get("run_dir", "")))
        if split is not None and len(split) and split.max() < len(examples.labels):
            val_idx = split
            cal_idx = rng.permutation(np.setdiff1d(np.arange(len(examples.labels)), split))
            source = f"the final model's inner validation split of {examples.source} ({{n}} captures)"
        else:
            val_idx = cal_idx = rng.permutation(len(examples.labels))
            source = f"{examples.source} ({{n}} captures; the final model trained on them)"
    else:
        return None, None, None, None
    if compare_images:
        val_idx = val_idx[:compare_images]
    return (examples.images[val_idx], examples.labels[val_idx], examples.images[cal_idx[:calibration_images]],
            source.replace("{n}", str(len(val_idx))))


def final_validation_split(run_dir: PathLike) -> Optional[np.ndarray]:
    """The indices of the final model's inner validation split (from its predictions file), None without one."""
    final = RunDir(run_dir).final
    for phase in ("fine_tune", "head"):
        if final.predictions(phase).is_file():
            return final.read_predictions(phase)["val_idx"]
    return None


# --------------------------------------------------------------------------------------------------- loading
class ExportedModel:
    """An exported version loaded in process (`tf.saved_model.load`), called through its signatures.

    `path` is `savedmodels/meteor` (newest version) or a version directory."""

    def __init__(self, path: PathLike):
        import tensorflow as tf

        self.path = resolve_model(path)
        self.metadata = load_metadata(self.path)
        self._loaded = tf.saved_model.load(str(self.path))
        self._signatures = self._loaded.signatures

    @property
    def threshold(self) -> float:
        return float(self.metadata["threshold"])

    @property
    def image_size(self) -> int:
        return int(self.metadata["image_size"])

    @property
    def input_rule(self) -> str:
        """How a capture becomes the model's input (`preprocess.INPUT_RULES`); "resize" for older exports."""
        return input_rule_of(self.metadata)

    @property
    def version(self) -> Optional[int]:
        return int(self.path.name) if self.path.name.isdigit() else None

    @property
    def signature_names(self) -> List[str]:
        return sorted(self._signatures.keys())

    def signature_defs(self) -> dict:
        """The signatures in TF Serving's metadata JSON shape (`GET /v1/models/NAME/metadata`'s
        `metadata.signature_def.signature_def`): per signature its inputs and outputs with dtype and shape."""
        from tensorflow.core.framework import types_pb2

        def spec(name, s):
            dims = [{"size": str(-1 if d is None else d), "name": ""} for d in s.shape.as_list()]
            return {"dtype": types_pb2.DataType.Name(s.dtype.as_datatype_enum),
                    "tensor_shape": {"dim": dims, "unknown_rank": False}, "name": name}

        out = {}
        for key, fn in self._signatures.items():
            inputs = fn.structured_input_signature[1]
            out[key] = {"inputs": {k: spec(k, v) for k, v in inputs.items()},
                        "outputs": {k: spec(k, v) for k, v in fn.structured_outputs.items()},
                        "method_name": "tensorflow/serving/predict"}
        return out

    def predict_bytes(self, images: Sequence[bytes], batch_size: int = 32) -> Dict[str, np.ndarray]:
        """The serving_default outputs for encoded images: meteor_probability (float32), label (str), class_id.

        A batch holding a non-image raises tf.errors.InvalidArgumentError naming it; the model stays usable."""
        import tensorflow as tf

        fn = self._signatures[SIGNATURE_BYTES]
        images = list(images)
        return self._batched(lambda chunk: fn(**{BYTES_INPUT: tf.constant(chunk, dtype=tf.string)}), images,
                             batch_size, len(images))

    def predict_images(self, images, batch_size: int = 32) -> Dict[str, np.ndarray]:
        """The predict_images outputs for model inputs (N, S, S, 1) float32 gray 0..255."""
        images = self._check_images(images)
        fn = self._signatures[SIGNATURE_IMAGES]
        return self._batched(lambda chunk: fn(**{IMAGES_INPUT: chunk}), images, batch_size, len(images))

    def explain_images(self, images, batch_size: int = 32) -> Dict[str, np.ndarray]:
        """Grad-CAM heat maps (N, S, S) in 0..1 and meteor probabilities (the explain_images signature)."""
        if SIGNATURE_EXPLAIN not in self._signatures:
            raise ValueError(f"{self.path} has no {SIGNATURE_EXPLAIN} signature (exported without Grad-CAM)")
        images = self._check_images(images)
        fn = self._signatures[SIGNATURE_EXPLAIN]
        return self._batched(lambda chunk: fn(**{IMAGES_INPUT: chunk}), images, batch_size, len(images))

    def _check_images(self, images) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        s = self.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 1):
            raise ValueError(f"images must be (N, {s}, {s}, 1) gray 0..255 (meteor_tf.data.preprocess."
                             f"to_model_input), got shape {images.shape}")
        return images

    @staticmethod
    def _batched(call, items, batch_size: int, n: int) -> Dict[str, np.ndarray]:
        parts = [call(items[i:i + batch_size]) for i in range(0, n, max(1, batch_size))]
        if not parts:
            return {"meteor_probability": np.zeros((0,), np.float32), "label": np.zeros((0,), dtype=str),
                    "class_id": np.zeros((0,), np.int32)}
        out = {}
        for key in parts[0]:
            value = np.concatenate([p[key].numpy() for p in parts])
            out[key] = np.array([v.decode() for v in value], dtype=str) if value.dtype == object else value
        return out
