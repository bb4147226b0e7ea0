"""python -m meteor_tf.predict — classify a folder of captures, in process or through a TF Serving-compatible server.

    python -m meteor_tf.predict --model=savedmodels/meteor --input=captures/ --output=results.csv
    python -m meteor_tf.predict --model=savedmodels/meteor --input=captures/ --sort=review/      # review copies
    python -m meteor_tf.predict --server=http://127.0.0.1:8501 --input=captures/                # REST
    python -m meteor_tf.predict --server=grpc://127.0.0.1:8500 --input=captures/                # gRPC
    python -m meteor_tf.predict --model=savedmodels/meteor-tflite/meteor-v1-dynamic.tflite --input=captures/
    python -m meteor_tf.predict --model=savedmodels/meteor --input=captures/ --explain=gradcam/  # Grad-CAM PNGs

See meteor_tf.serving.predict for the CSV columns, the review-folder names and what is never overwritten.
Bad input (missing model, model without versions, empty input folder, unreachable server) ends with one line and
exit status 2; unreadable images are listed in the CSV and the summary while the run goes on.
"""

from __future__ import annotations

from absl import flags

from meteor_tf.cli import _common

# A FlagValues of its own: importing this module beside the other CLIs (which have --model, --threshold, --overwrite,
# --batch_size of their own) cannot collide, whatever the import order.
FLAGS = flags.FlagValues()
flags.DEFINE_string("model", None, "Exported model to run in process: savedmodels/NAME (newest version), a version "
                    "dir savedmodels/NAME/VERSION, or a .tflite file. Give this or --server.", flag_values=FLAGS)
flags.DEFINE_string("server", None, "A running server instead of --model: http://HOST:8501 (REST) or "
                    "grpc://HOST:8500 (gRPC); TF Serving, KServe or python -m meteor_tf.serve.", flag_values=FLAGS)
flags.DEFINE_string("model_name", "meteor", "The model's name on the server (--server only).", flag_values=FLAGS)
flags.DEFINE_string("input", None, "Folder of captures, searched recursively.", flag_values=FLAGS)
flags.DEFINE_string("output", "results.csv", "CSV written: path, meteor_probability, label, error.", flag_values=FLAGS)
flags.DEFINE_bool("overwrite", False, "Replace --output when it exists (otherwise the run refuses to start).",
                  flag_values=FLAGS)
flags.DEFINE_float("threshold", None, "Meteor when meteor_probability >= this. Default: the model's recall-first "
                   "threshold stored with it.", flag_values=FLAGS)  # range checked in main (its message)
flags.DEFINE_string("sort", None, "Copy each capture into DIR/meteor/ or DIR/non_meteor/ as <name>_p-0.973.<ext> for "
                    "review; never overwrites.", flag_values=FLAGS)
flags.DEFINE_bool("move", False, "With --sort: move the captures instead of copying them.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Images per inference call (per request with --server).", lower_bound=1,
                     upper_bound=4096, flag_values=FLAGS)
flags.DEFINE_string("explain", None, "Write a Grad-CAM overlay PNG per capture into this folder (a SavedModel --model "
                    "explains itself; with a .tflite model or --server, give --keras_model).", flag_values=FLAGS)
flags.DEFINE_string("keras_model", None, "For --explain: RUN_DIR/final/model.keras, the run directory, or an "
                    "exported savedmodels/NAME dir.", flag_values=FLAGS)
flags.DEFINE_float("timeout", 120.0, "Seconds to wait for a server's answer (--server only).", lower_bound=0.001,
                   flag_values=FLAGS)
flags.DEFINE_bool("progress", True, "Show a progress bar.", flag_values=FLAGS)


def main(argv) -> int:
    _common.no_positional_args(argv)
    try:
        return _predict()
    except (OSError, ValueError) as e:  # bad input: missing model/folder, server down, bad flag: no traceback
        return _common.bad_input(e)


def _predict() -> int:
    if FLAGS.threshold is not None and not 0.0 <= FLAGS.threshold <= 1.0:
        raise ValueError(f"--threshold must be between 0 and 1, got {FLAGS.threshold}")
    if not FLAGS.input:
        raise ValueError("--input is required: the folder of captures to classify")
    if (FLAGS.model is None) == (FLAGS.server is None):
        raise ValueError("give --model=savedmodels/meteor (in process) or --server=http://HOST:8501 (a server), "
                         "exactly one")
    if FLAGS.move and not FLAGS.sort:
        raise ValueError("--move needs --sort=DIR (it moves captures into the review folders)")
    from meteor_tf.serving import client
    from meteor_tf.serving import predict as folder_predict

    folder_predict.find_images(FLAGS.input)  # an empty or missing input fails before any model loads
    folder_predict.check_output_path(FLAGS.output, FLAGS.overwrite)
    if FLAGS.explain and FLAGS.server and not FLAGS.keras_model:  # fail before loading anything
        raise folder_predict.ExplainNeedsKerasModel(
            "--explain with --server needs a local model to take gradients: --keras_model=RUN_DIR/final/model.keras "
            "(or the run directory, or the exported savedmodels/NAME dir)")
    try:
        with client.open_backend(model=FLAGS.model, server=FLAGS.server, name=FLAGS.model_name,
                                 timeout=FLAGS.timeout, threshold=FLAGS.threshold) as backend:
            if FLAGS.server:
                status = backend.status()  # an unreachable server or unknown model fails here, in one line
                if not status.ready:
                    raise client.ServingError(f"{backend.describe()} is not ready ({status.detail or 'not ready'})")
            explainer = folder_predict.GradCamExplainer.load(FLAGS.keras_model, backend) if FLAGS.explain else None
            summary = folder_predict.classify_folder(
                backend, FLAGS.input, output=FLAGS.output, overwrite=FLAGS.overwrite, threshold=FLAGS.threshold,
                batch_size=FLAGS.batch_size, sort_dir=FLAGS.sort, move=FLAGS.move, explainer=explainer,
                explain_dir=FLAGS.explain, progress=FLAGS.progress)
    except client.ServingError as e:
        return _common.bad_input(e)
    print(summary.format())
    return 0


run = _common.own_entry_point(main, FLAGS, __doc__)  # the console script `meteor-predict`


if __name__ == "__main__":
    run()
