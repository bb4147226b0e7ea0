"""SGDR (Loshchilov & Hutter 2016) learning-rate arithmetic: cycle lengths and the per-step LR.

The LR within cycle ``i`` (0-based) at fraction ``frac`` of the cycle is

    lr = min_lr + (base_lr - min_lr) * m_mul**i * 0.5 * (1 + cos(pi * frac))

Cycle ``i`` lasts ``first_cycle_epochs * t_mul**i`` epochs, so with ``t_mul=2`` restarts happen after 1, 3, 7,
15 ... epochs. ``keras.optimizers.schedules.CosineDecayRestarts`` computes exactly this when
``alpha = min_lr / base_lr``: its ``init*((1-alpha)*m^i*c + alpha)`` equals ``min_lr +
(base_lr-min_lr)*m^i*c``
(``sgdr_schedule`` builds it; the ``SGDR`` callback uses it). ``sgdr_lr`` is the same formula in plain Python,
for a custom training loop (no TF op per step) and for tests, which check the two agree.
"""

from __future__ import annotations

import math
from typing import List, Union

import keras

Number = Union[int, float]


def _whole(x: float) -> Number:
    """Return an int when x is (numerically) whole, so [1, 2, 4] prints as epochs, not floats."""
    r = round(x)
    return int(r) if abs(x - r) < 1e-9 else float(x)


def sgdr_cycle_epochs(n_cycles: int, first: float = 1, t_mul: float = 2) -> List[Number]:
    """Length in epochs of each of the first ``n_cycles`` SGDR cycles: ``sgdr_cycle_epochs(3) == [1, 2,
    4]``."""
    if n_cycles < 0:
        raise ValueError(f"n_cycles must be >= 0, got {n_cycles}")
    return [_whole(first * t_mul**i) for i in range(n_cycles)]


def whole_cycle_epochs(n_cycles: int, first: float = 1, t_mul: float = 2) -> int:
    """Epochs that ``n_cycles`` whole SGDR cycles take (``whole_cycle_epochs(3) == 1 + 2 + 4 == 7``), rounded
    up to a whole epoch when ``first`` is fractional. Use it as a phase's default epoch count so a phase ends
    at the bottom of a cycle instead of mid-restart."""
    return int(math.ceil(sum(first * t_mul**i for i in range(n_cycles)) - 1e-9))


# The name ARCHITECTURE.md uses.
sgdr_epochs = whole_cycle_epochs


def cycles_in_epochs(epochs: float, first: float = 1, t_mul: float = 2) -> int:
    """How many whole SGDR cycles fit in ``epochs`` (e.g. 7 epochs → 3 cycles with the defaults)."""
    n, total = 0, 0.0
    while total + first * t_mul**n <= epochs + 1e-9:
        total += first * t_mul**n
        n += 1
        if t_mul <= 0 or n > 10_000:
            break
    return n


def _check(base_lr, steps_per_epoch, first_cycle_epochs, t_mul, m_mul, min_lr):
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch must be > 0, got {steps_per_epoch}")
    if first_cycle_epochs <= 0:
        raise ValueError(f"first_cycle_epochs must be > 0, got {first_cycle_epochs}")
    if t_mul <= 0 or m_mul < 0:
        raise ValueError(f"t_mul must be > 0 and m_mul >= 0, got t_mul={t_mul}, m_mul={m_mul}")
    if base_lr <= 0 or min_lr < 0:
        raise ValueError(f"base_lr must be > 0 and min_lr >= 0, got base_lr={base_lr}, min_lr={min_lr}")


def _floor(base_lr: float, min_lr: float) -> float:
    # A floor above the peak (e.g. an LR-test suggestion below 1e-5) would make the "annealing" climb: cap it
    # at
    # base_lr, which gives a constant LR.
    return min(min_lr, base_lr)


def sgdr_schedule(base_lr: float, steps_per_epoch: int, first_cycle_epochs: float = 1, t_mul: float = 2,
                  m_mul: float = 1, min_lr: float = 1e-5) -> keras.optimizers.schedules.CosineDecayRestarts:
    """The SGDR schedule over optimizer steps as a Keras ``CosineDecayRestarts`` (absolute floor
    ``min_lr``)."""
    _check(base_lr, steps_per_epoch, first_cycle_epochs, t_mul, m_mul, min_lr)
    return keras.optimizers.schedules.CosineDecayRestarts(
        initial_learning_rate=float(base_lr),
        first_decay_steps=float(first_cycle_epochs) * steps_per_epoch,
        t_mul=float(t_mul),
        m_mul=float(m_mul),
        alpha=_floor(base_lr, min_lr) / float(base_lr),  # makes Keras' relative floor the absolute min_lr
    )


def sgdr_lr(step: int, base_lr: float, steps_per_epoch: int, first_cycle_epochs: float = 1, t_mul: float = 2,
            m_mul: float = 1, min_lr: float = 1e-5) -> float:
    """LR for global optimizer step ``step`` (0-based), as a Python float: the same values as
    ``sgdr_schedule``."""
    _check(base_lr, steps_per_epoch, first_cycle_epochs, t_mul, m_mul, min_lr)
    floor = _floor(base_lr, min_lr)
    cycle_len = float(first_cycle_epochs) * steps_per_epoch
    pos = float(step) / cycle_len  # position in units of the first cycle's length
    if t_mul == 1:
        i = math.floor(pos)
        frac = pos - i
    else:
        # Cycles end at cumulative lengths (t_mul**(i+1) - 1) / (t_mul - 1); invert that, then fix float
        # round-off
        # at the restart points so a restart step is exactly the start of its cycle.
        i = math.floor(math.log(1.0 - pos * (1.0 - t_mul)) / math.log(t_mul))
        start = lambda k: (1.0 - t_mul**k) / (1.0 - t_mul)  # noqa: E731 - cumulative length before cycle k
        while i > 0 and pos < start(i) - 1e-12:
            i -= 1
        while pos >= start(i + 1) - 1e-12:
            i += 1
        frac = (pos - start(i)) / t_mul**i
    frac = min(max(frac, 0.0), 1.0)
    return floor + (base_lr - floor) * m_mul**i * 0.5 * (1.0 + math.cos(math.pi * frac))
