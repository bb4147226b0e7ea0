"""One fold of the recipe (`train_fold`: head on the frozen backbone, then fine-tuning), the fold loop both the
runner and the tuner's trials use (`run_folds`), and the folds themselves (`make_folds`, the split check)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from meteor_tf.config import ExperimentConfig
from meteor_tf.evaluation import metrics as m
from meteor_tf.experiment.features import CachedHead, backbone_features, predict_meteor, use_cached_features
from meteor_tf.experiment.model_setup import build_model
from meteor_tf.experiment.phase import run_phase
from meteor_tf.run_dir import FINAL, RunDir, RunRecord, check_or_record_split, fold_name

log = logging.getLogger("meteor_tf")


@dataclasses.dataclass
class FoldData:
    fit_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray


def inner_split(config: ExperimentConfig, train_idx, labels, groups, test_idx) -> FoldData:
    """A fold from its training and test parts: an inner validation split of the training part picks the
    checkpoint epoch (and the LR with --lr_find)."""
    from meteor_tf.data import folds as f

    fit_idx, val_idx = f.inner_validation_split(train_idx, labels, groups, fraction=config.val_fraction,
                                                seed=config.seed)
    return FoldData(np.asarray(fit_idx), np.asarray(val_idx), np.asarray(test_idx))


def make_folds(config: ExperimentConfig, examples) -> List[FoldData]:
    """--folds stratified group folds (or with 1, the --holdout_fraction split), each with its inner split."""
    from meteor_tf.data import folds as f

    labels, groups = examples.labels, examples.groups
    if config.folds == 1:
        splits = [f.holdout_split(labels, groups, fraction=config.holdout_fraction, seed=config.seed)]
    else:
        splits = f.stratified_group_folds(labels, groups, n_folds=config.folds, seed=config.seed)
    return [inner_split(config, train_idx, labels, groups, test_idx) for train_idx, test_idx in splits]


def fold_seed(config: ExperimentConfig, k: int) -> int:
    """Fold k's seed (the final model uses config.seed itself)."""
    return config.seed + 1000 * (k + 1)


def split_record(ids, folds: List[FoldData], test_key: str = "test") -> List[dict]:
    """Each fold's parts by example id (sorted): what a rerun must find again."""
    return [{"fit": sorted(ids[f.fit_idx].tolist()), "val": sorted(ids[f.val_idx].tolist()),
             test_key: sorted(ids[f.test_idx].tolist())} for f in folds]


def check_split(run: RunDir, ids, folds: List[FoldData]) -> None:
    """Stores the split by example id (folds.json); a resumed run must see the same split."""
    check_or_record_split(run.split, split_record(ids, folds), "run", "use a new --run_id")


@dataclasses.dataclass
class FoldContext:
    """What every fold of a run (or of a trial) shares."""
    config: ExperimentConfig
    examples: object  # data.dataset.Examples
    run: RunDir
    record: RunRecord
    backbone_path: object  # Optional[Path]: the pretrained backbone every fold starts from
    batch_size: int  # global batch
    features: Optional[np.ndarray] = None  # cached backbone features of every capture (head phase)
    cached_head: Optional[CachedHead] = None  # traced once for every fold

    @classmethod
    def create(cls, config: ExperimentConfig, examples, run: RunDir, record: RunRecord, backbone_path,
               batch_size: int, progress: Optional[Callable[[str], None]] = None) -> "FoldContext":
        """Call inside the strategy's scope: with cached features on, computes them (once per run) and compiles the
        head that trains on them."""
        context = cls(config, examples, run, record, backbone_path, batch_size)
        if use_cached_features(config):
            if progress is not None:
                progress("computing the frozen backbone's features once for every capture (--nocache_features to "
                         "recompute them every step)")
            context.features = backbone_features(config, examples.images, backbone_path, run.features, batch_size)
            context.cached_head = CachedHead(config, context.features.shape[-1])
        return context


def _phases(config: ExperimentConfig) -> List[str]:
    if config.pretrain == "none":
        return ["fine_tune"]
    return ["head", "fine_tune"] if config.fine_tune else ["head"]


def train_fold(context: FoldContext, fold: FoldData, name: str, seed: int,
               need_model: bool = True) -> Tuple[Dict[str, dict], object]:
    """Both phases of one fold (or of the final model): head on the frozen backbone, then fine-tuning.

    Returns ({phase: test-fold metrics at 0.5, LR, history}, the trained model, or None when `need_model` is False
    and every phase was already recorded: a finished fold is neither rebuilt nor reloaded); predictions go to the
    part's predictions_{phase}.npz. With cached features the head phase trains and predicts on them."""
    from meteor_tf.models.freeze import set_phase
    from meteor_tf.training.phases import seed_phase

    c = context
    config, features = c.config, c.features
    part = c.run.part(name).mkdir()
    x, y = c.examples.images, c.examples.labels
    results: Dict[str, dict] = {}
    model, recorded = None, None  # built, and the last recorded phase's weights loaded, only when needed

    def current_model():
        nonlocal model, recorded
        if model is None:
            model = build_model(config, c.backbone_path, seed)
        if recorded is not None:
            model.load_weights(str(recorded))
            recorded = None
        return model

    for phase in _phases(config):
        key = f"{name}/{phase}"
        weights_after = part.weights_after(phase)
        done = c.record.done(key)
        if done is not None:
            recorded = weights_after
            results[phase] = done
            continue
        model = current_model()
        started = time.time()
        on_features = phase == "head" and features is not None
        if phase == "head":
            set_phase(model, "head")
            if on_features:
                if c.cached_head is None:
                    c.cached_head = CachedHead(config, features.shape[-1])
                c.cached_head.start(model.get_layer("head"))
                train_model = c.cached_head.model
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
        info = run_phase(config, phase, train_model, data, part, epochs, c.batch_size, c.run, compiled=on_features)
        if on_features:  # the backbone is frozen and inference-only: its cached features give the same answers
            c.cached_head.finish(model.get_layer("head"))
            val_prob = c.cached_head.predict_meteor(features[fold.val_idx], c.batch_size)
            test_prob = c.cached_head.predict_meteor(features[fold.test_idx], c.batch_size) if len(fold.test_idx) \
                else np.zeros((0,))
        else:
            val_prob = predict_meteor(model, x[fold.val_idx], c.batch_size)
            test_prob = predict_meteor(model, x[fold.test_idx], c.batch_size) if len(fold.test_idx) else \
                np.zeros((0,))
        part.write_predictions(phase, fold.val_idx, val_prob, fold.test_idx, test_prob)
        result = {
            "lr": info["lr"], "history": info["history"], "seconds": time.time() - started,
            "test": m.classification_metrics(y[fold.test_idx], test_prob) if len(fold.test_idx) else {},
            "epochs": len(info["history"].get("loss", [])),
        }
        model.save_weights(str(weights_after))
        c.record.mark(key, result)  # after the weights, so a recorded phase always has them
        results[phase] = result
        log.info("%s %s: %s", name, phase, {k: round(v, 4) for k, v in result["test"].items()
                                            if isinstance(v, float)})
    return results, (current_model() if need_model else model)


def run_folds(context: FoldContext, folds: List[FoldData],
              after_fold: Optional[Callable[[int, Dict[str, dict], float], None]] = None,
              progress: Optional[Callable[[str], None]] = None,
              extra: Optional[Dict[str, Callable[[], object]]] = None) -> Dict[str, Dict[str, dict]]:
    """Trains every fold not yet recorded (fold k with `fold_seed(config, k)`), then each `extra` unit ({part name:
    a function that trains it}, e.g. the final model), each under a claim (`claims.Claims`): other processes working
    on the same run directory (`--fold_workers`, or the same command on other machines sharing it) take the other
    units, and this one waits for theirs. `after_fold(k, results, started)` runs after each fold. Returns {fold name:
    {phase: result}} in fold order."""
    from meteor_tf.experiment.claims import Claims

    claims, extra = Claims(context.run.path), dict(extra or {})
    per_fold: Dict[str, Dict[str, dict]] = {}
    pending = [(fold_name(k), k) for k in range(len(folds))] + [(name, None) for name in extra]
    said = False
    while pending:
        context.record.refresh()
        for name, k in list(pending):
            started = time.time()
            if not unit_done(context, name):
                if not claims.try_claim(name):
                    continue
                context.record.refresh()  # the unit may have finished while we looked
            with claims.heartbeat(name) if claims.mine(name) else contextlib.nullcontext():
                if k is None:
                    if not unit_done(context, name):
                        extra[name]()
                else:
                    if progress is not None and not part_done(context, name):
                        progress(f"fold {k + 1}/{len(folds)}: fit {len(folds[k].fit_idx)}, inner validation "
                                 f"{len(folds[k].val_idx)}, test {len(folds[k].test_idx)}")
                    per_fold[name], _ = train_fold(context, folds[k], name, seed=fold_seed(context.config, k),
                                                   need_model=False)
                    if after_fold is not None:
                        after_fold(k, per_fold[name], started)
            pending.remove((name, k))
        if pending:
            if not said and progress is not None:
                progress(f"waiting for {', '.join(name for name, _ in pending)}, claimed by other workers "
                         f"({claims.dir})")
                said = True
            time.sleep(min(5.0, claims.ttl / 4))
    return {fold_name(k): per_fold[fold_name(k)] for k in range(len(folds))}


def unit_done(context: FoldContext, name: str) -> bool:
    """Part `name` is finished: every phase recorded and, for the final model, its model.keras saved."""
    return part_done(context, name) and (name != FINAL or context.run.final.model.exists())


def part_done(context: FoldContext, name: str) -> bool:
    """Every phase of part `name` (a fold or the final model) is recorded in state.json."""
    return all(context.record.done(f"{name}/{phase}") is not None for phase in _phases(context.config))
