"""python -m meteor_tf.tables — finished runs in the paper's table layout, beside the published numbers.

    python -m meteor_tf.tables --output_dir=runs --out=docs/results.md
"""

from pathlib import Path

from absl import app, flags

flags.DEFINE_string("output_dir", "runs", "Where the runs are (main's --output_dir).")
flags.DEFINE_string("out", None, "Also write the markdown to this file.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from meteor_tf.evaluation.tables import paper_tables

    text = paper_tables(FLAGS.output_dir)
    print(text)
    if FLAGS.out:
        Path(FLAGS.out).write_text(text)


if __name__ == "__main__":
    app.run(main)
