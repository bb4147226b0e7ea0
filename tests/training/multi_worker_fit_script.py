"""One worker of test_multi_worker.py's Keras fit()/evaluate()/predict() check under MultiWorkerMirroredStrategy.

Usage: multi_worker_fit_script.py OUT_DIR patched|unpatched. "patched" creates the strategy through
distribute.make_strategy (which applies patch_keras_fit_for_multi_worker); "unpatched" creates it directly, to show
the upstream bug is still there. Writes OUT_DIR/worker_K.json (or the error it met).
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from meteor_tf.training import distribute


def main(out_dir, mode):
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = (distribute.make_strategy("multi_worker") if mode == "patched"
                else tf.distribute.MultiWorkerMirroredStrategy())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 6)).astype("float32")  # 100 = 6 batches of 16 + 4: a ragged last batch
    y = (x[:, 0] - x[:, 3] > 0).astype("int32")
    with strategy.scope():
        keras.utils.set_random_seed(index)  # different seeds on purpose: the strategy syncs initial values
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    result = {"index": index}
    try:
        history = model.fit(ds, epochs=3, validation_data=ds, verbose=0)
        result["loss"] = history.history["loss"]
        result["val_accuracy"] = history.history["val_accuracy"]
        result["evaluate"] = model.evaluate(ds, verbose=0, return_dict=True)
        probs = model.predict(tf.data.Dataset.from_tensor_slices(x).batch(16), verbose=0)
        direct = keras.ops.convert_to_numpy(model(x, training=False))
        result["predict_rows"] = int(probs.shape[0])
        result["predict_vs_direct"] = float(np.abs(probs - direct).max())  # order and values kept
        result["weights_sum"] = float(sum(np.sum(w) for w in model.get_weights()))
    except Exception as e:  # the unpatched run is expected to fail: record how
        result["error"] = f"{type(e).__name__}: {e}"[:500]
    with open(os.path.join(out_dir, f"worker_{index}.json"), "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
