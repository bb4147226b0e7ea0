"""A run's runtime: the tf.distribute strategy and precision policy of --strategy / --mixed_precision, and the
global batch (per-replica batch × replicas). The runner and the tuner make it the same way, once per process."""

from __future__ import annotations

import dataclasses

from meteor_tf.config import ExperimentConfig


@dataclasses.dataclass(frozen=True)
class Runtime:
    strategy: object  # tf.distribute.Strategy
    batch_size: int  # global batch


def make_runtime(config: ExperimentConfig) -> Runtime:
    """Call before any other TensorFlow work: MultiWorkerMirroredStrategy must exist first. Reads the `runtime`
    part and the per-replica batch of the `train` part."""
    from meteor_tf.training import distribute

    runtime = config.runtime
    distribute.set_mixed_precision(runtime.mixed_precision)
    strategy = distribute.make_strategy(runtime.strategy)
    return Runtime(strategy, distribute.scaled_batch_size(config.train.batch_size, strategy))


def keras_policy_name() -> str:
    import keras

    return keras.mixed_precision.global_policy().name
