"""Keras Tuner tuners whose trials run the library's two-phase training on a tuning split of the training data.

A trial (`run_trial`) turns its hyperparameters into an `ExperimentConfig` (`MeteorHyperModel.config_for`) and calls
`experiment.fold.train_fold` once per tuning fold (the runner's own fold loop, `run_folds`), in the trial's own
directory (`<tuner_dir>/trial_<id>/run`, a run directory, `meteor_tf.run_dir`), so a trial killed halfway resumes
from its finished phases when the search is rerun. It returns the metrics of the last phase on the tuning fold's
scoring part; Keras Tuner's oracles (random search, Hyperband, Bayesian optimisation) pick the next trials.

Which data a trial sees (`TuningData`):

1. The user's own evaluation split is computed first, exactly as `python -m meteor_tf.main` computes it from the
   same flags (`experiment.fold.make_folds`): with ``--folds=1`` the hold-out test part, with ``--folds=K`` the test
   part of fold 0. That part is removed from memory before any trial: no trial trains, picks a checkpoint or is
   scored on it. (With K > 1 folds, `main` later tests on the other folds too, which the search did see; only fold
   0's score of the tuned configuration is untouched by the search. `--folds=1` gives a fully clean estimate.)
2. The rest (the tuning pool) is split for scoring: ``--tune_folds=1`` holds out ``--val_fraction`` of it as the
   scoring part (grouped and stratified, `folds.inner_validation_split`); ``--tune_folds=k`` scores by the mean over
   k stratified group folds of the pool. In each, an inner split of the training part (``--val_fraction`` again)
   picks the checkpoint epoch (and the LR with ``--lr_find``), as in `main`.

The split is written to `tuning_split.json` (example ids) and checked on every rerun.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

import keras_tuner as kt
import numpy as np

from meteor_tf import METEOR, io
from meteor_tf.config import ExperimentConfig
from meteor_tf.evaluation.metrics import recall_at_precision
from meteor_tf.experiment import fold as ef
from meteor_tf.experiment.model_setup import initial_backbone_path
from meteor_tf.experiment.runner import prepare_run_dir
from meteor_tf.experiment.runtime import make_runtime
from meteor_tf.run_dir import ConfigMismatchError, PartDir, RunRecord, check_or_record_split
from meteor_tf.tuning.hypermodel import HYPERBAND_KEYS, MeteorHyperModel

log = logging.getLogger("meteor_tf")

TUNERS = ("random", "hyperband", "bayesian")
OBJECTIVES = ("f1", "accuracy", "auc", "recall_at_precision")
METRICS = ("f1", "accuracy", "precision", "recall", "auc", "recall_at_precision")


def objective_name(objective: str) -> str:
    """The metric Keras Tuner maximises: `val_<objective>` (validation = the tuning split's scoring part);
    recall_at_precision reports as `val_recall_at_min_precision` (Keras Tuner would take `recall_at_precision` for
    Keras's RecallAtPrecision metric and fail to build it)."""
    return "val_recall_at_min_precision" if objective == "recall_at_precision" else f"val_{objective}"


# --------------------------------------------------------------------------------------------------- data
class TuningData:
    """The examples trials see, per image size (image_size is a hyperparameter), without the held-out test part,
    and the tuning folds (indices into those examples; the same for every trial and image size)."""

    def __init__(self, base: ExperimentConfig, tuner_dir: Path, tune_folds: int = 1, max_cached_sizes: int = 3):
        if tune_folds < 1:
            raise ValueError(f"--tune_folds must be >= 1, got {tune_folds}")
        self.base = base
        self.tuner_dir = Path(tuner_dir)
        self.tune_folds = tune_folds
        self.max_cached_sizes = max_cached_sizes
        self._pools: Dict[int, object] = {}
        self._pool_idx: Optional[np.ndarray] = None
        self._ids: Optional[np.ndarray] = None
        self._folds: Optional[List[ef.FoldData]] = None
        self.held_out_ids: List[str] = []

    def pool(self, image_size: int):
        """The tuning pool's examples at `image_size` (loaded once per size, the held-out part dropped)."""
        if image_size in self._pools:
            return self._pools[image_size]
        from meteor_tf.data import dataset

        started = time.time()
        examples = dataset.load_examples(self.base.replace(image_size=image_size))
        if self._pool_idx is None:
            outer = ef.make_folds(self.base, examples)[0]  # main's split from the same flags: its (first) test part
            self._ids = examples.ids
            self._pool_idx = np.sort(np.concatenate([outer.fit_idx, outer.val_idx]))
            self.held_out_ids = sorted(examples.ids[outer.test_idx].tolist())
        elif not np.array_equal(examples.ids, self._ids):
            raise ConfigMismatchError(f"the examples at {image_size} px differ from those at another size "
                                         "(files changed during the search?)")
        pool = examples.subset(self._pool_idx)
        del examples
        while len(self._pools) >= self.max_cached_sizes:
            self._pools.pop(next(iter(self._pools)))
            gc.collect()
        self._pools[image_size] = pool
        if self._folds is None:
            self._folds = self._make_folds(pool)
            self._record_split(pool)
            log.info("tuning data: %d captures for the search (%d meteor); %d held out as the test part of "
                     "--folds=%d, never seen by a trial; %s", len(pool), int((pool.labels == METEOR).sum()),
                     len(self.held_out_ids), self.base.folds, self.describe_folds())
        log.info("tuning data at %d px ready in %.1f s", image_size, time.time() - started)
        return pool

    def folds(self) -> List[ef.FoldData]:
        if self._folds is None:
            self.pool(self.base.image_size)
        return self._folds

    def describe_folds(self) -> str:
        f = self._folds
        if len(f) == 1:
            return (f"trials fit on {len(f[0].fit_idx)}, pick checkpoints on {len(f[0].val_idx)} and are scored on "
                    f"{len(f[0].test_idx)}")
        return (f"trials are scored by the mean over {len(f)} tuning folds (about {len(f[0].test_idx)} scored, "
                f"{len(f[0].fit_idx)} fit per fold)")

    def _make_folds(self, pool) -> List[ef.FoldData]:
        from meteor_tf.data import folds as fd

        b = self.base
        labels, groups = pool.labels, pool.groups
        if self.tune_folds == 1:
            train, score = fd.inner_validation_split(np.arange(len(labels)), labels, groups, fraction=b.val_fraction,
                                                     seed=b.seed)
            splits = [(train, score)]
        else:
            splits = fd.stratified_group_folds(labels, groups, n_folds=self.tune_folds, seed=b.seed)
        return [ef.inner_split(b, train, labels, groups, score) for train, score in splits]

    def _record_split(self, pool) -> None:
        """tuning_split.json: the held-out ids and each tuning fold's ids; a rerun must find the same split."""
        record = {"held_out": self.held_out_ids, "outer_folds": self.base.folds,
                  "tuning_folds": ef.split_record(pool.ids, self._folds, test_key="score")}
        check_or_record_split(self.tuner_dir / "tuning_split.json", record, "search",
                              "use another --tuner_dir or --overwrite")


def check_imagenet_weights(hypermodel: MeteorHyperModel) -> None:
    """With pretrain=imagenet in the search space, loads the ImageNet weights of every searched depth now (from
    --weights or the default places, downloading where that works), so a missing file stops the search before its
    first trial instead of in the middle of it. Raises WeightsNotFoundError saying how to leave ImageNet out."""
    space, base = hypermodel.space, hypermodel.base
    if "imagenet" not in space["pretrain"].possible():
        return
    import keras

    from meteor_tf.models import weights as w
    from meteor_tf.models.classifier import build_classifier_from_config

    for depth in space["depth"].possible():
        config = base.replace(depth=depth, pretrain="imagenet", image_size=32, head_units=(), head_dropout=())
        backbone = build_classifier_from_config(config).get_layer("backbone")
        try:
            w.load_imagenet_weights(backbone, source=base.weights)
        except w.WeightsNotFoundError as e:
            raise w.WeightsNotFoundError(
                f"{e}\nThe search space has pretrain=imagenet at depth {depth}: make those weights available, or "
                "search without ImageNet: --search_space=pretrain=fashion_mnist,none (or fix --pretrain).") from None
        finally:
            keras.backend.clear_session()


# --------------------------------------------------------------------------------------------------- trials
class TrialRunner:
    """Trains and scores one trial's configuration with the runner's fold loop (`experiment.fold.run_folds`)."""

    def __init__(self, hypermodel: MeteorHyperModel, data: TuningData, objective: str = "f1",
                 objective_precision: float = 0.95, keep_trial_weights: bool = False):
        if objective not in OBJECTIVES:
            raise ValueError(f"--objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
        if not 0 < objective_precision <= 1:
            raise ValueError(f"--objective_precision must be in (0, 1], got {objective_precision}")
        self.hypermodel = hypermodel
        self.data = data
        self.objective = objective
        self.objective_precision = objective_precision
        self.keep_trial_weights = keep_trial_weights
        self._runtime = None

    def runtime(self):
        """The tf.distribute strategy and global batch of the base config (made once per process)."""
        if self._runtime is None:
            self._runtime = make_runtime(self.hypermodel.base)
        return self._runtime

    def evaluate(self, trial_id: str, values: dict, trial_dir: Path) -> Dict[str, float]:
        """The trial's metrics: {"val_<metric>": mean over the tuning folds, ..., "seconds": training time}.

        A finished trial's score.json is returned as it is (a trial scored but not yet reported to the oracle when
        the search stopped is not retrained); an unfinished one resumes from its recorded phases."""
        config = self.hypermodel.config_for(values).replace(output_dir=str(trial_dir), run_id="run",
                                                             retrain_final=False)
        score_path = Path(trial_dir) / "score.json"
        settings = json.loads(json.dumps(config.to_dict(), default=list))
        if score_path.exists():
            saved = io.read_json(score_path)
            if saved.get("config") == settings:
                log.info("trial %s: already scored (%s), reusing its result", trial_id, score_path)
                return saved["metrics"]
        import keras

        names = set(self.hypermodel.tuned_names()) | {"tuner/epochs"}
        tuned = {k: v for k, v in values.items() if k in names}
        log.info("trial %s: %s (%s)", trial_id, ", ".join(f"{k}={_short(v)}" for k, v in tuned.items())
                 or "the base config", _phases_text(config))
        keras.backend.clear_session()
        gc.collect()
        run = prepare_run_dir(config)
        record = RunRecord(run)
        backbone_path = initial_backbone_path(config, run)  # pretrains on Fashion-MNIST once per depth
        examples = self.data.pool(config.image_size)  # loads the data once per image size
        folds = self.data.folds()
        started = time.time()  # the trial's time: features, training, scoring
        runtime = self.runtime()
        per_fold = []
        with runtime.strategy.scope():
            context = ef.FoldContext.create(config, examples, run, record, backbone_path, runtime.batch_size)
            ef.run_folds(context, folds, lambda k, results, _: per_fold.append(
                self._fold_metrics(results, run.fold(k), examples.labels)))
        metrics = {}
        for name in METRICS:
            vals = np.array([m[name] for m in per_fold], dtype=np.float64)
            if np.isfinite(vals).any():
                metrics[objective_name(name)] = float(np.nanmean(vals))
        if objective_name(self.objective) not in metrics:
            metrics[objective_name(self.objective)] = float("nan")  # the oracle marks the trial invalid
        metrics["seconds"] = float(time.time() - started)
        io.write_json(score_path, {"trial_id": trial_id, "hyperparameters": values, "config": settings,
                                           "metrics": metrics, "per_fold": per_fold,
                                           "phase": per_fold[0]["phase"] if per_fold else None})
        if not self.keep_trial_weights:
            _remove_weights(run.path)
        log.info("trial %s: %s in %.0f s", trial_id,
                 ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("val_")), metrics["seconds"])
        return metrics

    def _fold_metrics(self, results: dict, part: PartDir, labels) -> dict:
        phase = "fine_tune" if "fine_tune" in results else "head"
        out = {name: float(results[phase]["test"].get(name, float("nan"))) for name in METRICS[:-1]}
        preds = part.read_predictions(phase)
        out["recall_at_precision"] = recall_at_precision(labels[preds["test_idx"]], preds["test_prob"],
                                                         self.objective_precision)
        out["phase"] = phase
        out["n"] = int(len(preds["test_idx"]))
        out["epochs"] = {p: int(r.get("epochs", 0)) for p, r in results.items()}
        return out


def _remove_weights(run_dir: Path) -> None:
    """A scored trial needs no weights (the best config is retrained by `main`): frees the disk."""
    for path in list(run_dir.rglob("*.weights.h5")) + list(run_dir.glob("features.npy")):
        path.unlink(missing_ok=True)
    for path in run_dir.rglob("backup_*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def _phases_text(config: ExperimentConfig) -> str:
    if config.pretrain == "none":
        return f"from scratch, {config.fine_tune_epochs} epochs"
    if not config.fine_tune:
        return f"head {config.head_epochs} epochs"
    return f"head {config.head_epochs} + fine-tune {config.fine_tune_epochs} epochs"


def _short(v):
    return f"{v:.4g}" if isinstance(v, float) else v


# --------------------------------------------------------------------------------------------------- tuners
class _MeteorTuner:
    """Mixed in before a Keras Tuner tuner: its oracle proposes, `TrialRunner` trains and scores."""

    def __init__(self, *, runner: TrialRunner, **kwargs):
        self.runner = runner
        super().__init__(hypermodel=runner.hypermodel, **kwargs)

    def _populate_initial_space(self):
        # declare_hyperparameters registers every hyperparameter, the conditional ones included, so Keras Tuner's
        # activation loop (which builds a model per round) is not needed
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def on_search_begin(self):
        super().on_search_begin()
        self.save()  # the tuner file marks the project for reload: a search killed in its first trial resumes it

    def run_trial(self, trial, *args, **kwargs):
        from meteor_tf.data import DataError
        from meteor_tf.models.weights import WeightsNotFoundError

        try:
            return self.runner.evaluate(trial.trial_id, dict(trial.hyperparameters.values),
                                        Path(self.get_trial_dir(trial.trial_id)))
        except (WeightsNotFoundError, DataError, ConfigMismatchError) as e:
            # bad input, not a bad hyperparameter: stop the search with the message
            raise SearchInputError(str(e)) from e
        except Exception:
            # Keras Tuner records the trial as failed and goes on (three failures in a row stop the search); it
            # prints nothing, so say what happened here
            log.exception("trial %s failed", trial.trial_id)
            raise


class SearchInputError(kt.errors.FatalError):
    """A trial could not run because of the data, the weights or the directory (fix the flags, rerun)."""


class RandomSearchTuner(_MeteorTuner, kt.RandomSearch):
    pass


class HyperbandTuner(_MeteorTuner, kt.Hyperband):
    pass


class BayesianTuner(_MeteorTuner, kt.BayesianOptimization):
    pass


def make_tuner(kind: str, runner: TrialRunner, tuner_dir: Path, max_trials: int = 10, overwrite: bool = False,
               hyperband_factor: int = 3, hyperband_iterations: int = 1, bayesian_initial_points: int = 0,
               seed: Optional[int] = None):
    """A tuner of `kind` (random | hyperband | bayesian) whose project directory is `tuner_dir` itself.

    `max_trials` caps the trials of every kind (Hyperband's brackets decide its own count; 0 = no cap there).
    `overwrite=False` reloads an existing search in `tuner_dir` (Keras Tuner's own resume: finished trials are kept,
    trials that were running are retried with the same hyperparameters)."""
    check_tuner_args(kind, max_trials, hyperband_factor, hyperband_iterations)
    tuner_dir = Path(tuner_dir).resolve()
    objective = kt.Objective(objective_name(runner.objective), direction="max")
    common = dict(runner=runner, objective=objective, seed=runner.hypermodel.base.seed if seed is None else seed,
                  directory=str(tuner_dir.parent), project_name=tuner_dir.name, overwrite=overwrite)
    if kind == "random":
        return RandomSearchTuner(max_trials=max_trials, **common)
    if kind == "bayesian":
        return BayesianTuner(max_trials=max_trials, num_initial_points=bayesian_initial_points or None, **common)
    tuner = HyperbandTuner(max_epochs=runner.hypermodel.max_epochs, factor=hyperband_factor,
                           hyperband_iterations=hyperband_iterations, **common)
    if max_trials:
        _oracle(tuner).max_trials = max_trials  # the oracle stops creating trials at the cap
    return tuner


def check_tuner_args(kind: str, max_trials: int, hyperband_factor: int = 3, hyperband_iterations: int = 1) -> None:
    """Flag checks of `make_tuner`, naming the flag (cheap: run them before anything else)."""
    if kind not in TUNERS:
        raise ValueError(f"--tuner={kind!r} is not one of {', '.join(TUNERS)}")
    if max_trials < 0 or (max_trials == 0 and kind != "hyperband"):
        raise ValueError(f"--max_trials must be >= 1 (0 = no cap, --tuner=hyperband only), got {max_trials}")
    if kind == "hyperband" and hyperband_factor < 2:
        raise ValueError(f"--hyperband_factor must be >= 2, got {hyperband_factor}")
    if kind == "hyperband" and hyperband_iterations < 1:
        raise ValueError(f"--hyperband_iterations must be >= 1, got {hyperband_iterations}")


def _oracle(tuner):
    return getattr(tuner.oracle, "_oracle", tuner.oracle)  # a worker's OracleClient wraps the local oracle


def hyperparameter_values(trial) -> dict:
    """A trial's hyperparameter values without Hyperband's bookkeeping."""
    return {k: v for k, v in trial.hyperparameters.values.items() if k not in HYPERBAND_KEYS}
