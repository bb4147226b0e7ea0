"""One phase (head or fine-tune) of one fold, resumable: its epoch log, best checkpoint, per-epoch backup and LR.

A phase killed anywhere continues from its last backed-up epoch with the data order, augmentation and dropout draws
it would have had; the Keras-level training it calls is `meteor_tf.training.phases.train_phase`.
"""

from __future__ import annotations

import dataclasses

import csv
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from meteor_tf import io
from meteor_tf.config import ExperimentConfig
from meteor_tf.run_dir import PartDir, RunDir


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


def read_csv_log(path: Path) -> Dict[str, List[float]]:
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
    with io.atomic_path(path) as partial:
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(rows[e] for e in sorted(rows) if e < epochs)


def _phase_callbacks(run: RunDir, part: PartDir, phase: str, initial_best: float):
    import keras

    from meteor_tf.training.callbacks import AtomicBackupAndRestore, AtomicModelCheckpoint

    ckpt = AtomicModelCheckpoint(str(part.best_weights(phase)), monitor="val_loss", save_best_only=True,
                                 save_weights_only=True)
    ckpt.best = initial_best  # a resumed phase keeps the best epoch found before the kill
    return [
        keras.callbacks.CSVLogger(str(part.log(phase)), append=True),
        keras.callbacks.TensorBoard(str(run.tensorboard(part, phase)), write_graph=False, update_freq="epoch"),
        ckpt,
        # after the log and checkpoint, so a kill between them repeats an epoch rather than losing one
        AtomicBackupAndRestore(str(part.backup(phase)), save_freq="epoch", delete_checkpoint=True),
    ]


def _lr_flag(config: ExperimentConfig, phase: str) -> Optional[float]:
    return config.lr_head if phase == "head" else config.lr_fine_tune


def _paper_lr(config: ExperimentConfig, phase: str) -> float:
    return config.lr_head_value if phase == "head" else config.lr_fine_tune_value


def _phase_lr_choice(config: ExperimentConfig, phase: str, train_model, train_ds, part: PartDir,
                     compiled: bool = False) -> float:
    """The phase's peak LR: the LR flag, or the LR range test's suggestion (run once on the fit split and
    recorded, so a phase resumed after a kill trains on with the LR it started with), or the paper's LR."""
    from meteor_tf.training.callbacks import lr_range_test
    from meteor_tf.training.phases import compile_for_phase

    record = part.lr_record(phase)
    if record.exists():
        return float(io.read_json(record)["lr"])
    lr, source = _paper_lr(config, phase), "flag" if _lr_flag(config, phase) is not None else "paper default"
    if config.lr_find and _lr_flag(config, phase) is None:
        if not compiled:
            compile_for_phase(train_model, lr, weight_decay=config.weight_decay)
        found = lr_range_test(train_model, train_ds, plot_path=str(part.lr_plot(phase)))
        if found.suggestion is not None:
            lr, source = float(found.suggestion), "lr range test"
        else:
            source = "paper default (the LR range test found no falling stretch)"
    io.write_json(record, {"lr": lr, "source": source})
    return lr


def run_phase(config: ExperimentConfig, phase: str, train_model, data: Tuple, part: PartDir, epochs: int,
              batch_size: int, run: RunDir, compiled: bool = False) -> dict:
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
    done_epochs = backed_up_epochs(part.backup(phase))
    train_ds = make_dataset(x_fit, y_fit, batch_size, training=True, augment=augment, seed=config.seed,
                            first_epoch=done_epochs)
    val_ds = make_dataset(x_val, y_val, batch_size, training=False)
    steps = int(np.ceil(len(x_fit) / batch_size))
    if done_epochs:
        advance_seed_generators(train_model, done_epochs * steps)
    log_path, best_path = part.log(phase), part.best_weights(phase)
    _keep_backed_up_rows(log_path, done_epochs)
    previous = read_csv_log(log_path)
    initial_best = min(previous["val_loss"]) if previous.get("val_loss") else np.inf
    lr = _phase_lr_choice(config, phase, train_model, train_ds, part, compiled=compiled)
    _, lr_used = train_phase(
        train_model, train_ds, val_ds, epochs=epochs, lr=lr, steps_per_epoch=steps,
        callbacks=_phase_callbacks(run, part, phase, initial_best),
        **dataclasses.asdict(config.train.sgdr), weight_decay=config.train.weight_decay,
        jit_compile=config.runtime.jit_compile, meteor_auc=True, verbose=2, compile=not compiled)
    if best_path.exists():
        train_model.load_weights(str(best_path))
    return {"lr": float(lr_used), "history": read_csv_log(log_path)}
