"""python -m meteor_tf.export — a run's final model as a SavedModel for TF Serving, and TFLite models for stations.

    python -m meteor_tf.export --run=runs/<run id>                           # → savedmodels/meteor/<next version>
    python -m meteor_tf.export --run=runs/<run id> --tflite=float,dynamic,int8
    python -m meteor_tf.export --model=savedmodels/meteor --tflite=dynamic --data=labelled_captures/

The TFLite conversions are compared with the SavedModel on a validation set (the final model's inner validation
split of the run's data, or the captures of --data=DIR not used for int8 calibration): size, accuracy at the
threshold, label agreement, probability differences, time per image. Bad input ends with a one-line message and exit
status 2. See savedmodels/README.md.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from absl import app, flags

from meteor_tf import flags as mflags

FLAGS = flags.FLAGS
TFLITE_CHOICES = ("none", "float", "dynamic", "int8")


def define_flags() -> None:
    """This command's flags (idempotent). Defined at run time, not on import, so importing this module next to the
    experiment flags (which also have --data and --batch_size) never clashes."""
    if "tflite" in FLAGS:
        return
    flags.DEFINE_string("run", None, "Run directory whose final model to export (runs/<run id>, written by "
                        "python -m meteor_tf.main; needs final/model.keras).")
    flags.DEFINE_string("model", None, "Instead of --run: an existing export to convert to TFLite "
                        "(savedmodels/meteor for its newest version, or savedmodels/meteor/3).")
    flags.DEFINE_string("base_dir", "savedmodels", "Where exports go: BASE_DIR/NAME/<version>/ (TF Serving's layout).")
    flags.DEFINE_string("name", "meteor", "Model name: the directory under --base_dir and TF Serving's model name.")
    flags.DEFINE_integer("version", None, "Version number to write (default: one more than the newest). An "
                         "existing version is never overwritten.", lower_bound=0)
    flags.DEFINE_list("tflite", [], f"TFLite conversions of the float signature, comma-separated: float, dynamic "
                      f"(int8 weights), int8 (int8 weights and activations, calibrated on captures); none = no "
                      f"conversion. Prints an accuracy comparison with the SavedModel.")
    flags.DEFINE_string("tflite_dir", None, "Where .tflite files (and their .json metadata) go "
                        "(default: BASE_DIR/NAME-tflite).")
    flags.DEFINE_string("data", None, "Folder of labelled captures (meteor/ and non_meteor/ subfolders) for the "
                        "TFLite comparison and int8 calibration (default: the run's own data).")
    flags.DEFINE_integer("calibration_images", 200, "Captures used to calibrate int8 activation ranges.",
                         lower_bound=1)
    flags.DEFINE_integer("compare_images", 0, "Compare on at most this many captures (0 = the whole validation set).",
                         lower_bound=0)
    flags.DEFINE_integer("batch_size", 32, "Batch size of the comparison.", lower_bound=1)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])} (flags start with --)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    logging.getLogger("meteor_tf").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_quiet_tensorflow)
    from meteor_tf.data import DataError
    from meteor_tf.serving.export import ExportError

    try:
        return _run()
    except (BadInput, ExportError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)  # bad input: what and how to fix it, no traceback
        return 2


def _quiet_tensorflow(record: logging.LogRecord) -> bool:
    """Drops TensorFlow's INFO lines about saving (logged through absl), which would drown ours; a filter, since
    TensorFlow's import resets the absl logger's level."""
    return record.levelno >= logging.WARNING or record.name not in ("absl", "tensorflow")


class BadInput(Exception):
    """A flag combination this command cannot do."""


def _run() -> int:
    from meteor_tf.serving import export, tflite

    if bool(FLAGS.run) == bool(FLAGS.model):
        raise BadInput("give either --run=RUN_DIR (export a run's final model) or --model=EXPORT (convert an "
                         "existing export to TFLite)")
    conversions = _conversions(FLAGS.tflite)
    if FLAGS.model and not conversions:
        raise BadInput("--model converts an existing export: give --tflite=float,dynamic,int8 (or some of them)")
    if FLAGS.run:
        version_dir = export.export_run(FLAGS.run, FLAGS.base_dir, FLAGS.name, version=FLAGS.version)
    else:
        version_dir = export.resolve_model(FLAGS.model)
    meta = export.load_metadata(version_dir)
    print(f"SavedModel: {version_dir}  (version {meta.get('version')}, {meta['image_size']} px, threshold "
          f"{meta['threshold']:.4f}, signatures {', '.join(sorted(meta['signatures']))})")
    if FLAGS.run:
        print(f"serve it:   tensorflow_model_server --rest_api_port=8501 --model_name={FLAGS.name} "
              f"--model_base_path={version_dir.parent.resolve()}")
    if not conversions:
        return 0

    from meteor_tf.data import DataError

    no_comparison = "no labelled captures for a comparison (give --data=DIR)"
    try:
        validation, labels, calibration, source = _comparison_data(meta)
    except DataError as e:
        if "int8" in conversions or FLAGS.data:
            raise
        # the run's data may live on another machine: convert anyway, compare when given --data
        no_comparison = f"no comparison: the run's captures cannot be read ({str(e).splitlines()[0]}); give --data=DIR"
        validation = labels = calibration = source = None
    if "int8" in conversions and calibration is None:
        raise BadInput("--tflite=int8 calibrates on captures: give --data=DIR (meteor/ and non_meteor/ folders)")
    name = version_dir.parent.name
    out_dir = Path(FLAGS.tflite_dir) if FLAGS.tflite_dir else version_dir.parent.parent / f"{name}-tflite"
    paths = []
    for quantize in conversions:
        path = out_dir / f"{name}-v{meta.get('version', version_dir.name)}-{_label(quantize)}.tflite"
        logging.getLogger("meteor_tf").info("converting to %s", path)
        paths.append(tflite.convert(version_dir, path, quantize, representative_images=calibration,
                                    max_calibration_images=FLAGS.calibration_images))
        print(f"TFLite:     {path}  ({path.stat().st_size / 2**20:.2f} MB) + {tflite.metadata_path(path).name}")
    if validation is None:
        print(no_comparison)
        return 0
    print(f"comparison on {source}:")
    rows = tflite.compare(version_dir, paths, validation, labels, batch_size=FLAGS.batch_size)
    print(tflite.format_comparison(rows, float(meta["threshold"])))
    return 0


def _conversions(values):
    bad = [v for v in values if v not in TFLITE_CHOICES]
    if bad:
        raise BadInput(f"--tflite: {', '.join(bad)} not one of {', '.join(TFLITE_CHOICES)}")
    if "none" in values and len(values) > 1:
        raise BadInput("--tflite=none means no conversion; it cannot be combined with others")
    return [v for v in dict.fromkeys(values) if v != "none"]


def _label(quantize: str) -> str:
    return "float" if quantize in ("none", "float") else quantize


def _comparison_data(meta: dict):
    """(validation images, labels, calibration images, description): from --data, else the run's own data with
    the final model's inner validation split held out of calibration."""
    import numpy as np

    from meteor_tf.config import ExperimentConfig, input_rule_of
    from meteor_tf.data.dataset import load_examples, load_folder

    size = int(meta["image_size"])
    rng = np.random.default_rng(0)
    if FLAGS.data:
        examples = load_folder(FLAGS.data, size, rule=input_rule_of(meta))
        order = rng.permutation(len(examples.labels))
        # calibrate on captures kept out of the comparison when there are enough of them
        n_cal = min(FLAGS.calibration_images, len(order) // 2)
        cal_idx, val_idx = (order[:n_cal], order[n_cal:]) if n_cal else (order, order)
        source = f"{FLAGS.data} ({{n}} captures not used for int8 calibration)"
    elif meta.get("config"):
        config = ExperimentConfig.from_dict(meta["config"])
        examples = load_examples(config)
        split = _final_validation_split(Path(meta.get("run_dir", "")))
        if split is not None and len(split) and split.max() < len(examples.labels):
            val_idx = split
            cal_idx = rng.permutation(np.setdiff1d(np.arange(len(examples.labels)), split))
            source = f"the final model's inner validation split of {examples.source} ({{n}} captures)"
        else:
            val_idx = cal_idx = rng.permutation(len(examples.labels))
            source = f"{examples.source} ({{n}} captures; the final model trained on them)"
    else:
        return None, None, None, None
    if FLAGS.compare_images:
        val_idx = val_idx[:FLAGS.compare_images]
    return (examples.images[val_idx], examples.labels[val_idx], examples.images[cal_idx[:FLAGS.calibration_images]],
            source.replace("{n}", str(len(val_idx))))


def _final_validation_split(run_dir: Path):
    import numpy as np

    for phase in ("fine_tune", "head"):
        path = run_dir / "final" / f"predictions_{phase}.npz"
        if path.is_file():
            return np.load(path)["val_idx"]
    return None


def run() -> None:
    """Console-script entry point."""
    define_flags()
    app.run(main, flags_parser=mflags.global_flags_parser(__doc__, ["meteor_tf.export"]))


if __name__ == "__main__":
    run()
