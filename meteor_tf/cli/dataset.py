"""`meteor-dataset` / `python -m meteor_tf.data.cli <command>`: the embedded night_sky dataset from the shell.

Commands:
  build          generate the dataset into --tfds_data_dir (once; later calls reuse it)
  contact_sheet  --out=docs/contact_sheet.png: a grid of examples per sub-label (--overwrite to replace it)
  export         --out=DIR: every capture as DIR/{meteor,non_meteor}/<id>_<sub_label>_<kind>.jpg (--overwrite)
  baseline       pixel-statistics baseline accuracy (10-fold stratified group CV)

Common flags: --tfds_data_dir, --meteors, --non_meteors, --seed, --small.
"""

from __future__ import annotations

import os
import time

from absl import app, flags

from meteor_tf.cli import _common

COMMANDS = ("build", "contact_sheet", "export", "baseline")

# A FlagValues of its own: importing this module beside the experiment CLI (which has --seed, --tfds_data_dir,
# --folds, --out of its own) cannot collide, whatever the import order.
FLAGS = flags.FlagValues()
flags.DEFINE_string("tfds_data_dir", None, "tfds data dir for the night_sky dataset (default: tfds's default)",
                    flag_values=FLAGS)
flags.DEFINE_integer("meteors", 1000, "number of meteor captures", lower_bound=0, upper_bound=10**6,
                     flag_values=FLAGS)
flags.DEFINE_integer("non_meteors", 660, "number of non-meteor captures", lower_bound=0, upper_bound=10**6,
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", 0, "dataset seed", lower_bound=0, upper_bound=2**31 - 1, flag_values=FLAGS)
flags.DEFINE_boolean("small", False, "4x smaller images (quick tests)", flag_values=FLAGS)
flags.DEFINE_string("out", None, "output: PNG file (contact_sheet) or folder (export)", flag_values=FLAGS)
flags.DEFINE_boolean("overwrite", False, "export, contact_sheet: replace existing files", flag_values=FLAGS)
flags.DEFINE_integer("per_sub_label", 4, "contact_sheet: examples per sub-label", lower_bound=1, upper_bound=100,
                     flag_values=FLAGS)
flags.DEFINE_integer("folds", 10, "baseline: number of stratified group folds", lower_bound=2,
                     upper_bound=1000, flag_values=FLAGS)


def main(argv) -> int:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: meteor-dataset <{'|'.join(COMMANDS)}> [flags]; got {argv[1:]}")
    command = argv[1]
    from meteor_tf.data.night_sky import builder, tools

    kw = dict(meteors=FLAGS.meteors, non_meteors=FLAGS.non_meteors, seed=FLAGS.seed, small=FLAGS.small)
    if command == "baseline":
        from meteor_tf.data import baseline

        print(baseline.baseline_on_night_sky(FLAGS.tfds_data_dir, folds=FLAGS.folds, **kw))
        return 0
    if command == "contact_sheet" and FLAGS.out and os.path.exists(FLAGS.out) and not FLAGS.overwrite:
        # checked before any generation, so a long build is not wasted on a refusal
        raise app.UsageError(f"--out={FLAGS.out} already exists; pass --overwrite to replace it or choose another path")
    t0 = time.time()
    b = builder.night_sky_builder(FLAGS.tfds_data_dir, **kw)
    was_there = b.is_prepared() if hasattr(b, "is_prepared") else False
    builder.prepare(b)
    if command == "build":
        state = "already there" if was_there else f"generated in {time.time() - t0:.1f} s"
        print(f"night_sky/{b.builder_config.name}: {b.info.splits['train'].num_examples} captures in {b.data_dir}"
              f" ({state})")
        return 0
    if not FLAGS.out:
        raise app.UsageError(f"{command} needs --out")
    if command == "contact_sheet":
        ds = b.as_dataset(split="train")
        print(tools.make_contact_sheet(tools.dataset_examples(ds), FLAGS.out, per_sub_label=FLAGS.per_sub_label))
    elif command == "export":
        import tensorflow_datasets as tfds

        ds = b.as_dataset(split="train", decoders={"image": tfds.decode.SkipDecoding()})  # keep the JPEG bytes
        try:
            counts = tools.export_captures(tools.dataset_examples(ds), FLAGS.out, overwrite=FLAGS.overwrite)
        except FileExistsError as e:
            raise app.UsageError(str(e))
        print(f"wrote {counts} to {FLAGS.out}")
    return 0


run = _common.own_entry_point(main, FLAGS, __doc__)  # the console script `meteor-dataset`


if __name__ == "__main__":
    run()
