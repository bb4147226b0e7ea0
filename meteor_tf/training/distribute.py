"""tf.distribute strategies, mixed precision, multi-worker training.

Keras 3 ``fit()`` under ``MultiWorkerMirroredStrategy`` is broken upstream (keras-team/keras#20585,
tensorflow#72388) in two places: the symbolic build hands a PerReplica batch to ``strategy.reduce``, and
scalar metric averaging reduces on ``axis=0``. ``patch_keras_fit_for_multi_worker`` mends exactly those two
places (``make_strategy("multi_worker")`` applies it), so ``fit``/``evaluate``/``predict`` and the runner work
across workers; ``fit_custom_loop`` trains with ``strategy.run`` directly for code that wants no patch.

Requires the TensorFlow backend.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Callable, Dict, List, NamedTuple, Optional

import keras
import tensorflow as tf

from meteor_tf.config import STRATEGIES

logger = logging.getLogger(__name__)

_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def make_strategy(name: str = "auto", tpu: Optional[str] = None) -> tf.distribute.Strategy:
    """Build a ``tf.distribute`` strategy by name.

    - ``"auto"``: ``MirroredStrategy`` over all GPUs when there are any, else the default strategy.
    - ``"cpu"``: ``OneDeviceStrategy`` on ``/cpu:0`` (even when GPUs exist).
    - ``"mirrored"``: ``MirroredStrategy`` over all GPUs, or over all logical CPU devices when there is no GPU
      (one CPU replica normally; several after ``tf.config.set_logical_device_configuration``).
    - ``"multi_worker"``: ``MultiWorkerMirroredStrategy``; the cluster comes from the ``TF_CONFIG``
    environment
      variable (without it: a single worker). Keras ``fit`` works after the patch this applies.
    - ``"tpu"``: ``TPUStrategy`` via ``TPUClusterResolver(tpu)`` (``tpu``: name or grpc address; None = the
      environment's); raises ``RuntimeError`` when no TPU can be reached.
    """
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if gpus else tf.distribute.get_strategy()
    if name == "cpu":
        return tf.distribute.OneDeviceStrategy("/cpu:0")
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multi_worker":
        patch_keras_fit_for_multi_worker()
        if "TF_CONFIG" not in os.environ:
            logger.warning("strategy 'multi_worker' without TF_CONFIG: training on this machine only")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            raise RuntimeError(f"--strategy=tpu: no TPU found ({type(e).__name__}: {e}). Run on a TPU VM, or "
                               "pass "
                               "the TPU's name/address, or pick another --strategy (auto, cpu, mirrored, "
                               "multi_worker).") from e
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"strategy {name!r} is not one of {', '.join(STRATEGIES)}")


def patch_keras_fit_for_multi_worker() -> None:
    """Make Keras 3 ``fit``/``evaluate``/``predict`` work under MultiWorkerMirroredStrategy (idempotent).

    A minimal workaround of keras-team/keras#20585 in Keras's TF trainer, nothing else changed:
    (1) the symbolic build takes one replica's batch for its shapes instead of ``strategy.reduce("MEAN")``
    of a PerReplica batch (which cannot be converted to a tensor); (2) scalar logs (loss, metric results)
    are averaged over workers with ``axis=None`` instead of ``axis=0`` (a scalar has no axis 0).
    Tested by tests/training/test_multi_worker.py (two worker processes run the whole runner).
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    if getattr(tf_trainer, "_meteor_tf_multi_worker_patch", False):
        return
    original_reduce = tf_trainer.reduce_per_replica
    original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build

    def _multi_worker(strategy):
        return strategy is not None and tf_trainer._collective_all_reduce_multi_worker(strategy)

    def _first_replica(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def reduce_per_replica(values, strategy, reduction):
        if not (_multi_worker(strategy) and reduction in ("auto", "mean")):
            return original_reduce(values, strategy, reduction)

        def _one(value):
            if getattr(_first_replica(strategy, value), "shape", None) == ():
                return strategy.reduce("MEAN", value, axis=None)
            return original_reduce(value, strategy, reduction)

        return tf.nest.map_structure(_one, values)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is not None and _multi_worker(self._distribute_strategy):
            for _, _, it in iterator:  # the batch Keras itself would peek at, as one replica's tensors
                data_batch = tf.nest.map_structure(
                    lambda v: _first_replica(self._distribute_strategy, v), next(it))
                break
            iterator = None
        return original_build(self, iterator=iterator, data_batch=data_batch)

    tf_trainer.reduce_per_replica = reduce_per_replica
    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
    tf_trainer._meteor_tf_multi_worker_patch = True


def scaled_batch_size(per_replica: int, strategy: Optional[tf.distribute.Strategy] = None) -> int:
    """Global batch size: ``per_replica`` times the strategy's replicas (all workers' devices)."""
    strategy = strategy or tf.distribute.get_strategy()
    return int(per_replica) * int(strategy.num_replicas_in_sync)


# Where --mixed_precision=auto trains in bfloat16 on a CPU: the instructions that run bf16 matrix products natively.
# Measured faster on both (README "Performance": AVX512_BF16 1.15x training / 1.26x inference at 64 px; AMX about
# 2x in pretraining) with the quickstart's metrics unchanged; without them bf16 is emulated and several times slower.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPU_FLAGS_ENV = "METEOR_TF_CPU_FLAGS"  # overrides /proc/cpuinfo's flags (space-separated): tests, "what if" runs


def cpu_flags() -> frozenset:
    """The CPU's feature flags, as Linux's /proc/cpuinfo lists them (empty where it cannot be read), or those of
    $METEOR_TF_CPU_FLAGS when set (even to nothing)."""
    if CPU_FLAGS_ENV in os.environ:
        return frozenset(os.environ[CPU_FLAGS_ENV].split())
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_bf16_path(flags=None) -> Optional[str]:
    """The CPU's native bf16 path ("amx_bf16" or "avx512_bf16"), or None."""
    flags = cpu_flags() if flags is None else flags
    return next((flag for flag in CPU_BF16_FLAGS if flag in flags), None)


def auto_mixed_precision(gpus: Optional[List] = None, flags=None) -> str:
    """The default precision for the devices present (``--mixed_precision=auto``).

    CPU: bfloat16 where the CPU multiplies bf16 natively (`cpu_bf16_path`: AMX or AVX512_BF16), float32 ("none")
    elsewhere. Measured (README "Performance", benchmarks/precision_compile.py): on AVX512_BF16 without AMX
    mixed_bfloat16 trains 1.15x and infers 1.26x faster at 64 px, the quickstart's metrics within its fold spread; on
    AVX2 alone it trains several times slower (bf16 emulated), so nothing changes there. GPU: mixed_bfloat16 on
    compute capability >= 8.0 (Ampere, Hopper; no loss scaling needed), mixed_float16 on 7.x (Volta, Turing), float32
    below — Keras's mixed-precision guidance; no GPU with TensorFlow was available to measure it."""
    gpus = tf.config.list_physical_devices("GPU") if gpus is None else gpus
    capabilities = []
    for gpu in gpus:
        try:
            capabilities.append(tuple(tf.config.experimental.get_device_details(gpu).get("compute_capability")
                                      or (0, 0)))
        except (ValueError, TypeError, AttributeError):
            capabilities.append((0, 0))
    if not capabilities:
        return "bfloat16" if cpu_bf16_path(flags) else "none"
    lowest = min(capabilities)
    if lowest >= (8, 0):
        return "bfloat16"
    if lowest >= (7, 0):
        return "float16"
    return "none"


def set_mixed_precision(mode: str = "none") -> str:
    """Set Keras' global dtype policy: ``"none"`` → float32, ``"float16"`` → mixed_float16 (GPUs; ``compile``
    wraps the optimizer in a LossScaleOptimizer), ``"bfloat16"`` → mixed_bfloat16 (TPUs, recent GPUs/CPUs),
    ``"auto"`` → ``auto_mixed_precision()`` for the devices present. Call it before building the model.
    Returns the policy name."""
    if mode == "auto":
        mode = auto_mixed_precision()
    if mode not in _POLICIES:
        raise ValueError(f"mixed precision {mode!r} is not one of auto, {', '.join(_POLICIES)}")
    keras.mixed_precision.set_global_policy(_POLICIES[mode])
    return _POLICIES[mode]


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """True on the worker that should write outputs: task 0 of a multi-worker cluster (or the only
    process)."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0 and
                                            "chief" not in resolver.cluster_spec().as_dict())


def worker_save_path(path: str, strategy: Optional[tf.distribute.Strategy] = None) -> str:
    """Where this worker saves: ``path`` on the chief, a per-worker temporary twin elsewhere (TF's
    multi-worker guide: every worker saves, non-chiefs to a temporary place that is then deleted)."""
    if is_chief(strategy):
        return path
    resolver = strategy.cluster_resolver
    base, name = os.path.split(path)
    return os.path.join(base or ".", f"workertemp_{resolver.task_type}_{resolver.task_id}", name)


class CustomLoopResult(NamedTuple):
    model: keras.Model
    history: Dict[str, List[float]]  # "loss", "accuracy", "lr" (+ "val_loss", "val_accuracy") per epoch
    optimizer: keras.optimizers.Optimizer


def fit_custom_loop(build_model_fn: Callable[[], keras.Model],
                    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
                    epochs: int, strategy: Optional[tf.distribute.Strategy] = None,
                    steps_per_epoch: Optional[int] = None,
                    lr_fn: Optional[Callable[[int], float]] = None,
                    optimizer_fn: Optional[Callable[[], keras.optimizers.Optimizer]] = None,
                    val_dataset_fn: Optional[Callable[[tf.distribute.InputContext], tf.data.Dataset]] = None,
                    validation_steps: Optional[int] = None, initial_epoch: int = 0,
                    epoch_end_fn: Optional[Callable[[int, dict], None]] = None,
                    verbose: int = 0) -> CustomLoopResult:
    """Train a Keras classifier (softmax outputs, sparse integer labels) with a custom loop under
    ``strategy``.

    - ``build_model_fn()`` builds the model; it and the optimizer are created inside ``strategy.scope()``.
    - ``dataset_fn(input_context)`` returns this input pipeline's dataset of ``(x, y)`` batches of the
      *per-replica* size (``input_context.get_per_replica_batch_size(global_batch)``), sharded with
      ``ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)`` when the workers read
      the same source; it goes to ``strategy.distribute_datasets_from_function``. With ``steps_per_epoch`` the
      dataset should repeat (the iterator carries over epochs; multi-worker training needs equal step counts
      on every worker, so give ``steps_per_epoch`` there); without it each epoch is one pass.
    - LR: ``lr_fn(global_step)`` (e.g. ``functools.partial(schedules.sgdr_lr, base_lr=...,
    steps_per_epoch=...)``)
      is assigned to the optimizer's float LR before every step; ``optimizer_fn()`` builds the optimizer
      (default ``Adam(lr_fn(0))`` or ``Adam(1e-3)``). Under the mixed_float16 policy it is wrapped in a
      ``LossScaleOptimizer``.
    - The loss is the per-example sparse categorical cross-entropy averaged over the *global* batch
      (``tf.nn.compute_average_loss``) plus the model's regularisation losses scaled per replica, so summing
      the replicas' gradients gives the global-batch gradient.
    - ``epoch_end_fn(epoch, logs)`` runs after each epoch (checkpoints, logging).

    Returns ``CustomLoopResult(model, history, optimizer)``; ``model`` is an ordinary Keras model (evaluate,
    predict, save or export it afterwards, under the same strategy scope for multi-device evaluation).
    """
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        model = build_model_fn()
        if optimizer_fn is not None:
            optimizer = optimizer_fn()
        else:
            optimizer = keras.optimizers.Adam(learning_rate=float(lr_fn(0)) if lr_fn else 1e-3)
        if (keras.mixed_precision.global_policy().name == "mixed_float16"
                and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        # Create the slot variables now, in the scope: creating them inside strategy.run fails.
        optimizer.build(model.trainable_variables)
        loss_obj = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    scales_loss = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    train_dist = strategy.distribute_datasets_from_function(dataset_fn)
    val_dist = strategy.distribute_datasets_from_function(val_dataset_fn) if val_dataset_fn else None

    def _stats(y, probs, per_example):
        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        pred = tf.argmax(tf.cast(probs, tf.float32), axis=-1)
        correct = tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32))
        return tf.reduce_sum(tf.cast(per_example, tf.float32)), correct, tf.cast(tf.size(y), tf.float32)

    def train_replica(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_example = loss_obj(y, probs)
            loss = tf.nn.compute_average_loss(per_example)  # / global batch (this batch × replicas)
            if model.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss) if scales_loss else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return _stats(y, probs, per_example)

    def eval_replica(x, y):
        probs = model(x, training=False)
        return _stats(y, probs, loss_obj(y, probs))

    def _reduced(per_replica):
        return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in per_replica]

    @tf.function
    def train_step(batch):
        return _reduced(strategy.run(train_replica, args=batch))

    @tf.function
    def eval_step(batch):
        return _reduced(strategy.run(eval_replica, args=batch))

    def _batches(dist, iterator, steps):
        if steps is None:
            yield from dist
        else:
            for _ in range(steps):
                yield next(iterator)

    history: Dict[str, List[float]] = {"loss": [], "accuracy": [], "lr": []}
    train_iter = iter(train_dist) if steps_per_epoch is not None else None
    step = initial_epoch * (steps_per_epoch or 0)
    for epoch in range(initial_epoch, epochs):
        t0 = time.time()
        totals = [0.0, 0.0, 0.0]
        lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        for batch in _batches(train_dist, train_iter, steps_per_epoch):
            if lr_fn is not None:
                lr = float(lr_fn(step))
                optimizer.learning_rate = lr  # variable assign: the traced step reads the new value
            totals = [t + float(v) for t, v in zip(totals, train_step(batch))]
            step += 1
        n = max(totals[2], 1.0)
        logs = {"loss": totals[0] / n, "accuracy": totals[1] / n, "lr": lr}
        if val_dist is not None:
            vt = [0.0, 0.0, 0.0]
            for batch in _batches(val_dist, iter(val_dist), validation_steps):
                vt = [t + float(v) for t, v in zip(vt, eval_step(batch))]
            logs["val_loss"], logs["val_accuracy"] = vt[0] / max(vt[2], 1.0), vt[1] / max(vt[2], 1.0)
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        if verbose:
            logger.info("epoch %d/%d %.1fs %s", epoch + 1, epochs, time.time() - t0, json.dumps(logs))
        if epoch_end_fn is not None:
            epoch_end_fn(epoch, logs)
    return CustomLoopResult(model, history, optimizer)
