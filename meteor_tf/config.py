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


# ---------------------------------------------------------------------------------------------------------------
# The parts. Each is frozen, checks its own settings and names them by their flags; a builder receives only its part.
# Field names are the flags' names without the part's prefix (SGDRConfig.t_mul is --sgdr_t_mul).


class _Part:
    """What the parts share: `FLAGS` maps each field to its flag; `flat()` gives {flag name: value}."""

    FLAGS: dict = {}

    def flat(self) -> dict:
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, _Part):
                out.update(value.flat())
            else:
                out[self.FLAGS.get(field.name, field.name)] = value
        return out

    def _check_ranges(self):
        check_ranges(self.flat())

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Part):
    """The classifier: backbone, its pretraining and weights, the head, what fine-tuning freezes, the input size."""

    depth: int = 18
    layout: str = "torchvision"
    pretrain: str = "fashion_mnist"
    weights: Optional[str] = None  # file/dir with ImageNet or Fashion-MNIST weights; None: the default places
    head_units: Tuple[int, ...] = (1024, 512)
    head_dropout: Tuple[float, ...] = (0.5, 0.25)
    head_batch_norm: bool = True  # fastai's head BatchNorms: the paper's head LR 0.03 diverges without them
    frozen_convs: int = 6
    image_size: int = 224

    def __post_init__(self):
        _check("depth", self.depth, DEPTHS)
        _check("layout", self.layout, LAYOUTS)
        _check("pretrain", self.pretrain, PRETRAINS)
        if self.layout == "keras" and self.depth not in (50, 101):
            raise ValueError(f"--layout=keras exists for depth 50 and 101 only (keras.applications); "
                             f"got --depth={self.depth}. Use --layout=torchvision.")
        if self.image_size < 32:
            raise ValueError(f"--image_size must be at least 32 pixels, got {self.image_size}")
        self._check_ranges()
        if len(self.head_units) != len(self.head_dropout):
            raise ValueError(f"--head_units ({self.head_units}) and --head_dropout ({self.head_dropout}) "
                             "need the same number of entries")

    @property
    def normalization(self) -> str:
        """How pixels are normalised inside the model: as the weights in use expect."""
        if self.pretrain == "imagenet":
            return "caffe" if self.layout == "keras" else "torch"
        return "unit"


@dataclasses.dataclass(frozen=True)
class DataConfig(_Part):
    """Where the captures come from and how one becomes the model input (its size is the model's)."""

    data: str = "embedded"  # "embedded" or a folder with one subfolder per class
    class_dirs: Tuple[str, str] = ("meteor", "non_meteor")
    input_rule: str = DEFAULT_INPUT_RULE  # how a capture becomes the S×S input (meteor_tf.data.preprocess)
    augment: str = "none"
    embedded_meteors: int = 1000
    embedded_non_meteors: int = 660
    tfds_data_dir: Optional[str] = None

    def __post_init__(self):
        _check("augment", self.augment, AUGMENTS)
        _check("input_rule", self.input_rule, INPUT_RULES)
        self._check_ranges()


@dataclasses.dataclass(frozen=True)
class EvaluationConfig(_Part):
    """Cross-validation and the recall-first threshold."""

    folds: int = 10  # 1 = a single hold-out run
    holdout_fraction: float = 0.2
    val_fraction: float = 0.15  # inner validation split of the training folds
    target_recall: float = 0.99

    def __post_init__(self):
        self._check_ranges()


@dataclasses.dataclass(frozen=True)
class SGDRConfig(_Part):
    """Cosine annealing with warm restarts (training.schedules)."""

    FLAGS = {"first_cycle_epochs": "sgdr_first_cycle_epochs", "t_mul": "sgdr_t_mul", "m_mul": "sgdr_m_mul",
             "min_lr": "sgdr_min_lr"}
    first_cycle_epochs: float = 1.0
    t_mul: float = 2.0
    m_mul: float = 1.0
    min_lr: float = 1e-5

    def __post_init__(self):
        self._check_ranges()


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Part):
    """The two phases: epochs, batch, learning rates, the schedule, the final model, the seed."""

    fine_tune: bool = True
    head_epochs: int = 7
    fine_tune_epochs: int = 7
    batch_size: int = 32
    lr_find: bool = False
    lr_head: Optional[float] = None  # None: the paper's value (or the LR range test's suggestion with lr_find)
    lr_fine_tune: Optional[float] = None
    weight_decay: float = 0.0
    sgdr: SGDRConfig = SGDRConfig()
    retrain_final: bool = True
    seed: int = 42

    def __post_init__(self):
        self._check_ranges()


@dataclasses.dataclass(frozen=True)
class PretrainConfig(_Part):
    """The Fashion-MNIST backbone (pretrain="fashion_mnist"): "shipped" loads the package's pretrained ResNet-18
    (models.presets), "pretrain" pretrains (and caches) one with the settings below."""

    FLAGS = {"backbone": "fmnist_backbone", "image_size": "fmnist_image_size", "epochs": "fmnist_epochs",
             "examples": "fmnist_examples", "lr": "fmnist_lr", "cache_dir": "pretrain_cache_dir"}
    backbone: str = "shipped"
    image_size: int = 32
    epochs: int = 2
    examples: int = 0  # 0 = all 60,000
    lr: float = 0.01
    cache_dir: Optional[str] = None

    def __post_init__(self):
        _check("fmnist_backbone", self.backbone, FMNIST_BACKBONES)
        if self.backbone == "shipped":
            given = [f"--{name}={getattr(self, field)}" for field, name in self.FLAGS.items()
                     if name in FMNIST_PRETRAIN_FIELDS and getattr(self, field) !=
                     PretrainConfig.__dataclass_fields__[field].default]
            if given:
                raise ValueError(f"{' '.join(given)} set(s) how to pretrain on Fashion-MNIST, but "
                                 "--fmnist_backbone=shipped (the default) loads the shipped, already pretrained "
                                 "backbone: add --fmnist_backbone=pretrain to pretrain one with these settings, or "
                                 "drop them")
        self._check_ranges()


@dataclasses.dataclass(frozen=True)
class RuntimeConfig(_Part):
    """How and where it runs: none of it changes what is computed, so none of it is in the run id."""

    strategy: str = "auto"
    mixed_precision: str = "auto"  # bf16 where the CPU/GPU runs it natively, else float32 (distribute.auto_...)
    jit_compile: Optional[bool] = None  # None: Keras's "auto" (XLA on GPUs, off on CPU: measured, README)
    cache_features: bool = True
    output_dir: str = "runs"
    run_id: Optional[str] = None
    fold_workers: int = 1  # processes training folds at once on this machine (experiment/claims.py)

    def __post_init__(self):
        _check("strategy", self.strategy, STRATEGIES)
        _check("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)
        if self.fold_workers < 1:
            raise ValueError(f"--fold_workers must be at least 1, got {self.fold_workers}")
        if self.fold_workers > 1 and self.strategy not in ("auto", "cpu"):
            raise ValueError(f"--fold_workers={self.fold_workers} runs folds as separate processes on this machine; "
                             f"it does not combine with --strategy={self.strategy} (use one or the other)")


def part_of(config, part_class):
    """`config` itself when it is a `part_class`, else that part of an ExperimentConfig: builders take their part
    and accept the whole config for convenience."""
    if isinstance(config, part_class):
        return config
    for name, cls in PARTS.items():
        if cls is part_class:
            return getattr(config, name)
    raise TypeError(f"{part_class.__name__} is not a part of ExperimentConfig")


PARTS = {"model": ModelConfig, "dataset": DataConfig, "evaluation": EvaluationConfig, "train": TrainConfig,
         "fmnist": PretrainConfig, "runtime": RuntimeConfig}


def _flat_paths() -> dict:
    """{flag name: (part, field) or (part, "sgdr", field)} in the flat order flags.json has always used."""
    paths = {}
    for part, cls in PARTS.items():
        for field in dataclasses.fields(cls):
            if field.name == "sgdr":
                for sub in dataclasses.fields(SGDRConfig):
                    paths[SGDRConfig.FLAGS[sub.name]] = (part, "sgdr", sub.name)
            else:
                paths[cls.FLAGS.get(field.name, field.name)] = (part, field.name)
    return paths


FLAT = _flat_paths()
# Fields that only change speed or where files go: they do not change the run id.
NOT_IN_RUN_ID = ("strategy", "mixed_precision", "jit_compile", "cache_features", "output_dir", "run_id",
                 "tfds_data_dir", "pretrain_cache_dir", "fold_workers")


@dataclasses.dataclass(frozen=True, init=False)
class ExperimentConfig:
    """Everything that decides what a run computes, in parts (`model`, `dataset`, `evaluation`, `train` with its
    `sgdr`, `fmnist`, `runtime`). Built from the flat flag names (`ExperimentConfig(depth=50, sgdr_t_mul=1)`, the
    flags, an old or new flags.json) or from parts; `to_dict()` is flat, so flags.json and run ids are as they were.
    Reading a flat name (`config.depth`) reads it from its part."""

    model: ModelConfig
    dataset: DataConfig
    evaluation: EvaluationConfig
    train: TrainConfig
    fmnist: PretrainConfig
    runtime: RuntimeConfig

    NOT_IN_RUN_ID = NOT_IN_RUN_ID

    def __init__(self, model: Optional[ModelConfig] = None, dataset: Optional[DataConfig] = None,
                 evaluation: Optional[EvaluationConfig] = None, train: Optional[TrainConfig] = None,
                 fmnist: Optional[PretrainConfig] = None, runtime: Optional[RuntimeConfig] = None, **flat):
        given = {"model": model, "dataset": dataset, "evaluation": evaluation, "train": train, "fmnist": fmnist,
                 "runtime": runtime}
        unknown = sorted(set(flat) - set(FLAT))
        if unknown:
            raise TypeError(f"ExperimentConfig has no setting {', '.join(unknown)}")
        changes = {part: {} for part in PARTS}
        sgdr = {}
        for name, value in flat.items():
            path = FLAT[name]
            if len(path) == 3:
                sgdr[path[2]] = value
            else:
                changes[path[0]][path[1]] = value
        for part, cls in PARTS.items():
            base = given[part] if given[part] is not None else None
            if part == "train" and sgdr:
                changes[part]["sgdr"] = dataclasses.replace((base or cls()).sgdr, **sgdr)
            if base is None:
                value = cls(**changes[part])
            else:
                value = dataclasses.replace(base, **changes[part]) if changes[part] else base
            object.__setattr__(self, part, value)

    def __getattr__(self, name):
        # only reached for names that are not attributes: the flat names, read from their part
        path = FLAT.get(name)
        if path is None:
            raise AttributeError(f"ExperimentConfig has no setting {name!r}")
        value = object.__getattribute__(self, path[0])
        for step in path[1:]:
            value = getattr(value, step)
        return value

    @property
    def lr_head_value(self) -> float:
        """The head-phase LR when the LR range test is off (the paper's: 0.03 pretrained, 0.0002 scratch)."""
        if self.train.lr_head is not None:
            return self.train.lr_head
        return PAPER_LR_SCRATCH if self.model.pretrain == "none" else PAPER_LR_HEAD

    @property
    def lr_fine_tune_value(self) -> float:
        if self.train.lr_fine_tune is not None:
            return self.train.lr_fine_tune
        return PAPER_LR_SCRATCH if self.model.pretrain == "none" else PAPER_LR_FINE_TUNE

    @property
    def normalization(self) -> str:
        return self.model.normalization

    @staticmethod
    def flat_names() -> Tuple[str, ...]:
        """Every setting's flag name, in flags.json's order."""
        return tuple(FLAT)

    def to_dict(self) -> dict:
        """Flat {flag name: value}: what flags.json holds and the run id digests."""
        flat = {}
        for part in PARTS:
            flat.update(getattr(self, part).flat())
        return {name: flat[name] for name in FLAT}

    def replace(self, **changes) -> "ExperimentConfig":
        """A copy with flat settings (`depth=50`) or whole parts (`model=ModelConfig(...)`) changed."""
        parts = {part: changes.pop(part, getattr(self, part)) for part in PARTS}
        return ExperimentConfig(**parts, **changes)

    def derived_run_id(self) -> str:
        """Stable id from the settings that decide the results, so rerunning a command finds its run."""
        if self.runtime.run_id:
            return self.runtime.run_id
        fields = {k: v for k, v in self.to_dict().items() if k not in self.NOT_IN_RUN_ID}
        digest = hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:8]
        tune = "ft" if self.train.fine_tune else "head"
        return (f"resnet{self.model.depth}-{self.model.pretrain}-{self.dataset.augment}-{self.model.image_size}px-"
                f"{self.evaluation.folds}fold-{tune}-{digest}")

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        """From a flat dict (flags.json, old or new; unknown keys are ignored) or a nested one ({part: {...}})."""
        d = dict(d)
        parts = {}
        for part, part_cls in PARTS.items():
            if isinstance(d.get(part), dict):
                values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.pop(part).items()}
                if isinstance(values.get("sgdr"), dict):
                    values["sgdr"] = SGDRConfig(**values["sgdr"])
                parts[part] = part_cls(**values)
        flat = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in FLAT}
        return cls(**parts, **flat)

    def to_nested_dict(self) -> dict:
        return {part: dataclasses.asdict(getattr(self, part)) for part in PARTS}


def input_rule_of(settings: dict) -> str:
    """The input rule a run's config or a model's metadata names; models from before input rules existed resized."""
    return settings.get("input_rule") or DEFAULT_INPUT_RULE


def _check(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"--{name}={value!r} is not one of {', '.join(map(str, allowed))}")
