"""The experiment's settings as plain dataclasses (no absl here: the library never reads flags)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Optional, Tuple

# The allowed values of each setting: their one owner (models, training, flags and the tuner import them).
DEPTHS = (18, 34, 50, 101)  # the ResNets of the paper's Table 1 (models.resnet builds them)
LAYOUTS = ("torchvision", "keras")
PRETRAINS = ("imagenet", "fashion_mnist", "none")
AUGMENTS = ("none", "on_side", "complete")
INPUT_RULES = ("resize", "detect")  # how a capture becomes the model input (meteor_tf.data.preprocess)
DEFAULT_INPUT_RULE = "resize"
STRATEGIES = ("auto", "cpu", "mirrored", "multi_worker", "tpu")
MIXED_PRECISIONS = ("auto", "none", "float16", "bfloat16")
FMNIST_BACKBONES = ("shipped", "pretrain")
FMNIST_PRETRAIN_FIELDS = ("fmnist_image_size", "fmnist_epochs", "fmnist_examples", "fmnist_lr")

# The paper's learning rates (section 5), used when the LR range test is off.
PAPER_LR_HEAD = 0.03
PAPER_LR_FINE_TUNE = 0.001
PAPER_LR_SCRATCH = 0.0002
PAPER_LR_FASHION_MNIST = 0.01


INF = float("inf")
# Every numeric setting's allowed range, checked before any work starts: (low, high, low_open, high_open).
RANGES = {
    "frozen_convs": (0, INF, False, True),
    "image_size": (32, 4096, False, False),
    "embedded_meteors": (1, 10**6, False, False),
    "embedded_non_meteors": (1, 10**6, False, False),
    "folds": (1, 1000, False, False),
    "holdout_fraction": (0.0, 1.0, True, True),
    "val_fraction": (0.0, 1.0, True, True),
    "target_recall": (0.0, 1.0, True, False),
    "head_epochs": (1, 10**5, False, False),
    "fine_tune_epochs": (1, 10**5, False, False),
    "batch_size": (1, 2**20, False, False),
    "lr_head": (0.0, INF, True, True),
    "lr_fine_tune": (0.0, INF, True, True),
    "weight_decay": (0.0, INF, False, True),
    "sgdr_first_cycle_epochs": (0.0, INF, True, True),
    "sgdr_t_mul": (1.0, INF, False, True),
    "sgdr_m_mul": (0.0, 1.0, True, False),
    "sgdr_min_lr": (0.0, INF, False, True),
    "fmnist_image_size": (32, 4096, False, False),
    "fmnist_epochs": (1, 10**5, False, False),
    "fmnist_examples": (0, 60000, False, False),
    "fmnist_lr": (0.0, INF, True, True),
}
PER_ENTRY_RANGES = {"head_units": (1, 2**20, False, False), "head_dropout": (0.0, 1.0, False, True)}


def _interval(low, high, low_open, high_open) -> str:
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def _in_range(value, low, high, low_open, high_open) -> bool:
    return (value > low if low_open else value >= low) and (value < high if high_open else value <= high)


def check_ranges(values: dict) -> None:
    """ValueError naming the first setting outside its range (RANGES), its allowed interval and the value given."""
    for name, bounds in RANGES.items():
        value = values.get(name)
        if value is not None and not _in_range(value, *bounds):
            raise ValueError(f"--{name}={value} is out of range: allowed {_interval(*bounds)}")
    for name, bounds in PER_ENTRY_RANGES.items():
        for value in values.get(name) or ():
            if not _in_range(value, *bounds):
                raise ValueError(f"--{name}={','.join(map(str, values[name]))} is out of range: each entry must be "
                                 f"in {_interval(*bounds)}, got {value}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that decides what a run computes. Fields that only change speed or where files go are marked
    in `NOT_IN_RUN_ID` and do not change the run id."""

    # model
    depth: int = 18
    layout: str = "torchvision"
    pretrain: str = "fashion_mnist"
    weights: Optional[str] = None  # file/dir with ImageNet or Fashion-MNIST weights; None: the default places
    head_units: Tuple[int, ...] = (1024, 512)
    head_dropout: Tuple[float, ...] = (0.5, 0.25)
    head_batch_norm: bool = True  # fastai's head BatchNorms: the paper's head LR 0.03 diverges without them
    frozen_convs: int = 6
    # data
    data: str = "embedded"  # "embedded" or a folder with one subfolder per class
    class_dirs: Tuple[str, str] = ("meteor", "non_meteor")
    image_size: int = 224
    input_rule: str = DEFAULT_INPUT_RULE  # how a capture becomes the S×S input (meteor_tf.data.preprocess)
    augment: str = "none"
    embedded_meteors: int = 1000
    embedded_non_meteors: int = 660
    # evaluation
    folds: int = 10  # 1 = a single hold-out run
    holdout_fraction: float = 0.2
    val_fraction: float = 0.15  # inner validation split of the training folds
    target_recall: float = 0.99
    # training
    fine_tune: bool = True
    head_epochs: int = 7
    fine_tune_epochs: int = 7
    batch_size: int = 32
    lr_find: bool = False
    lr_head: Optional[float] = None  # None: the paper's value (or the LR range test's suggestion with lr_find)
    lr_fine_tune: Optional[float] = None
    weight_decay: float = 0.0
    sgdr_first_cycle_epochs: float = 1.0
    sgdr_t_mul: float = 2.0
    sgdr_m_mul: float = 1.0
    sgdr_min_lr: float = 1e-5
    # Fashion-MNIST backbone (pretrain="fashion_mnist"): "shipped" loads the package's pretrained ResNet-18
    # (models.presets), "pretrain" pretrains (and caches) one with the fmnist_* settings below
    fmnist_backbone: str = "shipped"
    fmnist_image_size: int = 32
    fmnist_epochs: int = 2
    fmnist_examples: int = 0  # 0 = all 60,000
    fmnist_lr: float = 0.01
    retrain_final: bool = True
    # execution (not part of the run id)
    strategy: str = "auto"
    mixed_precision: str = "auto"  # float32 on CPU, bfloat16/float16 on GPUs (distribute.auto_mixed_precision)
    jit_compile: Optional[bool] = None  # None: Keras's "auto" (XLA on GPUs, off on CPU: measured, README)
    cache_features: bool = True
    seed: int = 42
    output_dir: str = "runs"
    run_id: Optional[str] = None
    tfds_data_dir: Optional[str] = None
    pretrain_cache_dir: Optional[str] = None

    NOT_IN_RUN_ID = ("strategy", "mixed_precision", "jit_compile", "cache_features", "output_dir", "run_id",
                     "tfds_data_dir", "pretrain_cache_dir")

    def __post_init__(self):
        _check("depth", self.depth, DEPTHS)
        _check("layout", self.layout, LAYOUTS)
        _check("pretrain", self.pretrain, PRETRAINS)
        _check("augment", self.augment, AUGMENTS)
        _check("input_rule", self.input_rule, INPUT_RULES)
        _check("strategy", self.strategy, STRATEGIES)
        _check("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        _check("fmnist_backbone", self.fmnist_backbone, FMNIST_BACKBONES)
        if self.fmnist_backbone == "shipped":
            given = [f"--{name}={getattr(self, name)}" for name in FMNIST_PRETRAIN_FIELDS
                     if getattr(self, name) != ExperimentConfig.__dataclass_fields__[name].default]
            if given:
                raise ValueError(f"{' '.join(given)} set(s) how to pretrain on Fashion-MNIST, but "
                                 "--fmnist_backbone=shipped (the default) loads the shipped, already pretrained "
                                 "backbone: add --fmnist_backbone=pretrain to pretrain one with these settings, or "
                                 "drop them")
        if self.layout == "keras" and self.depth not in (50, 101):
            raise ValueError(f"--layout=keras exists for depth 50 and 101 only (keras.applications); "
                             f"got --depth={self.depth}. Use --layout=torchvision.")
        if self.image_size < 32:
            raise ValueError(f"--image_size must be at least 32 pixels, got {self.image_size}")
        check_ranges(dataclasses.asdict(self))
        if len(self.head_units) != len(self.head_dropout):
            raise ValueError(f"--head_units ({self.head_units}) and --head_dropout ({self.head_dropout}) "
                             "need the same number of entries")
        if self.folds < 1:
            raise ValueError(f"--folds must be >= 1 (1 = single hold-out run), got {self.folds}")
        if not 0 <= self.frozen_convs:
            raise ValueError(f"--frozen_convs must be >= 0, got {self.frozen_convs}")

    @property
    def lr_head_value(self) -> float:
        """The head-phase LR when the LR range test is off (the paper's: 0.03 pretrained, 0.0002 scratch)."""
        if self.lr_head is not None:
            return self.lr_head
        return PAPER_LR_SCRATCH if self.pretrain == "none" else PAPER_LR_HEAD

    @property
    def lr_fine_tune_value(self) -> float:
        if self.lr_fine_tune is not None:
            return self.lr_fine_tune
        return PAPER_LR_SCRATCH if self.pretrain == "none" else PAPER_LR_FINE_TUNE

    @property
    def normalization(self) -> str:
        """How pixels are normalised inside the model: as the weights in use expect."""
        if self.pretrain == "imagenet":
            return "caffe" if self.layout == "keras" else "torch"
        return "unit"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "ExperimentConfig":
        return dataclasses.replace(self, **changes)

    def derived_run_id(self) -> str:
        """Stable id from the settings that decide the results, so rerunning a command finds its run."""
        if self.run_id:
            return self.run_id
        fields = {k: v for k, v in self.to_dict().items() if k not in self.NOT_IN_RUN_ID}
        digest = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:8]
        tune = "ft" if self.fine_tune else "head"
        return f"resnet{self.depth}-{self.pretrain}-{self.augment}-{self.image_size}px-{self.folds}fold-{tune}-{digest}"

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
        return cls(**d)


def input_rule_of(settings: dict) -> str:
    """The input rule a run's config or a model's metadata names; models from before input rules existed resized."""
    return settings.get("input_rule") or DEFAULT_INPUT_RULE


def _check(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"--{name}={value!r} is not one of {', '.join(map(str, allowed))}")
