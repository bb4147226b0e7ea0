"""The paper's choices as a Keras Tuner search space: `MeteorHyperModel` maps a trial's hyperparameters to an
`ExperimentConfig` (and builds its classifier); training stays in `meteor_tf.experiment`.

Hyperparameters (named after the experiment flags they set, so a results table reads like a command line):

| name                 | sets                      | default search                                  |
|----------------------|---------------------------|-------------------------------------------------|
| depth                | --depth                   | 18, 34, 50, 101                                 |
| pretrain             | --pretrain                | fashion_mnist, imagenet, none                   |
| head_layers          | len(--head_units)         | 1, 2                                            |
| head_units_<i>       | --head_units (layer i)    | 128, 256, 512, 1024 (each layer)                |
| head_dropout_<i>     | --head_dropout (layer i)  | 0.0 … 0.6, step 0.05 (each layer)               |
| lr_head              | --lr_head                 | 1e-3 … 1e-1, log scale (paper: 0.03)            |
| lr_fine_tune         | --lr_fine_tune            | 1e-5 … 1e-2, log scale (paper: 0.001)           |
| frozen_convs         | --frozen_convs            | 0, 3, 6, 9, 12 (paper: 6)                       |
| augment              | --augment                 | none, on_side, complete                         |
| image_size           | --image_size              | 64, 128, 224 (paper: 224)                       |
| sgdr_t_mul           | --sgdr_t_mul              | 1, 2, 3 (paper: 2)                              |

Restricting the space (the CPU-sized searches and the tests need it):

* An experiment flag given explicitly (command line or flagfile) fixes its hyperparameter: ``--depth=18`` is not
  searched. ``--head_units=1024,512`` fixes the number of head layers and their widths, ``--head_dropout`` the
  layers and their rates. With ``--lr_find`` the learning rates are left to the LR range test (not searched).
* ``--search_space=NAME=SPEC`` (repeatable) replaces one hyperparameter's range: ``a,b,c`` are the choices,
  ``LOW:HIGH`` (or ``LOW:HIGH:STEP``) a float range (log scale for the learning rates), one value fixes it
  (``--search_space=image_size=32``). ``head_units`` / ``head_dropout`` specs apply to every head layer. Naming a
  hyperparameter both ways (``--depth=18 --search_space=depth=18,34``) is refused.

Fixed values are Keras Tuner ``Fixed`` hyperparameters; hyperparameters that cannot matter for a trial sit in
conditional scopes (``lr_head`` and ``frozen_convs`` only with a pretrained backbone, ``head_*_<i>`` only when the
head has more than ``i`` layers), so random, Hyperband and Bayesian searches never spend trials on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Dict, Iterable, Optional, Sequence, Tuple

import keras_tuner as kt

from meteor_tf import config as cfg
from meteor_tf.config import ExperimentConfig

PARAM_NAMES = ("depth", "pretrain", "head_layers", "head_units", "head_dropout", "lr_head", "lr_fine_tune",
               "frozen_convs", "augment", "image_size", "sgdr_t_mul")
"""What --search_space accepts (head_units / head_dropout stand for every head_units_<i> / head_dropout_<i>)."""

PRETRAINED = ("fashion_mnist", "imagenet")
HYPERBAND_KEYS = ("tuner/epochs", "tuner/initial_epoch", "tuner/bracket", "tuner/round", "tuner/trial_id")

# The experiment flag -> the hyperparameters giving it explicitly fixes.
FLAG_FIXES = {
    "depth": ("depth",), "pretrain": ("pretrain",), "head_units": ("head_layers", "head_units"),
    "head_dropout": ("head_layers", "head_dropout"), "lr_head": ("lr_head",), "lr_fine_tune": ("lr_fine_tune",),
    "frozen_convs": ("frozen_convs",), "augment": ("augment",), "image_size": ("image_size",),
    "sgdr_t_mul": ("sgdr_t_mul",),
}
_TYPES = {"depth": int, "pretrain": str, "head_layers": int, "head_units": int, "head_dropout": float,
          "lr_head": float, "lr_fine_tune": float, "frozen_convs": int, "augment": str, "image_size": int,
          "sgdr_t_mul": float}
_LOG_SCALE = ("lr_head", "lr_fine_tune")


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter's range: `choices` (a Choice; one value = Fixed) or a float range [low, high]."""

    name: str
    choices: Tuple = ()
    low: Optional[float] = None
    high: Optional[float] = None
    step: Optional[float] = None
    log: bool = False
    fixed_by: Optional[str] = None  # the flag that fixed it, for messages
    per_layer: Optional[Tuple] = None  # head_units/head_dropout fixed by their flag: one value per layer

    @property
    def is_range(self) -> bool:
        return self.low is not None

    @property
    def is_fixed(self) -> bool:
        return self.per_layer is not None or (not self.is_range and len(self.choices) == 1)

    def possible(self) -> Tuple:
        """Values it can take (ranges: not enumerable, returns ())."""
        return () if self.is_range else self.choices

    def describe(self) -> str:
        if self.per_layer is not None:
            return ",".join(str(v) for v in self.per_layer) + f" (fixed by --{self.fixed_by})"
        if self.is_range:
            step = f", step {self.step:g}" if self.step else ""
            return f"{self.low:g} … {self.high:g}{' (log)' if self.log else ''}{step}"
        text = ", ".join(str(v) for v in self.choices)
        return text + (f" (fixed by --{self.fixed_by})" if self.fixed_by else (" (fixed)" if self.is_fixed else ""))

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()
                if k != "fixed_by"}


DEFAULT_SPACE: Dict[str, Param] = {
    "depth": Param("depth", cfg.DEPTHS),
    "pretrain": Param("pretrain", ("fashion_mnist", "imagenet", "none")),
    "head_layers": Param("head_layers", (1, 2)),
    "head_units": Param("head_units", (128, 256, 512, 1024)),
    "head_dropout": Param("head_dropout", low=0.0, high=0.6, step=0.05),
    "lr_head": Param("lr_head", low=1e-3, high=1e-1, log=True),
    "lr_fine_tune": Param("lr_fine_tune", low=1e-5, high=1e-2, log=True),
    "frozen_convs": Param("frozen_convs", (0, 3, 6, 9, 12)),
    "augment": Param("augment", cfg.AUGMENTS),
    "image_size": Param("image_size", (64, 128, 224)),
    "sgdr_t_mul": Param("sgdr_t_mul", (1.0, 2.0, 3.0)),
}


# --------------------------------------------------------------------------------------------------- the space
def search_space(base: ExperimentConfig, specs: Sequence[str] = (), given_flags: Iterable[str] = ()
                 ) -> Dict[str, Optional[Param]]:
    """The search space: the defaults, minus what `given_flags` fix (their values come from `base`), with the
    `--search_space` `specs` applied. A None entry is not a hyperparameter at all (the learning rates under
    --lr_find). Raises ValueError naming the flag on a bad spec or a conflict."""
    given = set(given_flags)
    space: Dict[str, Optional[Param]] = dict(DEFAULT_SPACE)
    if base.lr_find:  # the LR range test picks the learning rates
        space["lr_head"] = space["lr_fine_tune"] = None
    fixed_by: Dict[str, str] = {}
    for flag, names in FLAG_FIXES.items():
        if flag in given:
            for name in names:
                fixed_by.setdefault(name, flag)
    for name, flag in fixed_by.items():
        space[name] = _fixed_from_config(base, name, flag)
    for spec in specs:
        param = parse_spec(spec)
        if param.name in fixed_by:
            raise ValueError(f"--search_space={spec!r}: {param.name} is already fixed by --{fixed_by[param.name]}; "
                             f"give one or the other")
        space[param.name] = param
    return space


def _fixed_from_config(base: ExperimentConfig, name: str, flag: str) -> Param:
    if name == "head_layers":
        n = len(base.head_units if flag == "head_units" else base.head_dropout)
        return Param(name, (n,), fixed_by=flag)
    if name in ("head_units", "head_dropout"):
        return Param(name, fixed_by=flag, per_layer=tuple(getattr(base, name)))
    value = getattr(base, name)
    return Param(name, (_TYPES[name](value),), fixed_by=flag)


def parse_spec(spec: str) -> Param:
    """One `--search_space` value: NAME=a,b,c | NAME=LOW:HIGH[:STEP] | NAME=VALUE."""
    if "=" not in spec:
        raise ValueError(f"--search_space={spec!r}: expected NAME=VALUES, e.g. depth=18,34 or lr_head=0.001:0.1")
    name, text = (s.strip() for s in spec.split("=", 1))
    if name not in PARAM_NAMES:
        raise ValueError(f"--search_space={spec!r}: unknown hyperparameter {name!r}; one of {', '.join(PARAM_NAMES)}")
    typ = _TYPES[name]
    try:
        if ":" in text:
            if typ is not float:
                raise ValueError(f"{name} takes a comma-separated list of choices, not a range")
            parts = [float(p) for p in text.split(":")]
            if len(parts) not in (2, 3) or not parts[0] < parts[1]:
                raise ValueError("a range is LOW:HIGH or LOW:HIGH:STEP with LOW < HIGH")
            param = Param(name, low=parts[0], high=parts[1], step=parts[2] if len(parts) == 3 else None,
                          log=name in _LOG_SCALE and len(parts) == 2)
            for v in parts[:2]:
                _check_value(name, v)
        else:
            values = [typ(v.strip()) for v in text.split(",") if v.strip()]
            if not values:
                raise ValueError("no values")
            for v in values:
                _check_value(name, v)
            param = Param(name, tuple(dict.fromkeys(values)))
    except ValueError as e:
        raise ValueError(f"--search_space={spec!r}: {e}") from None
    return param


def _check_value(name: str, v) -> None:
    allowed = {"depth": cfg.DEPTHS, "pretrain": cfg.PRETRAINS, "augment": cfg.AUGMENTS}.get(name)
    if allowed is not None and v not in allowed:
        raise ValueError(f"{name}={v!r} is not one of {', '.join(map(str, allowed))}")
    limits = {"head_layers": (1, None), "head_units": (1, None), "image_size": (32, None), "frozen_convs": (0, None),
              "head_dropout": (0.0, 0.999), "lr_head": (1e-12, None), "lr_fine_tune": (1e-12, None),
              "sgdr_t_mul": (1e-6, None)}.get(name)
    if limits is not None:
        low, high = limits
        if v < low or (high is not None and v > high):
            raise ValueError(f"{name}={v} is out of range (needs >= {low}{'' if high is None else f' and < 1'})")


def check_space(base: ExperimentConfig, space: Dict[str, Optional[Param]]) -> None:
    """Refuses spaces no trial could run in, naming the flags to change (before any trial starts)."""
    depths = space["depth"].possible()
    pretrains = space["pretrain"].possible()
    if base.layout == "keras" and set(depths) - {50, 101}:
        raise ValueError("--layout=keras exists for depth 50 and 101 only; search --search_space=depth=50,101 (or "
                         "use --layout=torchvision)")
    if base.weights:
        if len(depths) > 1:
            raise ValueError(f"--weights={base.weights} is one backbone file, for one depth, but depth is searched "
                             f"({', '.join(map(str, depths))}): fix --depth (or drop --weights)")
        if len(set(pretrains) & set(PRETRAINED)) > 1:
            raise ValueError(f"--weights={base.weights} is one kind of weights, but pretrain is searched over "
                             "imagenet and fashion_mnist: fix --pretrain or narrow --search_space=pretrain=...")
    if base.strategy == "multi_worker":
        # MultiWorkerMirroredStrategy needs every worker on the same step, but Keras Tuner hands workers different
        # trials
        raise ValueError("--strategy=multi_worker: Keras Tuner gives each worker its own trial, while "
                         "MultiWorkerMirroredStrategy needs all workers training the same one; distribute the search "
                         "instead (Keras Tuner workers, see docs/TUNING.md) with --strategy=auto or mirrored inside "
                         "each worker")
    # one config per choice (the others at their defaults): ExperimentConfig checks each value, naming its flag
    hm = MeteorHyperModel(base, space)
    hp = kt.HyperParameters()
    hm.declare_hyperparameters(hp)
    defaults = {p.name: p.default for p in hp.space}
    hm.config_for(defaults)
    for p in hp.space:
        for value in getattr(p, "values", None) or ():
            hm.config_for({**defaults, p.name: value})


# --------------------------------------------------------------------------------------------------- hypermodel
class MeteorHyperModel(kt.HyperModel):
    """The meteor classifier's search space over an `ExperimentConfig`.

    `config_for(hp.values)` is the trial's experiment configuration (what `run_trial` trains with
    `experiment.fold.train_fold`); `build(hp)` returns its untrained classifier, the HyperModel contract
    (e.g. `tuner.hypermodel.build(tuner.get_best_hyperparameters()[0])`).

    Hyperband: a trial's `tuner/epochs` budget E (of `max_epochs`) scales both phases,
    phase epochs = ceil(E / max_epochs × the phase's epochs in `base`), at least 1; the top round trains exactly
    `base.head_epochs` and `base.fine_tune_epochs`. Every trial trains from the pretrained backbone (no warm start
    from the trial it was promoted from): the trial directories keep no weights.
    """

    def __init__(self, base: ExperimentConfig, space: Dict[str, Optional[Param]], max_epochs: Optional[int] = None):
        super().__init__(name="meteor")
        self.base = base
        self.space = dict(space)
        self.max_epochs = max_epochs or max(base.head_epochs, base.fine_tune_epochs, 1)

    # ---- declaring
    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        """Registers every hyperparameter (conditional ones included) in `hp`."""
        b, s = self.base, self.space
        self._declare(hp, "depth")
        self._declare(hp, "pretrain")
        self._declare(hp, "image_size")
        self._declare(hp, "augment")
        self._declare(hp, "head_layers")
        layers = s["head_layers"].possible()
        for i in range(max(layers)):
            with self._when(hp, "head_layers", [n for n in layers if n > i]) as active:
                if active:
                    for name in ("head_units", "head_dropout"):
                        self._declare(hp, name, f"{name}_{i}", layer=i)
        with self._when(hp, "pretrain", PRETRAINED) as active:
            if active:
                self._declare(hp, "lr_head")
        # the fine-tune LR trains the fine-tune phase, or the whole network from scratch
        with self._when(hp, "pretrain", cfg.PRETRAINS if b.fine_tune else ("none",)) as active:
            if active:
                self._declare(hp, "lr_fine_tune")
        if b.fine_tune:
            with self._when(hp, "pretrain", PRETRAINED) as active:
                if active:
                    self._declare(hp, "frozen_convs")
        self._declare(hp, "sgdr_t_mul")

    @contextlib.contextmanager
    def _when(self, hp, parent: str, allowed: Sequence):
        """Yields whether hyperparameters that matter only for `parent` in `allowed` can matter at all, inside
        Keras Tuner's conditional scope when only some of the parent's values allow them."""
        possible = self.space[parent].possible()
        keep = [v for v in possible if v in allowed]
        if not keep:
            yield False
        elif len(keep) == len(possible):
            yield True
        else:
            with hp.conditional_scope(parent, keep):
                yield True

    def _declare(self, hp, key: str, name: Optional[str] = None, layer: int = 0):
        name = name or key
        p = self.space.get(key)
        if p is None:
            return None
        if p.per_layer is not None:
            return hp.Fixed(name, _TYPES[key](p.per_layer[layer]))
        if p.is_range:
            default = _clip(self._base_value(key, layer), p.low, p.high)
            return hp.Float(name, p.low, p.high, step=p.step, sampling="log" if p.log else "linear",
                            default=default)
        if len(p.choices) == 1:
            return hp.Fixed(name, p.choices[0])
        base_value = self._base_value(key, layer)
        default = base_value if base_value in p.choices else p.choices[0]
        return hp.Choice(name, list(p.choices), default=default)

    def _base_value(self, key: str, layer: int = 0):
        b = self.base
        if key == "head_layers":
            return len(b.head_units)
        if key in ("head_units", "head_dropout"):
            values = getattr(b, key)
            return _TYPES[key](values[min(layer, len(values) - 1)]) if values else None
        if key == "lr_head":
            return b.lr_head_value
        if key == "lr_fine_tune":
            return b.lr_fine_tune_value
        return _TYPES[key](getattr(b, key))

    # ---- using
    def config_for(self, values: dict, full_budget: bool = False) -> ExperimentConfig:
        """The experiment configuration of a trial's hyperparameter values (active ones; the others keep the
        base config's value). With Hyperband's `tuner/epochs` in `values`, the phase epochs are scaled to that
        budget unless `full_budget`."""
        changes = {}
        for name in ("depth", "pretrain", "frozen_convs", "augment", "image_size", "lr_head", "lr_fine_tune",
                     "sgdr_t_mul"):
            if name in values:
                changes[name] = _TYPES[name](values[name])
        if "head_layers" in values:
            n = int(values["head_layers"])
            changes["head_units"] = tuple(int(values[f"head_units_{i}"]) for i in range(n))
            changes["head_dropout"] = tuple(round(float(values[f"head_dropout_{i}"]), 6) for i in range(n))
        if "tuner/epochs" in values and not full_budget:
            budget = int(values["tuner/epochs"])
            changes["head_epochs"] = phase_epochs(budget, self.max_epochs, self.base.head_epochs)
            changes["fine_tune_epochs"] = phase_epochs(budget, self.max_epochs, self.base.fine_tune_epochs)
        return self.base.replace(**changes)

    def build(self, hp: kt.HyperParameters):
        """The trial's untrained classifier (Keras Tuner's HyperModel contract)."""
        from meteor_tf.models.classifier import build_classifier_from_config

        if not hp.space:
            self.declare_hyperparameters(hp)
        return build_classifier_from_config(self.config_for(hp.values))

    def tuned_names(self, hp: Optional[kt.HyperParameters] = None) -> Tuple[str, ...]:
        """Names of the searched (not fixed) hyperparameters, in declaration order."""
        if hp is None:
            hp = kt.HyperParameters()
            self.declare_hyperparameters(hp)
        return tuple(dict.fromkeys(p.name for p in hp.space if type(p).__name__ != "Fixed"))

    def describe_space(self) -> Dict[str, str]:
        """name -> its range in words, for logs and reports."""
        hp = kt.HyperParameters()
        self.declare_hyperparameters(hp)
        declared = {p.name for p in hp.space}
        out = {}
        for name, p in self.space.items():
            if p is None:
                out[name] = "not searched (the LR range test picks it, --lr_find)"
            elif name not in declared and f"{name}_0" not in declared:
                out[name] = "not used with these settings (--pretrain / --fine_tune)"
            else:
                out[name] = p.describe()
        return out


def phase_epochs(budget: int, max_epochs: int, full: int) -> int:
    """A phase's epochs at a Hyperband budget: proportional, rounded up, at least 1, at most `full`."""
    return max(1, min(full, math.ceil(full * budget / max_epochs)))


def _clip(value, low, high):
    if value is None:
        return low
    return min(max(float(value), low), high)


def space_to_dict(space: Dict[str, Optional[Param]]) -> dict:
    return {name: (p.to_dict() if p is not None else None) for name, p in space.items()}
