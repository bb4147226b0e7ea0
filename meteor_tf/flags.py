"""Every experiment flag, defined once (absl); `train` and `tune` (meteor_tf.cli) share them and build an
ExperimentConfig.

The library never reads flags: `config_from_flags()` is the only bridge. How commands parse flags (--help, exit
status 2 on a bad flag) is meteor_tf.cli._common.
"""

from __future__ import annotations

import shlex
from typing import List

from absl import flags

from meteor_tf import config as cfg

FLAGS = flags.FLAGS
_DEFAULTS = cfg.ExperimentConfig()


def define_flags() -> None:
    """Defines the experiment flags (idempotent, so tests and several entry points can call it)."""
    if "depth" in FLAGS:
        return
    d = _DEFAULTS
    # model
    flags.DEFINE_enum("depth", str(d.depth), [str(x) for x in cfg.DEPTHS], "ResNet depth (the paper's Table 1).")
    flags.DEFINE_enum("layout", d.layout, list(cfg.LAYOUTS),
                      "torchvision: the paper's PyTorch layout (stride on the 3x3 conv, no conv biases); "
                      "keras: keras.applications' layout (50/101 only) so Keras's own ImageNet weights load.")
    flags.DEFINE_enum("pretrain", d.pretrain, list(cfg.PRETRAINS),
                      "Backbone initialisation: ImageNet weights, a ResNet pretrained on Fashion-MNIST, or none "
                      "(train from scratch).")
    flags.DEFINE_string("weights", d.weights,
                        "Weights to start from: an ImageNet checkpoint (.safetensors / .pth from torchvision or "
                        "timm, a keras.applications .h5, a keras-hub preset directory) or our own backbone "
                        "(.weights.h5, e.g. a Fashion-MNIST backbone). Default: the standard places.")
    flags.DEFINE_list("head_units", [str(u) for u in d.head_units], "Widths of the head's Dense layers.")
    flags.DEFINE_list("head_dropout", [str(r) for r in d.head_dropout], "Dropout rate after each head layer.")
    flags.DEFINE_boolean("head_batch_norm", d.head_batch_norm,
                         "BatchNormalization on the pooled features and after each head layer, as fastai's head "
                         "(the paper's framework); without it the paper's head LR 0.03 diverges.")
    flags.DEFINE_integer("frozen_convs", d.frozen_convs, "Convolutions kept frozen while fine-tuning (paper: 6).")
    # data
    flags.DEFINE_string("data", d.data, "'embedded' (the built-in night-sky dataset) or a folder with one "
                        "subfolder per class (see --class_dirs).")
    flags.DEFINE_list("class_dirs", list(d.class_dirs), "Subfolder names for the meteor and non-meteor classes.")
    flags.DEFINE_integer("image_size", d.image_size, "Square model input size in pixels (paper: 224).")
    flags.DEFINE_enum("input_rule", d.input_rule, list(cfg.INPUT_RULES),
                      "How a capture becomes the square input: 'resize' the whole capture, or 'detect': a "
                      "2*image_size-pixel window around its strongest line-like structure (README: input handling).")
    flags.DEFINE_enum("augment", d.augment, list(cfg.AUGMENTS), "Run-time augmentation (paper Table 2).")
    flags.DEFINE_integer("embedded_meteors", d.embedded_meteors, "Meteor captures in the embedded dataset.")
    flags.DEFINE_integer("embedded_non_meteors", d.embedded_non_meteors,
                         "Non-meteor captures in the embedded dataset.")
    flags.DEFINE_string("tfds_data_dir", d.tfds_data_dir, "tensorflow-datasets data dir (default: ~/tensorflow_datasets).")
    # evaluation
    flags.DEFINE_integer("folds", d.folds, "Stratified group K-fold CV folds; 1 = a single hold-out run.")
    flags.DEFINE_float("holdout_fraction", d.holdout_fraction, "Test fraction when --folds=1.")
    flags.DEFINE_float("val_fraction", d.val_fraction,
                       "Inner validation split of the training folds (LR finding, checkpoint, threshold).")
    flags.DEFINE_float("target_recall", d.target_recall, "Meteor recall the recall-first threshold must reach.")
    # training
    flags.DEFINE_boolean("fine_tune", d.fine_tune, "Fine-tune after training the head (paper: yes).")
    flags.DEFINE_integer("head_epochs", d.head_epochs, "Epochs of the head phase (default: SGDR cycles 1+2+4).")
    flags.DEFINE_integer("fine_tune_epochs", d.fine_tune_epochs, "Epochs of the fine-tune (or from-scratch) phase.")
    flags.DEFINE_integer("batch_size", d.batch_size, "Batch size per replica.")
    flags.DEFINE_boolean("lr_find", d.lr_find, "Run the LR range test before each phase and use its suggestion "
                         "(unless --lr_head / --lr_fine_tune are given).")
    flags.DEFINE_float("lr_head", d.lr_head, "Head-phase LR (default: the paper's 0.03; 0.0002 from scratch).")
    flags.DEFINE_float("lr_fine_tune", d.lr_fine_tune, "Fine-tune LR (default: the paper's 0.001).")
    flags.DEFINE_float("weight_decay", d.weight_decay, "Decoupled weight decay (AdamW) when > 0.")
    flags.DEFINE_float("sgdr_first_cycle_epochs", d.sgdr_first_cycle_epochs, "SGDR: length of the first cycle.")
    flags.DEFINE_float("sgdr_t_mul", d.sgdr_t_mul, "SGDR: cycle length multiplier after each restart.")
    flags.DEFINE_float("sgdr_m_mul", d.sgdr_m_mul, "SGDR: peak LR multiplier after each restart.")
    flags.DEFINE_float("sgdr_min_lr", d.sgdr_min_lr, "SGDR: LR floor.")
    flags.DEFINE_enum("fmnist_backbone", d.fmnist_backbone, list(cfg.FMNIST_BACKBONES),
                      "--pretrain=fashion_mnist: 'shipped' loads the package's ResNet-18 pretrained on all of "
                      "Fashion-MNIST (offline; depth 18, torchvision layout); 'pretrain' pretrains and caches one "
                      "with the --fmnist_* settings (other depths/layouts).")
    flags.DEFINE_integer("fmnist_image_size", d.fmnist_image_size, "Fashion-MNIST pretraining input size.")
    flags.DEFINE_integer("fmnist_epochs", d.fmnist_epochs, "Fashion-MNIST pretraining epochs.")
    flags.DEFINE_integer("fmnist_examples", d.fmnist_examples, "Fashion-MNIST training examples (0 = all 60,000).")
    flags.DEFINE_float("fmnist_lr", d.fmnist_lr, "Fashion-MNIST pretraining LR (paper: 0.01).")
    flags.DEFINE_boolean("retrain_final", d.retrain_final,
                         "After CV, retrain on all the data with the CV settings (the model to export).")
    # execution
    flags.DEFINE_enum("strategy", d.strategy, list(cfg.STRATEGIES),
                      "tf.distribute strategy; auto = MirroredStrategy over all GPUs when there are any.")
    flags.DEFINE_enum("mixed_precision", d.mixed_precision, list(cfg.MIXED_PRECISIONS),
                      "Mixed precision policy. auto: mixed_bfloat16 on a CPU with AVX512_BF16 or AMX (measured "
                      "faster, same accuracy), float32 on other CPUs, mixed_bfloat16 on GPUs of compute capability "
                      ">= 8, mixed_float16 on 7.x; a resumed run keeps the precision it started with.")
    flags.DEFINE_boolean("jit_compile", d.jit_compile,
                         "Compile train steps with XLA. Unset: Keras's rule (XLA on GPUs, off on CPU, where it "
                         "measured no faster once its longer tracing is counted).")
    flags.DEFINE_integer("fold_workers", d.fold_workers,
                         "Processes that train folds (and the final model) at once on this machine, the cores shared "
                         "among them (README: measured speed-ups). Several machines can also share one --output_dir: "
                         "run the same command on each; every fold and the final model is claimed by one worker.",
                         lower_bound=1)
    flags.DEFINE_boolean("cache_features", d.cache_features,
                         "Train the head on backbone features computed once (frozen backbone, no augmentation).")
    flags.DEFINE_integer("seed", d.seed, "Seed for folds, shuffling and initialisation.")
    flags.DEFINE_string("output_dir", d.output_dir, "Where run directories are written.")
    flags.DEFINE_string("run_id", d.run_id, "Run directory name (default: derived from the settings).")
    flags.DEFINE_string("pretrain_cache_dir", d.pretrain_cache_dir,
                        "Where Fashion-MNIST backbones are cached (default: ~/.cache/meteor_tf/pretrained).")


def define_column_flag() -> None:
    """--column (main only): a set of runs, each a few overrides of the experiment flags (idempotent)."""
    if "column" in FLAGS:
        return
    flags.DEFINE_multi_string(
        "column", [],
        "Run several configurations in turn, one per value: space-separated name=value overrides of the "
        "experiment flags, e.g. --column='depth=50 pretrain=imagenet' --column='depth=18 pretrain=fashion_mnist' "
        "(the paper's table columns; see flags/*.cfg).")


def define_export_flags() -> None:
    """--export / --export_dir (main only): export the run's final model when the run ends (idempotent)."""
    if "export" in FLAGS:
        return
    flags.DEFINE_boolean("export", False, "After the run, export its final model (--retrain_final) as a SavedModel "
                         "for TF Serving: EXPORT_DIR/meteor/<next version> (see python -m meteor_tf.export).")
    flags.DEFINE_string("export_dir", "savedmodels", "Where --export writes (TF Serving's base directory).")


def configs_from_flags() -> List[cfg.ExperimentConfig]:
    """One config per --column (or the flags alone when there is none)."""
    specs = FLAGS["column"].value if "column" in FLAGS else []
    return [config_from_flags(o) for o in (columns(specs) or [{}])]


def config_from_flags(overrides: dict | None = None) -> cfg.ExperimentConfig:
    """Builds the ExperimentConfig from the parsed flags (plus `overrides`, e.g. one --column)."""
    values = {}
    for field in cfg.ExperimentConfig.flat_names():
        if field in FLAGS:
            values[field] = FLAGS[field].value
    values.update(overrides or {})
    return cfg.ExperimentConfig(**_typed(values))


def _typed(values: dict) -> dict:
    """Converts flag strings/lists to the dataclass field types."""
    out = dict(values)
    out["depth"] = int(out["depth"])
    for key in ("head_units",):
        out[key] = tuple(int(x) for x in out[key])
    for key in ("head_dropout",):
        out[key] = tuple(float(x) for x in out[key])
    out["class_dirs"] = tuple(out["class_dirs"])
    return out


def parse_column(spec: str) -> dict:
    """Parses one `--column` value: space-separated `name=value` experiment overrides, e.g.
    'depth=50 pretrain=imagenet'. Values are parsed by the flag of the same name, so they are checked."""
    overrides = {}
    for item in shlex.split(spec):
        if "=" not in item:
            raise ValueError(f"--column={spec!r}: expected space-separated name=value pairs, got {item!r}")
        name, value = item.split("=", 1)
        name = name.lstrip("-")
        if name not in FLAGS or name not in cfg.ExperimentConfig.flat_names():
            raise ValueError(f"--column={spec!r}: {name!r} is not an experiment flag")
        flag = FLAGS[name]
        overrides[name] = flag.parser.parse(value) if not isinstance(flag.parser, flags.BooleanParser) \
            else value.lower() in ("1", "true", "yes")
    return overrides


def column_label(spec: str) -> str:
    return " ".join(shlex.split(spec))


def columns(specs: List[str]) -> List[dict]:
    return [parse_column(s) for s in specs]
