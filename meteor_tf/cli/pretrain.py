"""python -m meteor_tf.pretrain — pretrain a ResNet backbone on all of Fashion-MNIST (the paper's winning source of
features), resumably, and write its weights with a JSON of settings, test accuracy and provenance.

    python -m meteor_tf.pretrain --out=runs/pretrain/resnet18_fashion_mnist.weights.h5      # the shipped recipe
    python -m meteor_tf.pretrain --out=... --depth=34 --image_size=96 --epochs=3            # another backbone

Kill it at any time and rerun the same command: it continues after the last complete epoch (backups in
--work_dir, default `<out>.work/`). The shipped backbone (meteor_tf/presets/) came from the defaults; see
`meteor_tf.models.presets` for how it was made compact (float16) and checked.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from meteor_tf.cli import _common
from meteor_tf.quiet_tf import import_tensorflow

import_tensorflow()  # training.pretrain imports TensorFlow at once: without its start-up noise
from meteor_tf.training.pretrain import PretrainSettings  # noqa: E402

FLAGS = flags.FlagValues()
_d = PretrainSettings()
flags.DEFINE_string("out", None, "Where to write the backbone (.weights.h5); its JSON goes beside it.", flag_values=FLAGS)
flags.DEFINE_string("work_dir", None, "Per-epoch backups and log, for resuming (default: <out>.work).",
                    flag_values=FLAGS)
flags.DEFINE_enum("depth", str(_d.depth), ["18", "34", "50", "101"], "ResNet depth.", flag_values=FLAGS)
flags.DEFINE_enum("layout", _d.layout, ["torchvision", "keras"], "ResNet layout.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", _d.image_size, "Input size in px (Fashion-MNIST's 28 px are upscaled).",
                     lower_bound=32, flag_values=FLAGS)
flags.DEFINE_integer("epochs", _d.epochs, "Epochs (7 = SGDR cycles 1+2+4).", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_float("lr", _d.lr, "Adam's peak LR (the paper's 0.01).", lower_bound=0.0, flag_values=FLAGS)
flags.DEFINE_integer("batch_size", _d.batch_size, "Batch size.", lower_bound=1, flag_values=FLAGS)
flags.DEFINE_integer("examples", _d.examples, "Training images (0 = all 60,000).", lower_bound=0, flag_values=FLAGS)
flags.DEFINE_boolean("flip", _d.flip, "Random horizontal flips.", flag_values=FLAGS)
flags.DEFINE_integer("seed", _d.seed, "Random seed.", flag_values=FLAGS)
flags.DEFINE_enum("mixed_precision", "auto", ["auto", "none", "float16", "bfloat16"],
                  "Precision policy (auto: the device's best; bfloat16 on CPUs with AVX-512 BF16).", flag_values=FLAGS)
flags.DEFINE_string("tfds_data_dir", None, "tfds data dir for Fashion-MNIST (default ~/tensorflow_datasets).",
                    flag_values=FLAGS)


def main(argv) -> int:
    _common.no_positional_args(argv)
    if not FLAGS.out or not FLAGS.out.endswith(".weights.h5"):
        return _common.bad_input("--out=PATH.weights.h5 is required (where the backbone goes)")
    out = Path(FLAGS.out)
    if out.exists():
        return _common.bad_input(f"{out} exists; remove it or choose another --out (nothing is overwritten)")
    _common.setup_logging()
    from meteor_tf.training import distribute
    from meteor_tf.training.pretrain import pretrain_backbone

    distribute.set_mixed_precision(FLAGS.mixed_precision)
    settings = PretrainSettings(depth=int(FLAGS.depth), layout=FLAGS.layout, image_size=FLAGS.image_size,
                                epochs=FLAGS.epochs, lr=FLAGS.lr, batch_size=FLAGS.batch_size,
                                examples=FLAGS.examples, flip=FLAGS.flip, seed=FLAGS.seed,
                                data_dir=FLAGS.tfds_data_dir)
    work_dir = Path(FLAGS.work_dir) if FLAGS.work_dir else out.with_name(out.name + ".work")
    info = pretrain_backbone(settings, out, work_dir=work_dir, verbose=1 if sys.stderr.isatty() else 2)
    print(f"test accuracy {info['test_accuracy']:.4f} (first 1,000: {info['test_accuracy_first_1000']:.4f}), "
          f"{info['seconds']:.0f} s -> {out}")
    return 0


run = _common.own_entry_point(main, FLAGS, __doc__)  # the console script `meteor-pretrain`


if __name__ == "__main__":
    run()
