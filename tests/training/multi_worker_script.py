"""One worker of test_multi_worker.py's two-process MultiWorkerMirroredStrategy cluster (TF_CONFIG given).

Trains a toy classifier with fit_custom_loop on deterministic data (each worker reads its shard), SGDR LR per
step. Every worker saves its final weights (TF's multi-worker guide): the chief to OUT_DIR, the other worker
to a temporary twin, plus a JSON with the per-epoch history. Usage: multi_worker_script.py OUT_DIR [EPOCHS]
"""

import functools
import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from meteor_tf.training import distribute, schedules

PER_REPLICA = 8
N = 128


def main(out_dir, epochs):
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    strategy = distribute.make_strategy("multi_worker")
    gb = distribute.scaled_batch_size(PER_REPLICA, strategy)
    spe = N // gb

    rng = np.random.default_rng(0)  # the same data on every worker; each keeps its shard
    x = rng.normal(size=(N, 6)).astype("float32")
    y = (x[:, 0] - x[:, 3] > 0).astype("int32")

    def dataset_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices((x, y)).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return ds.repeat().batch(ctx.get_per_replica_batch_size(gb))

    def build():
        # Different seeds per worker on purpose: the strategy must broadcast the chief's initial values.
        keras.utils.set_random_seed(100 + task["index"])
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                                 keras.layers.Dense(2, activation="softmax")])

    lr_fn = functools.partial(schedules.sgdr_lr, base_lr=0.02, steps_per_epoch=spe, min_lr=1e-4)
    res = distribute.fit_custom_loop(build, dataset_fn, epochs=epochs, strategy=strategy, steps_per_epoch=spe,
                                     lr_fn=lr_fn)

    weights_path = distribute.worker_save_path(os.path.join(out_dir, "weights.npz"), strategy)
    os.makedirs(os.path.dirname(weights_path), exist_ok=True)
    np.savez(weights_path, *res.model.get_weights())
    result = {"task": task, "chief": distribute.is_chief(strategy), "replicas": strategy.num_replicas_in_sync,
              "global_batch": gb, "steps_per_epoch": spe, "history": res.history, "weights": weights_path}
    result_path = distribute.worker_save_path(os.path.join(out_dir, "result.json"), strategy)
    with open(result_path + ".tmp", "w") as f:  # written whole, then renamed: never a half-written file
        json.dump(result, f)
    os.replace(result_path + ".tmp", result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2))
