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
from pathlib import Path

from absl import flags

from meteor_tf.cli import _common

TFLITE_CHOICES = ("none", "float", "dynamic", "int8")

# A FlagValues of its own: importing this module beside the experiment flags (which also have --data and
# --batch_size) never clashes, whatever the import order.
FLAGS = flags.FlagValues()
flags.DEFINE_string("run", None, "Run directory whose final model to export (runs/<run id>, written by "
                    "python -m meteor_tf.main; needs final/model.keras).", flag_values=FLAGS)
flags.DEFINE_string("model", None, "Instead of --run: an existing export to convert to TFLite "
                    "(savedmodels/meteor for its newest version, or savedmodels/meteor/3).", flag_values=FLAGS)
flags.DEFINE_string("base_dir", "savedmodels", "Where exports go: BASE_DIR/NAME/<version>/ (TF Serving's layout).",
                    flag_values=FLAGS)
flags.DEFINE_string("name", "meteor", "Model name: the directory under --base_dir and TF Serving's model name.",
                    flag_values=FLAGS)
flags.DEFINE_integer("version", None, "Version number to write (default: one more than the newest). An "
                     "existing version is never overwritten.", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_list("tflite", [], f"TFLite conversions of the float signature, comma-separated: float, dynamic "
                  f"(int8 weights), int8 (int8 weights and activations, calibrated on captures); none = no "
                  f"conversion. Prints an accuracy comparison with the SavedModel.", flag_values=FLAGS)
flags.DEFINE_string("tflite_dir", None, "Where .tflite files (and their .json metadata) go "
                    "(default: BASE_DIR/NAME-tflite).", flag_values=FLAGS)
flags.DEFINE_string("data", None, "Folder of labelled captures (meteor/ and non_meteor/ subfolders) for the "
                    "TFLite comparison and int8 calibration (default: the run's own data).", flag_values=FLAGS)
flags.DEFINE_integer("calibration_images", 200, "Captures used to calibrate int8 activation ranges.",
                     lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("compare_images", 0, "Compare on at most this many captures (0 = the whole validation set).",
                     lower_bound=0, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Batch size of the comparison.", lower_bound=1, flag_values=FLAGS)


class BadInput(Exception):
    """A flag combination this command cannot do."""


def main(argv) -> int:
    _common.no_positional_args(argv)
    _common.setup_logging(quiet_tensorflow=True)
    from meteor_tf.data import DataError
    from meteor_tf.serving.export import ExportError

    try:
        return _run()
    except (BadInput, ExportError, DataError) as e:
        return _common.bad_input(e)


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
        validation, labels, calibration, source = export.comparison_data(
            meta, FLAGS.data, calibration_images=FLAGS.calibration_images, compare_images=FLAGS.compare_images)
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


run = _common.own_entry_point(main, FLAGS, __doc__)  # the console script `meteor-export`


if __name__ == "__main__":
    run()
