"""The experiment runner: stratified group K-fold CV of the two-phase recipe, resumable, with reports.

Layout of a run directory (`output_dir/<run id>`):

    flags.json, provenance.json, folds.json     what was run, where, on which split
    state.json                                  run-level record of finished folds and phases (resume)
    fold_K/{head,fine_tune}_log.csv             per-epoch logs; fold_K/lr_find_*.png; fold_K/predictions_*.npz
    fold_K/metrics.json                         per-fold test metrics for both rows
    metrics.json, summary.md                    mean ± std, recall-first threshold, skipped files
    confusion_*.png, learning_curves.png        plots
    final/                                      the model retrained on all data (what `export` ships)

A run killed anywhere (SIGKILL included) continues where it stopped when the same command is run again: finished
phases are read back from state.json, and the phase in progress resumes from Keras's BackupAndRestore checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from meteor_tf import METEOR
from meteor_tf.config import ExperimentConfig
from meteor_tf.data import DataError
from meteor_tf.evaluation import metrics as m
from meteor_tf.evaluation import report
from meteor_tf.evaluation.provenance import provenance, threads

log = logging.getLogger("meteor_tf")


class ConfigMismatchError(ValueError):
    pass


# --------------------------------------------------------------------------------------------------- run record
class RunRecord:
    """state.json: which folds/phases finished, with their results; written atomically after each phase."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "state.json"
        self.state = json.loads(self.path.read_text()) if self.path.exists() else {"phases": {}}

    def done(self, key: str) -> Optional[dict]:
        return self.state["phases"].get(key)

    def mark(self, key: str, result: dict) -> None:
        self.state["phases"][key] = result
        report.write_json(self.path, self.state)


def prepare_run_dir(config: ExperimentConfig, strategy=None) -> Path:
    """Creates (or finds) the run directory; refuses to mix two configurations under one run id.

    Under a multi-worker strategy only the chief writes the run directory; every other worker does the same
    work (collectives need it) in its own twin, ``output_dir/workertemp_worker_K/<run id>``."""
    run_dir = Path(config.output_dir) / config.derived_run_id()
    if strategy is not None:
        from meteor_tf.training import distribute

        run_dir = Path(distribute.worker_save_path(str(run_dir), strategy))
    run_dir.mkdir(parents=True, exist_ok=True)
    flags_path = run_dir / "flags.json"
    settings = {k: v for k, v in config.to_dict().items() if k not in ExperimentConfig.NOT_IN_RUN_ID}
    if flags_path.exists():
        saved = json.loads(flags_path.read_text())
        saved_settings = {k: v for k, v in saved.items() if k not in ExperimentConfig.NOT_IN_RUN_ID}
        if json.loads(json.dumps(settings, default=list)) != saved_settings:
            diff = sorted(k for k in settings if json.loads(json.dumps(settings[k], default=list)) !=
                          saved_settings.get(k))
            raise ConfigMismatchError(
                f"{run_dir} holds a run with other settings ({', '.join(diff)} differ). Use another --run_id or "
                f"--output_dir, or delete that directory to start over.")
    report.write_json(flags_path, config.to_dict())
    return run_dir


# --------------------------------------------------------------------------------------------------- model set-up
def initial_backbone_path(config: ExperimentConfig, run_dir: Path) -> Optional[Path]:
    """Pretrained backbone weights for this run, resolved once and stored in the run dir so every fold starts
    from the same file (and a resumed run does not need the original source again)."""
    from meteor_tf.models import weights as w

    if config.pretrain == "none":
        return None
    path = run_dir / "initial_backbone.weights.h5"
    if path.exists():
        return path
    from meteor_tf.models.classifier import build_classifier_from_config

    model = build_classifier_from_config(config)
    backbone = model.get_layer("backbone")
    if config.pretrain == "imagenet":
        w.load_imagenet_weights(backbone, config.depth, config.layout, source=config.weights)
    else:
        source = Path(config.weights) if config.weights else fashion_mnist_source(config)
        w.load_backbone(backbone, str(source))
    with report.atomic_path(path) as partial:
        w.save_backbone(backbone, str(partial))
    return path


def fashion_mnist_source(config: ExperimentConfig) -> Path:
    """The Fashion-MNIST backbone file for --fmnist_backbone: the shipped preset (sha256-checked), or one pretrained
    and cached for these settings."""
    from meteor_tf.models import presets
    from meteor_tf.training import pretrain

    if config.fmnist_backbone == "shipped":
        preset = presets.fashion_mnist_preset_for(config.depth, config.layout)
        path = presets.preset_path(preset.name)
        log.info("Fashion-MNIST backbone: the shipped preset %s (%s)", preset.name, path)
        return path
    return pretrain.ensure_fashion_mnist_backbone(config)


def build_model(config: ExperimentConfig, backbone_path: Optional[Path], seed: int):
    import keras

    from meteor_tf.models import weights as w
    from meteor_tf.models.classifier import build_classifier_from_config

    keras.utils.set_random_seed(seed)
    model = build_classifier_from_config(config)
    if backbone_path is not None:
        w.load_backbone(model.get_layer("backbone"), str(backbone_path))
    return model


# --------------------------------------------------------------------------------------------------- phases
@dataclasses.dataclass
class FoldData:
    fit_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray


def _logged_rows(path: Path) -> Tuple[Optional[List[str]], Dict[int, dict]]:
    """A phase's epoch log: its header and {epoch: {"epoch": epoch, metric: value}} (a resumed phase may repeat an
    epoch: its last row wins).

    A kill mid-write can leave a partial last line (missing or glued fields): that row is left out, its epoch redone."""
    if not path.exists():
        return None, {}
    rows = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            try:
                epoch = int(row["epoch"])
                rows[epoch] = {"epoch": epoch, **{k: float(v) for k, v in row.items() if k != "epoch"}}
            except (TypeError, ValueError):
                continue
        return reader.fieldnames, rows


def _read_csv_log(path: Path) -> Dict[str, List[float]]:
    """Per-epoch logs as {metric: [value per epoch]}, epochs in order."""
    _, rows = _logged_rows(path)
    hist: Dict[str, List[float]] = {}
    for epoch in sorted(rows):
        for k, v in rows[epoch].items():
            if k != "epoch":
                hist.setdefault(k, []).append(v)
    return hist


def _keep_backed_up_rows(path: Path, epochs: int) -> None:
    """Rewrites a phase's epoch log to the rows of its first `epochs` epochs (those its backup holds), each once.

    A killed process may have logged an epoch it did not back up (the log comes first), or half a line: the resumed
    process trains that epoch again, and appending to such a file would log it twice or glue its row to the half."""
    header, rows = _logged_rows(path)
    if not header:
        return
    with report.atomic_path(path) as partial:
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows[e] for e in sorted(rows) if e < epochs)


def _predict_meteor(model, images, batch_size) -> np.ndarray:
    return model.predict(images, batch_size=batch_size, verbose=0)[:, METEOR]


class CachedHead:
    """One head model, compiled once, that trains on cached backbone features for every fold of a run.

    Each fold copies its own freshly seeded head weights in (`start`), trains this model, and copies the result back
    (`finish`); the optimizer's state is reset to its freshly built values per fold. Own code because Keras traces
    `fit`/`predict` functions again after every `compile` and for every new model: on cached features those traces
    (seconds) cost more than the head's few hundred training steps, and were most of a fold's time."""

    def __init__(self, config: ExperimentConfig, feature_dim: int):
        from meteor_tf.models.classifier import build_head
        from meteor_tf.training.phases import compile_for_phase

        self.model = build_head(feature_dim, tuple(config.head_units), tuple(config.head_dropout),
                                batch_norm=config.head_batch_norm)
        compile_for_phase(self.model, config.lr_head_value, weight_decay=config.weight_decay,
                          jit_compile=config.jit_compile, meteor_auc=True)
        self.model.optimizer.build(self.model.trainable_variables)
        self._optimizer_start = [v.numpy() for v in self.model.optimizer.variables]

    def start(self, head) -> None:
        self.model.set_weights(head.get_weights())
        for variable, value in zip(self.model.optimizer.variables, self._optimizer_start):
            variable.assign(value)

    def finish(self, head) -> None:
        head.set_weights(self.model.get_weights())

    def predict_meteor(self, features: np.ndarray, batch_size: int) -> np.ndarray:
        return _predict_meteor(self.model, features, batch_size)


def _phase_callbacks(run_dir: Path, phase_dir: Path, phase: str, best_path: Path, initial_best: float):
    import keras

    from meteor_tf.training.callbacks import AtomicBackupAndRestore, AtomicModelCheckpoint

    ckpt = AtomicModelCheckpoint(str(best_path), monitor="val_loss", save_best_only=True,
                                           save_weights_only=True)
    ckpt.best = initial_best  # a resumed phase keeps the best epoch found before the kill
    return [
        keras.callbacks.CSVLogger(str(phase_dir / f"{phase}_log.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "tensorboard" / phase_dir.name / phase), write_graph=False,
                                    update_freq="epoch"),
        ckpt,
        # after the log and checkpoint, so a kill between them repeats an epoch rather than losing one
        AtomicBackupAndRestore(str(backup_dir(phase_dir, phase)), save_freq="epoch", delete_checkpoint=True),
    ]


def _phase_lr_choice(config: ExperimentConfig, phase: str, train_model, train_ds, phase_dir: Path,
                     compiled: bool = False) -> float:
    """The phase's peak LR: the LR flag, or the LR range test's suggestion (run once on the fit split and
    recorded, so a phase resumed after a kill trains on with the LR it started with), or the paper's LR."""
    from meteor_tf.training.callbacks import lr_range_test
    from meteor_tf.training.phases import compile_for_phase

    record = phase_dir / f"lr_{phase}.json"
    if record.exists():
        return float(json.loads(record.read_text())["lr"])
    lr, source = _phase_lr(config, phase), "flag" if _lr_flag(config, phase) is not None else "paper default"
    if config.lr_find and _lr_flag(config, phase) is None:
        if not compiled:
            compile_for_phase(train_model, lr, weight_decay=config.weight_decay)
        found = lr_range_test(train_model, train_ds, plot_path=str(phase_dir / f"lr_find_{phase}.png"))
        if found.suggestion is not None:
            lr, source = float(found.suggestion), "lr range test"
        else:
            source = "paper default (the LR range test found no falling stretch)"
    report.write_json(record, {"lr": lr, "source": source})
    return lr


def backup_dir(phase_dir: Path, phase: str) -> Path:
    """Where a phase's per-epoch backup (kill-safe resume) lives."""
    return phase_dir / f"backup_{phase}"


def run_phase(config: ExperimentConfig, phase: str, train_model, data: Tuple, phase_dir: Path,
              epochs: int, batch_size: int, run_dir: Path, compiled: bool = False) -> dict:
    """Trains `train_model` (the classifier, or its head on cached features) for one phase, picks the epoch with
    the best inner-validation loss, and returns the LR used and the per-epoch history. `compiled=True`: the
    model is already compiled for this phase (a `CachedHead`), keep its traced functions and reset nothing but
    the LR."""
    from meteor_tf.data.pipeline import make_dataset
    from meteor_tf.training.callbacks import backed_up_epochs
    from meteor_tf.training.phases import advance_seed_generators, train_phase

    (x_fit, y_fit), (x_val, y_val), augment = data
    # A phase resumed mid-way continues with the data order, augmentation and dropout draws it would have had (its
    # backup holds the epochs done).
    done_epochs = backed_up_epochs(backup_dir(phase_dir, phase))
    train_ds = make_dataset(x_fit, y_fit, batch_size, training=True, augment=augment, seed=config.seed,
                            first_epoch=done_epochs)
    val_ds = make_dataset(x_val, y_val, batch_size, training=False)
    steps = int(np.ceil(len(x_fit) / batch_size))
    if done_epochs:
        advance_seed_generators(train_model, done_epochs * steps)
    log_path = phase_dir / f"{phase}_log.csv"
    best_path = phase_dir / f"best_{phase}.weights.h5"
    _keep_backed_up_rows(log_path, done_epochs)
    previous = _read_csv_log(log_path)
    initial_best = min(previous["val_loss"]) if previous.get("val_loss") else np.inf
    lr = _phase_lr_choice(config, phase, train_model, train_ds, phase_dir, compiled=compiled)
    _, lr_used = train_phase(
        train_model, train_ds, val_ds, epochs=epochs, lr=lr, steps_per_epoch=steps,
        callbacks=_phase_callbacks(run_dir, phase_dir, phase, best_path, initial_best),
        first_cycle_epochs=config.sgdr_first_cycle_epochs, t_mul=config.sgdr_t_mul,
        m_mul=config.sgdr_m_mul, min_lr=config.sgdr_min_lr, weight_decay=config.weight_decay,
        jit_compile=config.jit_compile, meteor_auc=True, verbose=2, compile=not compiled)
    if best_path.exists():
        train_model.load_weights(str(best_path))
    return {"lr": float(lr_used), "history": _read_csv_log(log_path)}


def _lr_flag(config: ExperimentConfig, phase: str) -> Optional[float]:
    return config.lr_head if phase == "head" else config.lr_fine_tune


def _phase_lr(config: ExperimentConfig, phase: str) -> float:
    return config.lr_head_value if phase == "head" else config.lr_fine_tune_value


def train_and_evaluate(config: ExperimentConfig, examples, fold: FoldData, name: str, run_dir: Path,
                       record: RunRecord, backbone_path: Optional[Path], features: Optional[np.ndarray],
                       seed: int, batch_size: int, cached_head: Optional[CachedHead] = None):
    """Both phases of one fold (or of the final model): head on the frozen backbone, then fine-tuning.

    Returns ({phase: test-fold metrics at 0.5, LR, history}, the trained model); predictions go to
    predictions_{phase}.npz. `batch_size` is the global batch (per-replica size × replicas). With `features`
    (cached backbone features) the head phase trains and predicts on them, with `cached_head` (pass one for
    all folds of a run, so it is traced once) or a new one."""
    from meteor_tf.models.freeze import set_phase
    from meteor_tf.training.phases import seed_phase

    phase_dir = run_dir / name
    phase_dir.mkdir(exist_ok=True)
    x, y = examples.images, examples.labels
    results: Dict[str, dict] = {}
    model = build_model(config, backbone_path, seed)
    phases = ["head", "fine_tune"] if config.pretrain != "none" else ["fine_tune"]
    if config.pretrain != "none" and not config.fine_tune:
        phases = ["head"]
    for phase in phases:
        key = f"{name}/{phase}"
        weights_after = phase_dir / f"after_{phase}.weights.h5"
        done = record.done(key)
        if done is not None:
            model.load_weights(str(weights_after))
            results[phase] = done
            continue
        started = time.time()
        on_features = phase == "head" and features is not None
        if phase == "head":
            set_phase(model, "head")
            if on_features:
                if cached_head is None:
                    cached_head = CachedHead(config, features.shape[-1])
                cached_head.start(model.get_layer("head"))
                train_model = cached_head.model
                data = ((features[fold.fit_idx], y[fold.fit_idx]), (features[fold.val_idx], y[fold.val_idx]), "none")
            else:
                train_model = model
                data = ((x[fold.fit_idx], y[fold.fit_idx]), (x[fold.val_idx], y[fold.val_idx]), config.augment)
        else:
            set_phase(model, "fine_tune" if config.pretrain != "none" else "all", frozen_convs=config.frozen_convs)
            train_model = model
            data = ((x[fold.fit_idx], y[fold.fit_idx]), (x[fold.val_idx], y[fold.val_idx]), config.augment)
        epochs = config.head_epochs if phase == "head" else config.fine_tune_epochs
        seed_phase(train_model, seed, phase)
        info = run_phase(config, phase, train_model, data, phase_dir, epochs, batch_size, run_dir,
                         compiled=on_features)
        if on_features:  # the backbone is frozen and inference-only: its cached features give the same answers
            cached_head.finish(model.get_layer("head"))
            val_prob = cached_head.predict_meteor(features[fold.val_idx], batch_size)
            test_prob = cached_head.predict_meteor(features[fold.test_idx], batch_size) if len(fold.test_idx) \
                else np.zeros((0,))
        else:
            val_prob = _predict_meteor(model, x[fold.val_idx], batch_size)
            test_prob = _predict_meteor(model, x[fold.test_idx], batch_size) if len(fold.test_idx) else \
                np.zeros((0,))
        np.savez(phase_dir / f"predictions_{phase}.npz", val_idx=fold.val_idx, val_prob=val_prob,
                 test_idx=fold.test_idx, test_prob=test_prob)
        result = {
            "lr": info["lr"], "history": info["history"], "seconds": time.time() - started,
            "test": m.classification_metrics(y[fold.test_idx], test_prob) if len(fold.test_idx) else {},
            "epochs": len(info["history"].get("loss", [])),
        }
        model.save_weights(str(weights_after))
        record.mark(key, result)  # after the weights, so a recorded phase always has them
        results[phase] = result
        log.info("%s %s: %s", name, phase, {k: round(v, 4) for k, v in result["test"].items()
                                            if isinstance(v, float)})
    return results, model


# --------------------------------------------------------------------------------------------------- features
def backbone_features(config: ExperimentConfig, images: np.ndarray, backbone_path: Optional[Path],
                      cache_path: Path, batch_size: int) -> np.ndarray:
    """Pooled features of the frozen pretrained backbone, computed once for every capture (all folds share them)."""
    import keras

    if cache_path.exists():
        return np.load(cache_path)
    model = build_model(config, backbone_path, config.seed)
    extractor = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    feats = extractor.predict(images, batch_size=batch_size, verbose=0)
    with report.atomic_path(cache_path) as partial:
        np.save(partial, feats)
    return feats


def use_cached_features(config: ExperimentConfig) -> bool:
    # The head phase sees a frozen backbone in inference mode; without augmentation its features never change.
    return config.cache_features and config.pretrain != "none" and config.augment == "none"


# --------------------------------------------------------------------------------------------------- experiment
def make_folds(config: ExperimentConfig, examples) -> List[FoldData]:
    from meteor_tf.data import folds as f

    if config.folds == 1:
        splits = [f.holdout_split(examples.labels, examples.groups, fraction=config.holdout_fraction,
                                  seed=config.seed)]
    else:
        splits = f.stratified_group_folds(examples.labels, examples.groups, n_folds=config.folds, seed=config.seed)
    out = []
    for train_idx, test_idx in splits:
        fit_idx, val_idx = f.inner_validation_split(train_idx, examples.labels, examples.groups,
                                                    fraction=config.val_fraction, seed=config.seed)
        out.append(FoldData(np.asarray(fit_idx), np.asarray(val_idx), np.asarray(test_idx)))
    return out


def run_experiment(config: ExperimentConfig, progress: Callable[[str], None] = log.info) -> dict:
    """Runs (or resumes) the whole experiment and writes the run directory. Returns the metrics dict."""
    t0 = time.time()
    # the strategy first: MultiWorkerMirroredStrategy must exist before any other TensorFlow work
    strategy, batch_size = _runtime(config)
    fresh = not (Path(config.output_dir) / config.derived_run_id()).exists()
    run_dir = prepare_run_dir(config, strategy)
    try:
        return _run_in(config, run_dir, strategy, batch_size, progress, t0)
    except DataError:
        if fresh:  # stopped by the data before anything was computed: leave no empty run folder behind
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def check_threads(run_dir: Path) -> bool:
    """A resumed run: warn when this process's thread settings differ from those the run started with (they change
    the float reduction order, so folds trained now may differ in the last digits). Returns whether they match."""
    started = json.loads((run_dir / "provenance.json").read_text()).get("threads")
    now = threads()
    if started is not None and started != now:
        log.warning("this process runs with threads %s, the run started with %s: the folds trained now may differ "
                    "from an uninterrupted run in the last digits", now, started)
        return False
    return True


def _run_in(config: ExperimentConfig, run_dir: Path, strategy, batch_size: int, progress, t0: float) -> dict:
    from meteor_tf.data.dataset import load_examples

    timings: Dict[str, float] = {}
    progress(f"run directory: {run_dir}")
    if not (run_dir / "provenance.json").exists():
        report.write_json(run_dir / "provenance.json", provenance(config.seed))
    else:
        check_threads(run_dir)
    record = RunRecord(run_dir)
    # weights first: a missing ImageNet file stops the run at once, before data generation or loading
    backbone_path = initial_backbone_path(config, run_dir)
    timings["pretrained backbone"] = time.time() - t0

    t = time.time()
    examples = load_examples(config)
    timings["load data"] = time.time() - t
    progress(f"data: {len(examples.labels)} captures ({int((examples.labels == METEOR).sum())} meteor), "
             f"{len(examples.skipped)} skipped")
    folds = make_folds(config, examples)
    _check_folds(run_dir, examples, folds)

    progress(f"strategy: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s), global "
             f"batch {batch_size}, precision policy {keras_policy_name()} (--mixed_precision={config.mixed_precision}), "
             f"XLA {'auto (on GPUs only)' if config.jit_compile is None else config.jit_compile}")
    t = time.time()
    features, cached_head = None, None
    with strategy.scope():
        if use_cached_features(config):
            progress("computing the frozen backbone's features once for every capture (--nocache_features to "
                     "recompute them every step)")
            features = backbone_features(config, examples.images, backbone_path, run_dir / "features.npy",
                                         batch_size)
            cached_head = CachedHead(config, features.shape[-1])  # compiled and traced once for every fold
        timings["cached features"] = time.time() - t

        per_fold: Dict[str, Dict[str, dict]] = {}
        for k, fold in enumerate(folds):
            t = time.time()
            progress(f"fold {k + 1}/{len(folds)}: fit {len(fold.fit_idx)}, inner validation {len(fold.val_idx)}, "
                     f"test {len(fold.test_idx)}")
            per_fold[f"fold_{k}"], _ = train_and_evaluate(config, examples, fold, f"fold_{k}", run_dir, record,
                                                          backbone_path, features, seed=config.seed + 1000 * (k + 1),
                                                          batch_size=batch_size, cached_head=cached_head)
            report.write_json(run_dir / f"fold_{k}" / "metrics.json",
                              {phase: r["test"] for phase, r in per_fold[f"fold_{k}"].items()})
            # the phases' own recorded seconds: a fold finished by an earlier (killed) process keeps its real time
            recorded = sum(r.get("seconds", 0.0) for r in per_fold[f"fold_{k}"].values())
            timings[f"fold {k}"] = max(recorded, time.time() - t)

        result = summarise(config, examples, folds, per_fold, run_dir, timings)
        if config.retrain_final:
            t = time.time()
            progress("retraining the final model on all the data with the CV settings")
            result["final"] = train_final(config, examples, run_dir, record, backbone_path, features,
                                          result["threshold"]["value"], batch_size, cached_head)
            recorded = sum((record.done(f"final/{p}") or {}).get("seconds", 0.0) for p in ("head", "fine_tune"))
            timings["final model"] = max(recorded, time.time() - t)
    timings["total (this process)"] = time.time() - t0
    result["timings"] = timings
    report.write_json(run_dir / "metrics.json", result)
    (run_dir / "summary.md").write_text(report.summary_markdown(
        config.to_dict(), result["stats"], result["threshold"], examples.skipped, timings,
        title=f"meteor_tf run {run_dir.name}"))
    progress(f"summary: {run_dir / 'summary.md'}")
    return result


def keras_policy_name() -> str:
    import keras

    return keras.mixed_precision.global_policy().name


def _runtime(config: ExperimentConfig):
    """The tf.distribute strategy and precision policy of --strategy / --mixed_precision, and the global batch."""
    from meteor_tf.training import distribute

    distribute.set_mixed_precision(config.mixed_precision)
    strategy = distribute.make_strategy(config.strategy)
    return strategy, distribute.scaled_batch_size(config.batch_size, strategy)


def _check_folds(run_dir: Path, examples, folds: List[FoldData]) -> None:
    """Stores the split by example id; a resumed run must see the same split."""
    as_ids = [{"fit": sorted(examples.ids[f.fit_idx].tolist()), "val": sorted(examples.ids[f.val_idx].tolist()),
               "test": sorted(examples.ids[f.test_idx].tolist())} for f in folds]
    path = run_dir / "folds.json"
    if path.exists() and json.loads(path.read_text()) != as_ids:
        raise ConfigMismatchError(f"{path}: the data or split changed since this run started; use a new --run_id")
    report.write_json(path, as_ids)


def summarise(config, examples, folds, per_fold, run_dir: Path, timings) -> dict:
    """Mean ± std per row, pooled confusion matrices, the recall-first threshold, learning curves."""
    y = examples.labels
    stats, pooled = {}, {}
    for phase in ("head", "fine_tune"):
        rows = [r[phase]["test"] for r in per_fold.values() if phase in r and r[phase]["test"]]
        if not rows:
            continue
        stats[phase] = m.mean_std(rows)
        preds = [np.load(run_dir / f"fold_{k}" / f"predictions_{phase}.npz") for k in range(len(folds))]
        test_idx = np.concatenate([p["test_idx"] for p in preds])
        test_prob = np.concatenate([p["test_prob"] for p in preds])
        pooled[phase] = (preds, test_idx, test_prob)
        report.plot_confusion(m.confusion(y[test_idx], test_prob), run_dir / f"confusion_{phase}.png",
                              f"{dict(report.ROWS)[phase]}: pooled test folds, threshold 0.5")
    last = "fine_tune" if "fine_tune" in pooled else "head"
    preds, test_idx, test_prob = pooled[last]
    val_idx = np.concatenate([p["val_idx"] for p in preds])
    val_prob = np.concatenate([p["val_prob"] for p in preds])
    t = m.recall_first_threshold(y[val_idx], val_prob, config.target_recall)
    at_t = [m.classification_metrics(y[p["test_idx"]], p["test_prob"], t) for p in preds]
    at_half = [m.classification_metrics(y[p["test_idx"]], p["test_prob"], 0.5) for p in preds]
    threshold = {"value": t, "target_recall": config.target_recall, "phase": last,
                 "at_0.5": m.mean_std(at_half), "at_threshold": m.mean_std(at_t)}
    report.plot_confusion(m.confusion(y[test_idx], test_prob, t), run_dir / "confusion_recall_first.png",
                          f"{dict(report.ROWS)[last]}: pooled test folds, threshold {t:.3f}")
    histories = {fold: [{"phase": p, "history": r[p]["history"]} for p in ("head", "fine_tune") if p in r]
                 for fold, r in per_fold.items()}
    report.plot_learning_curves(histories, run_dir / "learning_curves.png")
    return {"stats": stats, "threshold": threshold, "skipped": examples.skipped,
            "per_fold": {fold: {p: r[p]["test"] for p in r} for fold, r in per_fold.items()},
            "lr": {fold: {p: r[p]["lr"] for p in r} for fold, r in per_fold.items()},
            "config": config.to_dict()}


def train_final(config, examples, run_dir: Path, record: RunRecord, backbone_path, features, threshold: float,
                batch_size: int, cached_head: Optional[CachedHead] = None):
    """Retrains on all the data (an inner validation split still picks the checkpoint) and saves the model."""
    from meteor_tf.data import folds as f

    all_idx = np.arange(len(examples.labels))
    fit_idx, val_idx = f.inner_validation_split(all_idx, examples.labels, examples.groups,
                                                fraction=config.val_fraction, seed=config.seed)
    fold = FoldData(np.asarray(fit_idx), np.asarray(val_idx), np.zeros((0,), dtype=int))
    results, model = train_and_evaluate(config, examples, fold, "final", run_dir, record, backbone_path, features,
                                        seed=config.seed, batch_size=batch_size, cached_head=cached_head)
    final_dir = run_dir / "final"
    model_path = final_dir / "model.keras"
    if not model_path.exists():
        with report.atomic_path(model_path) as partial:
            model.save(str(partial))
    meta = {"threshold": threshold, "threshold_source": "pooled CV inner-validation predictions",
            "config": config.to_dict(), "class_names": ["meteor", "non_meteor"],
            "normalization": config.normalization}
    report.write_json(final_dir / "model_info.json", meta)
    return {"model": str(model_path), "threshold": threshold,
            "lr": {p: r["lr"] for p, r in results.items()}}

