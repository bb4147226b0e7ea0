"""One training phase (head or fine-tuning): compile with Adam/AdamW, optional LR range test, SGDR, ``fit``.

Freezing (which layers train in a phase) is ``meteor_tf.models.freeze.set_phase``'s job; call it, then
``compile_for_phase`` (Keras snapshots ``trainable`` at compile time), then ``train_phase``.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Optional, Sequence, Tuple

import keras

from meteor_tf.evaluation.keras_metrics import MeteorAUC
from meteor_tf.training.callbacks import SGDR, get_lr, lr_range_test, set_lr


PHASE_SEED_OFFSETS = {"head": 1, "fine_tune": 2}


def seed_phase(model: keras.Model, seed: int, phase: str) -> int:
    """Make a phase's random state a function of (seed, phase) alone: Keras's global seed, and the state of every
    ``SeedGenerator`` in ``model`` (dropout masks). Without it a phase's dropout depends on what ran before in the
    process, so a fold trained after a resume differed from the same fold in an uninterrupted run. Returns the
    phase's seed."""
    import numpy as np

    phase_seed = int(seed) * 10 + PHASE_SEED_OFFSETS[phase]
    keras.utils.set_random_seed(phase_seed)
    for i, state in enumerate(_seed_generator_states(model)):
        state.assign(np.array([phase_seed * 1009 + i, 0], dtype=keras.backend.standardize_dtype(state.dtype)))
    return phase_seed


def advance_seed_generators(model: keras.Model, steps: int) -> None:
    """Move every ``SeedGenerator`` in ``model`` on by ``steps`` draws, as ``steps`` training steps would (each
    Dropout draws once a step). A phase resumed after k epochs calls it with k × steps per epoch: the generators'
    state is not in the weights a backup restores, so the resumed epochs would otherwise reuse the first epochs'
    dropout masks."""
    import numpy as np

    for state in _seed_generator_states(model):
        state.assign(state + np.array([0, int(steps)], dtype=keras.backend.standardize_dtype(state.dtype)))


def _seed_generator_states(model: keras.Model) -> list:
    """The state variable of every ``SeedGenerator`` in ``model`` (dropout masks), in a fixed order."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def make_optimizer(lr: float, weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """Adam with a float LR (so SGDR and the LR range test can set it), or AdamW (decoupled weight decay, what
    the paper's authors used) when ``weight_decay > 0``."""
    if weight_decay > 0:
        return keras.optimizers.AdamW(learning_rate=float(lr), weight_decay=float(weight_decay))
    return keras.optimizers.Adam(learning_rate=float(lr))


def compile_for_phase(model: keras.Model, lr: float, weight_decay: float = 0.0,
                      jit_compile: Optional[bool] = False,
                      metrics: Optional[Sequence] = None, meteor_auc: bool = False) -> keras.Model:
    """Compile ``model`` (softmax outputs, sparse integer labels) for a phase: a fresh Adam/AdamW with float
    LR ``lr``, sparse categorical cross-entropy, ``metrics`` (default ``["accuracy"]``) plus the meteor-class
    AUC when ``meteor_auc``; ``jit_compile=None`` is Keras's "auto" (XLA on GPUs only). Under a distribution strategy call it inside ``strategy.scope()``. Returns the
    model."""
    metrics = list(metrics) if metrics is not None else ["accuracy"]
    if meteor_auc:
        metrics.append(MeteorAUC())
    model.compile(optimizer=make_optimizer(lr, weight_decay),
                  loss=keras.losses.SparseCategoricalCrossentropy(), metrics=metrics,
                  jit_compile="auto" if jit_compile is None else jit_compile)
    return model


def _steps_of(dataset) -> int:
    n = int(dataset.cardinality())
    if n <= 0:  # tf.data.INFINITE_CARDINALITY (-1) or UNKNOWN_CARDINALITY (-2)
        raise ValueError("steps_per_epoch is needed: the training dataset's length is infinite or unknown")
    return n


def _strategy_scope(model):
    strategy = getattr(model, "distribute_strategy", None)  # TF backend: the strategy the model was built in
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def train_phase(model: keras.Model, train_ds, val_ds, epochs: int, lr: float,
                steps_per_epoch: Optional[int] = None, callbacks: Iterable[keras.callbacks.Callback] = (),
                initial_epoch: int = 0,
                first_cycle_epochs: float = 1, t_mul: float = 2, m_mul: float = 1, min_lr: float = 1e-5,
                lr_find: bool = False, lr_find_plot: Optional[str] = None,
                lr_find_kwargs: Optional[dict] = None, validation_steps: Optional[int] = None,
                compile: bool = True, weight_decay: float = 0.0, jit_compile: Optional[bool] = False,
                metrics: Optional[Sequence] = None, meteor_auc: bool = False,
                verbose: int = 0) -> Tuple[keras.callbacks.History, float]:
    """Train ``model`` for one phase with SGDR; returns ``(history, lr_used)``.

    ``compile=True`` (default) first compiles it with ``compile_for_phase(model, lr, weight_decay,
    jit_compile,
    metrics, meteor_auc)``: a fresh Adam/AdamW per phase, inside the model's distribution strategy scope (so
    call ``freeze.set_phase`` before). ``compile=False`` keeps the model's own compiled optimizer (its LR must
    be a float).

    ``epochs`` is the phase's total length (Keras' meaning: train epochs ``initial_epoch .. epochs-1``; pass
    ``initial_epoch`` to resume, and SGDR continues at step ``initial_epoch * steps_per_epoch``, as it does
    when a ``BackupAndRestore`` in ``callbacks`` resumes; the LR test is skipped when ``initial_epoch > 0``).
    Use
    ``schedules.whole_cycle_epochs`` so a phase ends at a cycle's end. ``lr`` is SGDR's peak LR; with
    ``lr_find`` the LR range test runs on ``train_ds`` first (leaving the model untouched, plot at
    ``lr_find_plot``) and its suggestion replaces ``lr`` (``lr`` stays as the fallback if the test gives
    none). ``train_ds`` (a ``tf.data.Dataset`` of batches) is repeated, so each epoch is ``steps_per_epoch``
    batches (default: the dataset's length). Callbacks: SGDR first (so "lr" is in the epoch logs others see),
    TerminateOnNaN, then ``callbacks``. ``history.history["lr"]`` is the LR of each epoch's last batch."""
    if compile:
        with _strategy_scope(model):
            compile_for_phase(model, lr, weight_decay=weight_decay, jit_compile=jit_compile, metrics=metrics,
                              meteor_auc=meteor_auc)
    elif getattr(model, "optimizer", None) is None:
        raise ValueError("train_phase(compile=False) needs a compiled model: call compile_for_phase first")
    if steps_per_epoch is None:
        steps_per_epoch = _steps_of(train_ds)
    lr_used = float(lr)
    if lr_find and initial_epoch == 0:  # a resumed phase keeps the LR it started with (the caller passes it)
        result = lr_range_test(model, train_ds, plot_path=lr_find_plot, verbose=0, **(lr_find_kwargs or {}))
        if result.suggestion is not None:
            lr_used = float(result.suggestion)
    set_lr(model.optimizer, lr_used)
    # SGDR reads the absolute epoch index, so initial_epoch (or BackupAndRestore) resumes the schedule
    sgdr = SGDR(lr_used, steps_per_epoch, first_cycle_epochs=first_cycle_epochs, t_mul=t_mul, m_mul=m_mul,
                min_lr=min_lr)
    all_callbacks = [sgdr, keras.callbacks.TerminateOnNaN(), *callbacks]
    # Keras's BackupAndRestore resumes by setting model._initial_epoch, which fit() then never clears: the next
    # phase trained on the same model (fine-tuning after a resumed head phase) silently skipped its first epochs.
    model._initial_epoch = None
    try:
        history = model.fit(train_ds.repeat(), validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                            callbacks=all_callbacks, verbose=verbose, shuffle=False)
    finally:
        model._initial_epoch = None
    return history, lr_used


__all__ = ["make_optimizer", "compile_for_phase", "train_phase", "get_lr"]
