"""The experiment runner: stratified group K-fold CV of the two-phase recipe, resumable, with reports, and the final
model retrained on all data (what `export` ships). The run directory's layout: `meteor_tf.run_dir`.

A run killed anywhere (SIGKILL included) continues where it stopped when the same command is run again: finished
phases are read back from state.json, and the phase in progress resumes from Keras's BackupAndRestore checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np

from meteor_tf import METEOR, io
from meteor_tf.config import ExperimentConfig
from meteor_tf.data import DataError
from meteor_tf.evaluation import metrics as m
from meteor_tf.evaluation import report
from meteor_tf.evaluation.provenance import provenance, threads
from meteor_tf.experiment.fold import FoldContext, FoldData, check_split, inner_split, make_folds, run_folds, \
    train_fold
from meteor_tf.experiment.model_setup import initial_backbone_path
from meteor_tf.experiment.runtime import PRECISION_KEY, keras_policy_name, make_runtime
from meteor_tf.run_dir import FINAL, PHASES, RunDir, RunRecord, check_settings

log = logging.getLogger("meteor_tf")


def prepare_run_dir(config: ExperimentConfig, strategy=None) -> RunDir:
    """Creates (or finds) the run directory; refuses to mix two configurations under one run id.

    Under a multi-worker strategy only the chief writes the run directory; every other worker does the same
    work (collectives need it) in its own twin, ``output_dir/workertemp_worker_K/<run id>``."""
    path = Path(config.output_dir) / config.derived_run_id()
    if strategy is not None:
        from meteor_tf.training import distribute

        path = Path(distribute.worker_save_path(str(path), strategy))
    path.mkdir(parents=True, exist_ok=True)
    run = RunDir(path)
    check_settings(run, config.to_dict(), ExperimentConfig.NOT_IN_RUN_ID)
    io.write_json(run.flags, config.to_dict(), unique=True)  # unique: workers on one run write it at once
    upgrade_checkpoints(run)
    return run


def upgrade_checkpoints(run: RunDir) -> None:
    """Renames the groups of checkpoints written before backbones knew their structure, so the run resumes."""
    from meteor_tf.models import weights

    for path in sorted(run.path.rglob("*.weights.h5")):
        if weights.upgrade_classifier_weights(path):
            log.info("%s: checkpoint of an older meteor_tf, upgraded to today's layer names", path)


def run_experiment(config: ExperimentConfig, progress: Callable[[str], None] = log.info, *,
                   compare_threads: bool = True, setup_only: bool = False) -> dict:
    """Runs (or resumes) the whole experiment and writes the run directory. Returns the metrics dict.

    Several processes may run the same experiment on one run directory at once (`--fold_workers`, or the same
    command on machines sharing `--output_dir`): each claims folds and the final model (experiment/claims.py), and
    each ends with the whole report. `compare_threads=False`: no warning about thread settings that differ from the
    run's start (the process that gathers `--fold_workers`' records trains nothing). `setup_only`: stop once what
    every fold shares (dataset, backbone file, folds, cached features) is on disk; returns {}."""
    if config.runtime.fold_workers > 1:
        return _run_with_fold_workers(config, progress)
    t0 = time.time()
    # the runtime first: MultiWorkerMirroredStrategy must exist before any other TensorFlow work
    path = Path(config.output_dir) / config.derived_run_id()
    fresh = not path.exists()
    runtime = make_runtime(config, None if fresh else RunDir(path).read_provenance())
    run = prepare_run_dir(config, runtime.strategy)
    try:
        return _run_in(config, run, runtime, progress, t0, compare_threads, setup_only)
    except DataError:
        if fresh:  # stopped by the data before anything was computed: leave no empty run folder behind
            shutil.rmtree(run.path, ignore_errors=True)
        raise


def check_threads(run: RunDir) -> bool:
    """A resumed run: warn when this process's thread settings differ from those the run started with (they change
    the float reduction order, so folds trained now may differ in the last digits). Returns whether they match."""
    started = (run.read_provenance() or {}).get("threads")
    now = threads()
    if started is not None and started != now:
        log.warning("this process runs with threads %s, the run started with %s: the folds trained now may differ "
                    "from an uninterrupted run in the last digits", now, started)
        return False
    return True


def _run_in(config: ExperimentConfig, run: RunDir, runtime, progress, t0: float, compare_threads: bool,
            setup_only: bool = False) -> dict:
    from meteor_tf.data.dataset import load_examples

    strategy, batch_size = runtime.strategy, runtime.batch_size
    timings: Dict[str, float] = {}
    progress(f"run directory: {run.path}")
    if not run.provenance.exists():
        from meteor_tf.training.distribute import cpu_bf16_path

        io.write_json(run.provenance, {**provenance(config.seed), PRECISION_KEY: runtime.precision,
                                       "cpu_bf16": cpu_bf16_path()}, unique=True)
    elif compare_threads:
        check_threads(run)
    record = RunRecord(run)
    # weights first: a missing ImageNet file stops the run at once, before data generation or loading
    backbone_path = initial_backbone_path(config, run)
    timings["pretrained backbone"] = time.time() - t0

    t = time.time()
    examples = load_examples(config)
    timings["load data"] = time.time() - t
    progress(f"data: {len(examples.labels)} captures ({int((examples.labels == METEOR).sum())} meteor), "
             f"{len(examples.skipped)} skipped")
    folds = make_folds(config, examples)
    check_split(run, examples.ids, folds)

    progress(f"strategy: {type(strategy).__name__} with {strategy.num_replicas_in_sync} replica(s), global "
             f"batch {batch_size}, precision policy {keras_policy_name()} (--mixed_precision={config.mixed_precision}), "
             f"XLA {'auto (on GPUs only)' if config.jit_compile is None else config.jit_compile}")
    t = time.time()
    with strategy.scope():
        context = FoldContext.create(config, examples, run, record, backbone_path, batch_size, progress)
        timings["cached features"] = time.time() - t
        if setup_only:
            return {}

        def after_fold(k: int, results: Dict[str, dict], started: float) -> None:
            io.write_json(run.fold(k).metrics, {phase: r["test"] for phase, r in results.items()}, unique=True)
            # the phases' own recorded seconds: a fold finished by an earlier (killed) process keeps its real time
            recorded = sum(r.get("seconds", 0.0) for r in results.values())
            timings[f"fold {k}"] = max(recorded, time.time() - started)

        # the final model needs only the settings, not the folds' results (the threshold goes into its model_info
        # afterwards): one more unit of the fold loop, so a parallel worker trains it beside the last folds
        final = {FINAL: lambda: train_final_model(context, progress)} if config.retrain_final else {}
        per_fold = run_folds(context, folds, after_fold, progress, extra=final)
        result = summarise(config, examples, folds, per_fold, run)
        if config.retrain_final:
            result["final"] = finish_final(context, result["threshold"]["value"])
            timings["final model"] = sum((record.done(f"{FINAL}/{p}") or {}).get("seconds", 0.0) for p in PHASES)
    timings["total (this process)"] = time.time() - t0
    result["timings"] = timings
    io.write_json(run.metrics, result, unique=True)
    io.write_text(run.summary, report.summary_markdown(
        config.to_dict(), result["stats"], result["threshold"], examples.skipped, timings,
        title=f"meteor_tf run {run.name}"), unique=True)
    progress(f"summary: {run.summary}")
    return result


def summarise(config, examples, folds, per_fold, run: RunDir) -> dict:
    """Mean ± std per row, pooled confusion matrices, the recall-first threshold, learning curves."""
    y = examples.labels
    stats, pooled = {}, {}
    for phase in PHASES:
        rows = [r[phase]["test"] for r in per_fold.values() if phase in r and r[phase]["test"]]
        if not rows:
            continue
        stats[phase] = m.mean_std(rows)
        preds = [run.fold(k).read_predictions(phase) for k in range(len(folds))]
        test_idx = np.concatenate([p["test_idx"] for p in preds])
        test_prob = np.concatenate([p["test_prob"] for p in preds])
        pooled[phase] = (preds, test_idx, test_prob)
        report.plot_confusion(m.confusion(y[test_idx], test_prob), run.confusion(phase),
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
    report.plot_confusion(m.confusion(y[test_idx], test_prob, t), run.confusion("recall_first"),
                          f"{dict(report.ROWS)[last]}: pooled test folds, threshold {t:.3f}")
    histories = {fold: [{"phase": p, "history": r[p]["history"]} for p in PHASES if p in r]
                 for fold, r in per_fold.items()}
    report.plot_learning_curves(histories, run.learning_curves)
    return {"stats": stats, "threshold": threshold, "skipped": examples.skipped,
            "per_fold": {fold: {p: r[p]["test"] for p in r} for fold, r in per_fold.items()},
            "lr": {fold: {p: r[p]["lr"] for p in r} for fold, r in per_fold.items()},
            "config": config.to_dict()}


def _run_with_fold_workers(config: ExperimentConfig, progress) -> dict:
    """`--fold_workers=N`: N processes (spawned, each on its share of the cores) work on the run at once; then this
    process, which trained nothing, reads their records and writes the report."""
    import multiprocessing

    n = config.runtime.fold_workers
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    share = max(1, len(cores) // n)
    single = config.replace(fold_workers=1)
    progress(f"--fold_workers={n}: preparing what the folds share (dataset, backbone, folds, cached features)")
    run_experiment(single, progress, setup_only=True)  # once, here: workers building one tfds dataset would race
    progress(f"--fold_workers={n}: {n} processes, {share} core(s) each ({len(cores)} usable)")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_fold_worker, name=f"fold-worker-{i}",
                               args=(single.to_dict(), i, cores[i * share:(i + 1) * share] if len(cores) >= n
                                     else cores))
               for i in range(n)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    failed = [f"{w.name} (exit code {w.exitcode})" for w in workers if w.exitcode != 0]
    if failed:
        raise RuntimeError(f"{', '.join(failed)} stopped; the run directory keeps what was finished: rerun the same "
                           "command to resume")
    return run_experiment(single, progress, compare_threads=False)


def _fold_worker(settings: dict, index: int, cores) -> None:
    """One worker process of `--fold_workers`: pinned to `cores`, TensorFlow on as many threads."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(len(cores))
    tf.config.threading.set_inter_op_parallelism_threads(len(cores))
    logging.basicConfig(level=logging.INFO, format=f"[worker {index}] %(message)s", force=True)
    log.setLevel(logging.INFO)
    run_experiment(ExperimentConfig.from_dict(settings))


def final_fold(context: FoldContext) -> FoldData:
    """All the data as the final model's training split (an inner validation split still picks the checkpoint)."""
    config, examples = context.config, context.examples
    all_idx = np.arange(len(examples.labels))
    return inner_split(config, all_idx, examples.labels, examples.groups, np.zeros((0,), dtype=int))


def train_final_model(context: FoldContext, progress=log.info) -> Dict[str, dict]:
    """Retrains on all the data with the CV settings and saves final/model.keras (resumable like a fold)."""
    progress("retraining the final model on all the data with the CV settings")
    results, model = train_fold(context, final_fold(context), FINAL, seed=context.config.seed)
    model_path = context.run.final.model
    if not model_path.exists():
        with io.atomic_path(model_path, unique=True) as partial:
            model.save(str(partial))
    return results


def finish_final(context: FoldContext, threshold: float) -> dict:
    """The trained final model's record, with the CV's recall-first threshold stored beside it (model_info.json)."""
    config, run = context.config, context.run
    results, _ = train_fold(context, final_fold(context), FINAL, seed=config.seed, need_model=False)  # recorded
    run.write_model_info(threshold, config.to_dict(), config.normalization)
    return {"model": str(run.final.model), "threshold": threshold,
            "lr": {p: r["lr"] for p, r in results.items()}}


__all__ = ["FoldData", "prepare_run_dir", "run_experiment", "check_threads", "summarise", "train_final_model",
           "finish_final"]
