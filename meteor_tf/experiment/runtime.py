"""A run's runtime: the tf.distribute strategy and precision policy of --strategy / --mixed_precision, and the
global batch (per-replica batch × replicas). The runner and the tuner make it the same way, once per process."""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from meteor_tf.config import ExperimentConfig

log = logging.getLogger("meteor_tf")

# the provenance key that records the precision a run resolved --mixed_precision to ("none", "bfloat16", "float16")
PRECISION_KEY = "mixed_precision"


@dataclasses.dataclass(frozen=True)
class Runtime:
    strategy: object  # tf.distribute.Strategy
    batch_size: int  # global batch
    precision: str = "none"  # what --mixed_precision resolved to: "none" (float32), "bfloat16" or "float16"


def resolve_precision(mode: str, started: Optional[dict] = None) -> str:
    """--mixed_precision as this process applies it. "auto" resumes a run in the precision it started with
    (`started`: the run's provenance.json, None for a new run); a run that an older meteor_tf started without
    recording it ran in float32 on a CPU (its "auto" did not look at the CPU's bf16 instructions). A new run asks
    `distribute.auto_mixed_precision` (bf16 where the CPU or GPU runs it natively)."""
    from meteor_tf.training import distribute

    if mode != "auto":
        recorded = (started or {}).get(PRECISION_KEY)
        if recorded is not None and recorded != mode:
            log.warning("--mixed_precision=%s, but this run started in %s: the folds trained now may differ from an "
                        "uninterrupted run", mode, recorded)
        return mode
    if started is None:
        return distribute.auto_mixed_precision()
    if PRECISION_KEY in started:
        log.info("--mixed_precision=auto: resuming in %s, the precision this run started with", started[PRECISION_KEY])
        return started[PRECISION_KEY]
    return distribute.auto_mixed_precision(flags=frozenset())


def make_runtime(config: ExperimentConfig, started: Optional[dict] = None) -> Runtime:
    """Call before any other TensorFlow work: MultiWorkerMirroredStrategy must exist first. Reads the `runtime`
    part and the per-replica batch of the `train` part; `started` is the provenance of the run being resumed."""
    from meteor_tf.training import distribute

    runtime = config.runtime
    precision = resolve_precision(runtime.mixed_precision, started)
    distribute.set_mixed_precision(precision)
    strategy = distribute.make_strategy(runtime.strategy)
    return Runtime(strategy, distribute.scaled_batch_size(config.train.batch_size, strategy), precision)


def keras_policy_name() -> str:
    import keras

    return keras.mixed_precision.global_policy().name
