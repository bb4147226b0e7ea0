"""Run by test_distribute.py in a fresh process: split the CPU into 2 logical devices (only possible before TF
initialises its devices), then train a toy model under MirroredStrategy with Keras fit (via train_phase, so
SGDR and the LR range test run on mirrored variables) and with fit_custom_loop. Prints one JSON line."""

import functools
import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from meteor_tf.training import distribute, phases, schedules  # noqa: E402

PER_REPLICA = 8


def data(n=128, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] - x[:, 3] > 0).astype("int32")
    return x, y


def build():
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                             keras.layers.Dense(2, activation="softmax")])


def main():
    strategy = distribute.make_strategy("mirrored")
    out = {"replicas": strategy.num_replicas_in_sync,
           "global_batch": distribute.scaled_batch_size(PER_REPLICA, strategy)}
    x, y = data()
    gb = out["global_batch"]

    # Keras fit under MirroredStrategy
    with strategy.scope():
        model = phases.compile_for_phase(build(), 0.02)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(gb)
    hist, lr_used = phases.train_phase(model, ds, None, epochs=3, lr=0.02, lr_find=True)
    out["fit_loss"] = hist.history["loss"]
    out["fit_lr"] = hist.history["lr"]
    out["fit_lr_used"] = lr_used
    # the same LR range test on one device: synchronous replicas see the same losses, so the same suggestion
    from meteor_tf.training.callbacks import lr_range_test

    one_device = phases.compile_for_phase(build(), 0.02)
    out["single_lr_suggestion"] = float(lr_range_test(one_device, ds, verbose=0).suggestion)
    out["fit_steps_per_epoch"] = int(ds.cardinality())

    # custom loop under the same strategy
    spe = len(x) // gb

    def dataset_fn(ctx):
        bs = ctx.get_per_replica_batch_size(gb)
        d = tf.data.Dataset.from_tensor_slices((x, y)).shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
        return d.repeat().batch(bs)

    def val_fn(ctx):
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(ctx.get_per_replica_batch_size(gb))

    lr_fn = functools.partial(schedules.sgdr_lr, base_lr=0.02, steps_per_epoch=spe, min_lr=1e-4)
    res = distribute.fit_custom_loop(build, dataset_fn, epochs=3, strategy=strategy, steps_per_epoch=spe,
                                     lr_fn=lr_fn, val_dataset_fn=val_fn)
    out["loop_history"] = res.history
    out["loop_expected_lr"] = [lr_fn(e * spe + spe - 1) for e in range(3)]
    # Same run on one device with the same global batch: summing the replicas' gradients of the loss averaged
    # over the global batch must give the single-device update.
    single = distribute.fit_custom_loop(build, dataset_fn, epochs=3, strategy=tf.distribute.OneDeviceStrategy(
        "/cpu:0"), steps_per_epoch=spe, lr_fn=lr_fn)
    out["loop_vs_single_device_max_diff"] = max(
        float(np.max(np.abs(a - b))) for a, b in zip(res.model.get_weights(), single.model.get_weights()))
    out["single_loss"] = single.history["loss"]
    # the returned model is a normal Keras model: evaluate it (no compile needed for predict)
    probs = res.model.predict(x, verbose=0)
    out["loop_eval_accuracy"] = float(np.mean(probs.argmax(-1) == y))
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
