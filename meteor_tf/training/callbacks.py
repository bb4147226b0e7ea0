"""Training callbacks: the LR range test (Smith 2017), SGDR (warm-restart cosine annealing, per batch), and
Keras's checkpoint callbacks made safe against a kill mid-write.

Both set the optimizer's LR each batch with ``optimizer.learning_rate = value`` (a variable assign the
compiled, also XLA, train step reads), so the optimizer must be built with a float LR, not a
``LearningRateSchedule`` (a schedule makes the LR read-only). Both work under mixed precision: a
``LossScaleOptimizer`` forwards the LR to the optimizer it wraps.
"""

from __future__ import annotations

import json
import math
import os
from typing import List, NamedTuple, Optional, Sequence

import keras
import numpy as np

from meteor_tf import faults
from meteor_tf.training import schedules


def get_lr(optimizer) -> float:
    """The optimizer's current LR as a Python float (works under a distribution strategy)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def set_lr(optimizer, value: float) -> None:
    """Set a float-LR optimizer's LR; a clear error if the optimizer was built on a schedule."""
    try:
        optimizer.learning_rate = float(value)
    except TypeError as e:  # Keras: "This optimizer was created with a `LearningRateSchedule` ..."
        raise TypeError(
            "The LR range test and SGDR set the learning rate every batch, so compile the model with an "
            "optimizer "
            "whose learning_rate is a float (e.g. keras.optimizers.Adam(1e-3)), not a LearningRateSchedule."
        ) from e


# ----------------------------------------------------------------------------------------------------------
# LR range test
# ----------------------------------------------------------------------------------------------------------


class LRRangeTest(keras.callbacks.Callback):
    """Exponential LR sweep (Smith 2017, as in the paper authors' code) that leaves no trace on the model.

    From ``start_lr`` the LR grows by a constant factor each batch, reaching ``end_lr`` at batch ``num_iter``.
    The loss is smoothed with a bias-corrected exponential moving average (``smoothing`` is the weight of the
    newest batch, 0.05 as the authors' ``beta = 0.95``). The sweep stops when the smoothed loss exceeds
    ``diverge_factor`` times the best smoothed loss so far (or is not finite), or after ``num_iter`` batches.
    At the end the model's weights (trainable and not, e.g. BatchNorm statistics), the optimizer's variables
    (moments, iteration count) and its LR are put back to what they were when training began.

    Per-batch loss: Keras 3 logs the running *mean* of the loss over the epoch, so the callback recovers each
    batch's loss from consecutive means (``k*m_k - (k-1)*m_{k-1}``), exact for equal batch sizes.
    ``lr_range_test`` runs one batch per epoch, where the logged mean *is* the batch loss.

    After the run: ``lrs`` (LR used by each batch), ``losses`` (smoothed loss after it), ``raw_losses``,
    ``suggestion()`` and ``plot(path)``.
    """

    def __init__(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
                 smoothing: float = 0.05, diverge_factor: float = 5.0, restore: bool = True):
        super().__init__()
        if not 0 < start_lr < end_lr:
            raise ValueError(f"need 0 < start_lr < end_lr, got start_lr={start_lr}, end_lr={end_lr}")
        if num_iter < 2:
            raise ValueError(f"num_iter must be >= 2, got {num_iter}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        self.start_lr, self.end_lr, self.num_iter = float(start_lr), float(end_lr), int(num_iter)
        self.smoothing, self.diverge_factor, self.restore = float(smoothing), float(diverge_factor), restore
        self._factor = (self.end_lr / self.start_lr) ** (1.0 / (self.num_iter - 1))
        self.lrs: List[float] = []
        self.losses: List[float] = []
        self.raw_losses: List[float] = []
        self.stopped_early = False

    def lr_at(self, i: int) -> float:
        """LR of batch ``i`` (0-based) of the sweep."""
        return self.start_lr * self._factor**i

    # -- Keras hooks
    # ----------------------------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        opt = self.model.optimizer
        if opt is None:
            raise ValueError("LRRangeTest needs a compiled model (model.compile(optimizer=...))")
        if not opt.built:  # fit builds it before on_train_begin; this covers callers that do not
            opt.build(self.model.trainable_variables)
        self._saved_weights = self.model.get_weights()
        self._saved_opt_vars = [keras.ops.convert_to_numpy(v) for v in opt.variables]
        self._saved_lr = get_lr(opt)
        self.lrs, self.losses, self.raw_losses = [], [], []
        self.stopped_early = False
        self._avg, self._best, self._n = 0.0, math.inf, 0
        set_lr(opt, self.lr_at(0))

    def on_epoch_begin(self, epoch, logs=None):
        self._batch_in_epoch, self._prev_mean = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        if self._n >= self.num_iter:
            return
        mean = float(logs["loss"])
        k = self._batch_in_epoch
        loss = (k + 1) * mean - k * self._prev_mean  # this batch's loss from the running epoch mean
        self._batch_in_epoch, self._prev_mean = k + 1, mean

        self._n += 1
        self._avg = (1.0 - self.smoothing) * self._avg + self.smoothing * loss
        smoothed = self._avg / (1.0 - (1.0 - self.smoothing) ** self._n)  # bias correction of the zero start
        self.lrs.append(self.lr_at(self._n - 1))
        self.raw_losses.append(loss)
        self.losses.append(smoothed)

        if not math.isfinite(smoothed) or (self._n > 1 and smoothed > self.diverge_factor * self._best):
            self.stopped_early = True
            self.model.stop_training = True
            return
        self._best = min(self._best, smoothed)
        if self._n >= self.num_iter:
            self.model.stop_training = True
        else:
            set_lr(self.model.optimizer, self.lr_at(self._n))

    def on_train_end(self, logs=None):
        if not self.restore:
            return
        opt = self.model.optimizer
        self.model.set_weights(self._saved_weights)
        for var, value in zip(opt.variables, self._saved_opt_vars):
            var.assign(value)
        set_lr(opt, self._saved_lr)

    # -- results
    # --------------------------------------------------------------------------------------------------
    def suggestion(self, skip_start: int = 3) -> Optional[float]:
        """The largest LR at which the loss still falls clearly, or ``None`` when too few points were
        recorded.

        Rule: on the smoothed loss up to its minimum, take the LR where the loss falls fastest per decade of
        LR (steepest negative slope against log10 LR, measured over a decade centred on each point), but no
        more than a tenth of the LR at the minimum. The minimum sits at the edge of divergence; a tenth of it
        (fastai's rule) keeps a safety margin, and the steepest-slope point (Smith's "loss falls fastest")
        guards against a minimum that was only reached by luck on a long flat curve. The first ``skip_start``
        points are skipped (the bias-corrected average is still noisy there) both for the minimum and the
        slope."""
        return suggest_lr(self.lrs, self.losses, skip_start=skip_start)

    def plot(self, path: str, title: Optional[str] = None) -> str:
        """Save smoothed loss vs LR (log x axis, the suggestion marked) as a PNG at ``path``."""
        return plot_lr_range(path, self.lrs, self.losses, self.suggestion(), title=title)


def suggest_lr(lrs: Sequence[float], losses: Sequence[float], skip_start: int = 3) -> Optional[float]:
    """``LRRangeTest.suggestion``'s rule on recorded (lr, smoothed loss) pairs."""
    lrs, losses = np.asarray(lrs, dtype=np.float64), np.asarray(losses, dtype=np.float64)
    finite = np.isfinite(losses)
    if finite.sum() < 2:
        return None
    lrs, losses = lrs[finite], losses[finite]
    lo = min(skip_start, len(losses) - 1)
    i_min = lo + int(np.argmin(losses[lo:]))  # the first points are one or two batches' losses: too noisy
    lr_min_tenth = lrs[i_min] / 10.0
    seg_lr, seg_loss = lrs[lo:i_min + 1], losses[lo:i_min + 1]
    if len(seg_lr) < 3:  # the loss never fell: nothing better than a tenth of the (early) minimum
        return float(lr_min_tenth)
    # Slope over about a decade of LR around each point (a local slope chases batch noise on short sweeps).
    log_lr = np.log10(seg_lr)
    per_decade = (len(lrs) - 1) / max(np.log10(lrs[-1] / lrs[0]), 1e-12)
    w = max(1, int(round(per_decade / 2)))
    idx = np.arange(len(seg_lr))
    left, right = np.maximum(idx - w, 0), np.minimum(idx + w, len(seg_lr) - 1)
    slope = (seg_loss[right] - seg_loss[left]) / (log_lr[right] - log_lr[left])
    steepest = float(seg_lr[int(np.argmin(slope))])
    return float(min(steepest, lr_min_tenth))


def plot_lr_range(path: str, lrs: Sequence[float], losses: Sequence[float],
                  suggestion: Optional[float] = None, title: Optional[str] = None) -> str:
    """Write the LR range test plot to ``path`` (PNG) without touching pyplot's global backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(lrs, losses, color="tab:blue", label="smoothed loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("loss (smoothed)")
    if suggestion is not None:
        ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggestion {suggestion:.2g}")
    finite = [v for v in losses if math.isfinite(v)]
    if finite:  # keep the divergence spike from squashing the interesting part
        lo, hi = min(finite), min(max(finite), 4 * min(finite) + 1e-12) if min(finite) > 0 else max(finite)
        pad = 0.05 * (hi - lo + 1e-12)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_title(title or "LR range test")
    ax.legend(loc="best")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


class LRRangeResult(NamedTuple):
    suggestion: Optional[float]
    lrs: List[float]
    losses: List[float]


def lr_range_test(model: keras.Model, dataset, start_lr: float = 1e-7, end_lr: float = 10.0,
                  num_iter: int = 100, plot_path: Optional[str] = None, smoothing: float = 0.05,
                  diverge_factor: float = 5.0,
                  verbose: int = 0) -> LRRangeResult:
    """Run the LR range test on a compiled ``model`` over ``dataset`` (a ``tf.data.Dataset`` of batches; it is
    repeated, so a short one is fine). The model and optimizer are left as they were; returns the suggestion,
    the LRs and the smoothed losses. ``plot_path``: also save the plot there."""
    if getattr(model, "optimizer", None) is None:
        raise ValueError("lr_range_test needs a compiled model (model.compile(optimizer=..., loss=...))")
    set_lr(model.optimizer, get_lr(model.optimizer))  # fail early on a schedule-based optimizer
    cb = LRRangeTest(start_lr=start_lr, end_lr=end_lr, num_iter=num_iter, smoothing=smoothing,
                     diverge_factor=diverge_factor)
    # One batch per "epoch": Keras logs the epoch's running-mean loss, which then is exactly the batch loss.
    model.fit(dataset.repeat(), epochs=num_iter, steps_per_epoch=1, callbacks=[cb], verbose=verbose,
              shuffle=False)
    if plot_path:
        cb.plot(plot_path)
    return LRRangeResult(cb.suggestion(), list(cb.lrs), list(cb.losses))


# ----------------------------------------------------------------------------------------------------------
# SGDR
# ----------------------------------------------------------------------------------------------------------


class SGDR(keras.callbacks.Callback):
    """Cosine annealing with warm restarts (Loshchilov & Hutter 2016), stepped every batch.

    ``lr = min_lr + (base_lr - min_lr) * m_mul**i * 0.5 * (1 + cos(pi * frac))`` in cycle ``i``, cycles of
    ``first_cycle_epochs * t_mul**i`` epochs (Keras' ``CosineDecayRestarts`` computes it, see
    ``schedules.sgdr_schedule``). The global step of batch ``b`` of epoch ``e`` (Keras' absolute epoch
    index) is ``initial_step + e * steps_per_epoch + b``, so a run resumed with ``fit(initial_epoch=k)`` or by
    ``BackupAndRestore`` continues the schedule by itself; ``initial_step`` is an extra offset, for a schedule
    that spans several ``fit`` calls which each start at epoch 0.

    The LR is set on the optimizer before each batch (a float LR, so the same optimizer can run the LR range
    test first). At the end of every epoch the LR of its last batch is written to ``logs[log_key]`` ("lr"),
    which ``History``, ``CSVLogger`` and ``TensorBoard`` record when they come after this callback in the
    list. ``lrs`` holds the LR set before each batch hook. The step comes from Keras' batch index, so with
    ``compile(steps_per_execution=N)`` the schedule stays on time (the LR then changes every N steps).
    """

    def __init__(self, base_lr: float, steps_per_epoch: int, first_cycle_epochs: float = 1, t_mul: float = 2,
                 m_mul: float = 1, min_lr: float = 1e-5, initial_step: int = 0, log_key: str = "lr"):
        super().__init__()
        self.base_lr, self.steps_per_epoch = float(base_lr), int(steps_per_epoch)
        self.first_cycle_epochs, self.t_mul = first_cycle_epochs, t_mul
        self.m_mul, self.min_lr = m_mul, min_lr
        self.schedule = schedules.sgdr_schedule(base_lr, steps_per_epoch, first_cycle_epochs, t_mul, m_mul,
                                                min_lr)
        self.initial_step = int(initial_step)
        self.step = self.initial_step  # the next global step
        self.log_key = log_key
        self.lrs: List[float] = []
        self._last_lr: Optional[float] = None
        self._epoch_base = self.step

    def lr_at(self, step: int) -> float:
        return float(keras.ops.convert_to_numpy(self.schedule(step)))

    def on_epoch_begin(self, epoch, logs=None):
        # from the epoch index, not a running count: resumption (initial_epoch, BackupAndRestore) stays on
        # time
        self._epoch_base = self.initial_step + epoch * self.steps_per_epoch

    def on_train_batch_begin(self, batch, logs=None):
        # Keras passes the batch index within the epoch (the first step of the execution with
        # steps_per_execution)
        lr = self.lr_at(self._epoch_base + batch)
        set_lr(self.model.optimizer, lr)
        self._last_lr = lr
        self.lrs.append(lr)

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_base + batch + 1  # `batch` is the execution's last step index

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.log_key] = self._last_lr if self._last_lr is not None else get_lr(self.model.optimizer)


# ----------------------------------------------------------------------------------------------------------
# Kill-safe checkpoints
# ----------------------------------------------------------------------------------------------------------


def backed_up_epochs(backup_dir) -> int:
    """Epochs a phase's backup (``AtomicBackupAndRestore``) holds as done: where ``BackupAndRestore`` resumes
    (Keras reads ``training_metadata.json`` when ``latest.weights.h5`` is there); 0 without a backup."""
    meta = os.path.join(backup_dir, "training_metadata.json")
    if not (os.path.exists(meta) and os.path.exists(os.path.join(backup_dir, "latest.weights.h5"))):
        return 0
    with open(meta) as f:
        return int(json.load(f).get("epoch", 0))


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` whose backup is written to temporary names and renamed into place.

    Keras writes ``latest.weights.h5`` in place: a SIGKILL during the write leaves a truncated file and the
    rerun stops with an h5py ``OSError`` (found by tests/evaluation/test_resume.py). Here the weights, then the
    epoch record, are renamed over the previous backup, so the backup is always a complete earlier state."""

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        partial_weights = os.path.join(self.backup_dir, "partial.weights.h5")
        partial_meta = self._training_metadata_path + ".partial"
        self.model.save_weights(partial_weights, overwrite=True)
        with open(partial_meta, "w") as f:
            f.write(json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))
        faults.point("backup_write")
        os.replace(partial_weights, self._weights_path)
        os.replace(partial_meta, self._training_metadata_path)
        faults.point("epoch_end")


class AtomicModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """``keras.callbacks.ModelCheckpoint`` (fixed file path) that writes to a temporary file and renames it, so a
    kill mid-write never leaves a truncated "best" checkpoint (Keras writes in place)."""

    def _save_model(self, epoch, batch, logs):
        final = self.filepath
        base, name = os.path.split(final)
        partial = os.path.join(base, "partial." + name)
        # A partial left by a killed process is not this epoch's save: only a file written now may replace the best.
        if os.path.exists(partial):
            os.remove(partial)
        self.filepath = partial
        try:
            super()._save_model(epoch, batch, logs)
        finally:
            self.filepath = final
        if os.path.exists(partial):
            faults.point("checkpoint_write")
            os.replace(partial, final)
