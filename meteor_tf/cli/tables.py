"""python -m meteor_tf.tables — finished runs in the paper's table layout, beside the published numbers.

    python -m meteor_tf.tables --output_dir=runs --out=docs/results.md
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from meteor_tf.cli import _common

# A FlagValues of its own: `train` has an --output_dir of its own on the global FLAGS.
FLAGS = flags.FlagValues()
flags.DEFINE_string("output_dir", "runs", "Where the runs are (main's --output_dir).", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Also write the markdown to this file.", flag_values=FLAGS)


def main(argv) -> int:
    _common.no_positional_args(argv)
    from meteor_tf.evaluation.tables import paper_tables

    text = paper_tables(FLAGS.output_dir)
    print(text)
    if FLAGS.out:
        Path(FLAGS.out).write_text(text)
    return 0


run = _common.own_entry_point(main, FLAGS, __doc__, tensorflow=False)  # the console script `meteor-tables`


if __name__ == "__main__":
    run()
