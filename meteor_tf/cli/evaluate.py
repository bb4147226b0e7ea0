"""python -m meteor_tf.evaluate — score a model on your own labelled captures: does the filter work on my camera?

    python -m meteor_tf.evaluate --data=labelled/ --model=savedmodels/meteor          # a SavedModel (newest version)
    python -m meteor_tf.evaluate --data=labelled/ --model=runs/<run id>               # a run's final model
    python -m meteor_tf.evaluate --data=labelled/ --model=model.tflite --out=report/

--data holds meteor/ and non_meteor/ (searched recursively) and optionally manifest.csv
(file,label,label_strength,source: per-source figures). Prints a Markdown report and writes report.md, report.json
and misses.png (the worst misses, real pixels: keep --out outside a repository) to --out.
See meteor_tf.evaluation.real_captures for what is measured.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from absl import flags

from meteor_tf.cli import _common

FLAGS = flags.FlagValues()
flags.DEFINE_string("data", None, "Folder with meteor/ and non_meteor/ (and an optional manifest.csv).",
                    flag_values=FLAGS)
flags.DEFINE_string("model", None, "A SavedModel (savedmodels/NAME or a version dir), a .tflite file, a .keras file "
                    "(threshold 0.5 unless --threshold), or a run directory (its final model). Default: the shipped "
                    "filter.", flag_values=FLAGS)
flags.DEFINE_float("threshold", None, "Meteor when p >= this (default: the model's recall-first threshold).",
                   lower_bound=0.0, upper_bound=1.0, flag_values=FLAGS)
flags.DEFINE_list("class_dirs", ["meteor", "non_meteor"], "Subfolder names of the two classes.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Report folder (default: runs/evaluate/<time>).", flag_values=FLAGS)
flags.DEFINE_boolean("crops", True, "Also score centre-square crops of each capture.", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Images per inference call.", lower_bound=1, flag_values=FLAGS)


def main(argv) -> int:
    _common.no_positional_args(argv)
    if not FLAGS.data:
        return _common.bad_input("--data=DIR is required (a folder with meteor/ and non_meteor/)")
    if len(FLAGS.class_dirs) != 2:
        return _common.bad_input(f"--class_dirs needs two names, got {FLAGS.class_dirs}")
    from meteor_tf.evaluation import real_captures as rc
    from meteor_tf.models import presets
    from meteor_tf.serving import client
    from meteor_tf.serving.client import ServingError
    from meteor_tf.serving.export import ExportError

    out = Path(FLAGS.out or f"runs/evaluate/{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        model = FLAGS.model or str(presets.shipped_filter_path())
        with tempfile.TemporaryDirectory(prefix="meteor-evaluate-") as tmp:
            with client.open_model(model, Path(tmp), FLAGS.threshold) as backend:
                result = rc.evaluate_folder(backend, FLAGS.data, FLAGS.class_dirs, FLAGS.threshold,
                                            FLAGS.batch_size, crops=FLAGS.crops, progress=sys.stderr.isatty())
    except (FileNotFoundError, ValueError, ExportError, ServingError, presets.PresetError) as e:
        return _common.bad_input(e)
    out.mkdir(parents=True, exist_ok=True)
    report = rc.markdown(result)
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(json.dumps(result, indent=2, default=float))
    rc.misses_sheet(result, out / "misses.png")
    print(report)
    print(f"report, per-file JSON and misses.png in {out}")
    return 0


run = _common.own_entry_point(main, FLAGS, __doc__)  # the console script `meteor-evaluate`


if __name__ == "__main__":
    run()
