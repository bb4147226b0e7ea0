"""A run directory (`output_dir/<run id>`): the one place that knows its files, and reads and writes them.

    flags.json, provenance.json, folds.json     what was run, where, on which split
    state.json                                  finished folds and phases with their results (resume)
    initial_backbone.weights.h5, features.npy   the pretrained backbone every fold starts from; its cached features
    fold_K/{head,fine_tune}_log.csv             per-epoch logs; fold_K/lr_*.json, lr_find_*.png; predictions_*.npz
    fold_K/{best,after}_*.weights.h5, backup_*  checkpoints (best epoch, end of phase, per-epoch backup)
    fold_K/metrics.json                         per-fold test metrics for both rows
    metrics.json, summary.md                    mean ± std, recall-first threshold, skipped files, timings
    confusion_*.png, learning_curves.png        plots; tensorboard/ the TensorBoard logs
    final/                                      the model retrained on all data: model.keras, model_info.json
                                                (what `export` ships), and the same per-phase files as a fold

Everything that reads or writes a run (the runner, the tuner's trials, export, predict, evaluate, tables, benchmarks)
goes through `RunDir`; a trial of a search is a run directory too (`<tuner_dir>/trial_<id>/run`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import List, Optional

import numpy as np

from meteor_tf import CLASS_NAMES, io

PHASES = ("head", "fine_tune")
FINAL = "final"


class ConfigMismatchError(ValueError):
    """A run directory (or a search) holds work made with other settings or on another split."""


class PartDir:
    """One trained part of a run: a fold (`fold_K/`) or the final model (`final/`)."""

    def __init__(self, path):
        self.path = Path(path)
        self.name = self.path.name

    def mkdir(self) -> "PartDir":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def log(self, phase: str) -> Path:
        return self.path / f"{phase}_log.csv"

    def lr_record(self, phase: str) -> Path:
        return self.path / f"lr_{phase}.json"

    def lr_plot(self, phase: str) -> Path:
        return self.path / f"lr_find_{phase}.png"

    def predictions(self, phase: str) -> Path:
        return self.path / f"predictions_{phase}.npz"

    def best_weights(self, phase: str) -> Path:
        return self.path / f"best_{phase}.weights.h5"

    def weights_after(self, phase: str) -> Path:
        return self.path / f"after_{phase}.weights.h5"

    def backup(self, phase: str) -> Path:
        """Where a phase's per-epoch backup (kill-safe resume) lives."""
        return self.path / f"backup_{phase}"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def model(self) -> Path:
        return self.path / "model.keras"

    @property
    def model_info(self) -> Path:
        return self.path / "model_info.json"

    def write_predictions(self, phase: str, val_idx, val_prob, test_idx, test_prob) -> None:
        np.savez(self.predictions(phase), val_idx=val_idx, val_prob=val_prob, test_idx=test_idx, test_prob=test_prob)

    def read_predictions(self, phase: str):
        """{val_idx, val_prob, test_idx, test_prob} of a phase (indices into the run's examples)."""
        return np.load(self.predictions(phase))


class RunDir:
    """The files of one run directory (see the module docstring); `RunDir(path)` creates nothing."""

    def __init__(self, path):
        self.path = Path(path)
        self.name = self.path.name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---------------------------------------------------------------------------------------------- files
    flags = property(lambda self: self.path / "flags.json")
    provenance = property(lambda self: self.path / "provenance.json")
    split = property(lambda self: self.path / "folds.json")
    state = property(lambda self: self.path / "state.json")
    initial_backbone = property(lambda self: self.path / "initial_backbone.weights.h5")
    features = property(lambda self: self.path / "features.npy")
    metrics = property(lambda self: self.path / "metrics.json")
    summary = property(lambda self: self.path / "summary.md")
    learning_curves = property(lambda self: self.path / "learning_curves.png")

    def confusion(self, which: str) -> Path:
        """The pooled confusion matrix PNG of a phase, or of the recall-first threshold (`which="recall_first"`)."""
        return self.path / f"confusion_{which}.png"

    def tensorboard(self, part: PartDir, phase: str) -> Path:
        return self.path / "tensorboard" / part.name / phase

    def part(self, name: str) -> PartDir:
        return PartDir(self.path / name)

    def fold(self, k: int) -> PartDir:
        return self.part(fold_name(k))

    @property
    def final(self) -> PartDir:
        return self.part(FINAL)

    def folds_on_disk(self) -> List[PartDir]:
        """The fold directories present, in fold order."""
        found = [p for p in self.path.glob("fold_*") if p.is_dir() and p.name[5:].isdigit()]
        return [PartDir(p) for p in sorted(found, key=lambda p: int(p.name[5:]))]

    # ---------------------------------------------------------------------------------------------- reading
    def read_flags(self) -> dict:
        return io.read_json(self.flags)

    def read_metrics(self) -> Optional[dict]:
        return io.read_json(self.metrics) if self.metrics.is_file() else None

    def read_provenance(self) -> Optional[dict]:
        return io.read_json(self.provenance) if self.provenance.is_file() else None

    def has_final_model(self) -> bool:
        return self.final.model.is_file() and self.final.model_info.is_file()

    def read_model_info(self) -> dict:
        """final/model_info.json: {threshold, threshold_source, config, class_names, normalization}."""
        return io.read_json(self.final.model_info)

    def write_model_info(self, threshold: float, config: dict, normalization: str) -> None:
        io.write_json(self.final.model_info, unique=True, obj={
            "threshold": threshold, "threshold_source": "pooled CV inner-validation predictions",
            "config": config, "class_names": list(CLASS_NAMES), "normalization": normalization})

    @classmethod
    def of_final_model(cls, keras_path) -> Optional["RunDir"]:
        """The run whose final/model.keras `keras_path` is, or None for a .keras file elsewhere."""
        keras_path = Path(keras_path)
        return cls(keras_path.parent.parent) if keras_path.parent.name == FINAL else None

    @classmethod
    def holding_final_model(cls, path) -> Optional["RunDir"]:
        """`path` as a run directory when it holds a final model file, else None."""
        run = cls(path)
        return run if run.final.model.is_file() else None


def runs_in(output_dir) -> List[RunDir]:
    """The finished runs under `output_dir` (those with a metrics.json), in name order."""
    return [RunDir(p.parent) for p in sorted(Path(output_dir).glob("*/metrics.json"))]


def fold_name(k: int) -> str:
    return f"fold_{k}"


def model_info_beside(keras_path) -> dict:
    """The model_info.json next to a saved .keras model ({} when there is none: a bare model)."""
    info = Path(keras_path).parent / "model_info.json"
    return io.read_json(info) if info.is_file() else {}


class RunRecord:
    """state.json: which folds/phases finished, with their results; written atomically after each phase."""

    def __init__(self, run: RunDir):
        self.path = run.state
        self.state = self._read()

    def _read(self) -> dict:
        return io.read_json(self.path) if self.path.exists() else {"phases": {}}

    def refresh(self) -> None:
        """Reads what other workers on this run directory have recorded since (experiment/claims.py)."""
        self.state = self._read()

    def done(self, key: str) -> Optional[dict]:
        return self.state["phases"].get(key)

    def mark(self, key: str, result: dict) -> None:
        # read, add, write under a lock: several workers may finish phases of one run at once
        with _locked(self.path.with_name(self.path.name + ".lock")):
            self.state = self._read()
            self.state["phases"][key] = result
            io.write_json(self.path, self.state)


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def check_settings(run: RunDir, settings: dict, not_compared=()) -> None:
    """Refuses a run directory whose flags.json holds other settings (keys in `not_compared` aside)."""
    if not run.flags.exists():
        return
    saved = {k: v for k, v in run.read_flags().items() if k not in not_compared}
    now = json.loads(json.dumps({k: v for k, v in settings.items() if k not in not_compared}, default=list))
    if now != saved:
        diff = sorted(k for k in now if now[k] != saved.get(k))
        raise ConfigMismatchError(
            f"{run.path} holds a run with other settings ({', '.join(diff)} differ). Use another --run_id or "
            f"--output_dir, or delete that directory to start over.")


def check_or_record_split(path: Path, record, what: str, advice: str) -> None:
    """A split stored by example id: written the first time, and a rerun must find the same one (else
    `ConfigMismatchError`). Written through a per-process twin: workers of a distributed search may write it at once."""
    if path.exists():
        if io.read_json(path) != record:
            raise ConfigMismatchError(f"{path}: the data or the split changed since this {what} started; {advice}")
        return
    io.write_json(path, record, unique=True)
