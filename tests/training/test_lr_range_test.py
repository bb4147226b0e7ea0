"""LR range test: leaves no trace, suggests a sensible LR, recovers per-batch losses, plots."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from meteor_tf.training import callbacks


def _linear_regression(scale=3.0, n=256, d=4, seed=0):
    """Full-batch least squares: with plain SGD and MSE the loss diverges above lr = 2 / λmax(2·XᵀX/n)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * scale).astype("float32")
    y = (x @ rng.normal(size=(d, 1)) + 1.0 + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    xa = np.hstack([x, np.ones((n, 1))])
    critical_lr = 2.0 / np.linalg.eigvalsh(2.0 * xa.T @ xa / n).max()
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(n), critical_lr


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_suggestion_below_analytic_divergence_lr(scale):
    ds, critical = _linear_regression(scale)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse")
    res = callbacks.lr_range_test(model, ds)
    # a fast but stable LR: within about a decade below where gradient descent diverges
    assert critical / 30 <= res.suggestion <= critical, (res.suggestion, critical)
    assert len(res.lrs) == len(res.losses) < 100  # stopped early at divergence
    assert res.lrs[0] == pytest.approx(1e-7)
    ratios = np.array(res.lrs[1:]) / np.array(res.lrs[:-1])
    np.testing.assert_allclose(ratios, (10 / 1e-7) ** (1 / 99), rtol=1e-9)  # exponential sweep


def test_suggest_rule_on_a_synthetic_curve():
    lrs = np.logspace(-7, 1, 100)
    # flat, falls around 1e-3 (steepest there), minimum near 1e-1, then climbs
    log_lr = np.log10(lrs)
    loss = 1.0 - 0.8 / (1 + np.exp(-(log_lr + 3) * 3)) + np.where(lrs > 0.1, (log_lr + 1) ** 2, 0)
    s = callbacks.suggest_lr(lrs, loss)
    assert 3e-4 <= s <= 3e-3
    assert callbacks.suggest_lr([1e-3], [1.0]) is None


def _toy_classifier(seed=0, batch_norm=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = (x[:, 0] - x[:, 2] > 0).astype("int32")
    keras.utils.set_random_seed(seed)
    norm = [keras.layers.BatchNormalization()] if batch_norm else []
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8), *norm, keras.layers.ReLU(),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.AdamW(0.003, weight_decay=1e-4), "sparse_categorical_crossentropy")
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def test_no_trace_on_weights_optimizer_state_and_lr(tmp_path):
    model, ds = _toy_classifier()
    # non-zero Adam moments, iteration count and BatchNorm statistics
    model.fit(ds, epochs=1, verbose=0, shuffle=False)
    weights = model.get_weights()
    opt_vars = [keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables]
    lr = callbacks.get_lr(model.optimizer)

    plot = tmp_path / "lr.png"
    res = callbacks.lr_range_test(model, ds, num_iter=40, plot_path=str(plot))

    assert len(res.lrs) > 5 and res.suggestion is not None
    after = model.get_weights()
    assert len(after) == len(weights) and all(np.array_equal(a, b) for a, b in zip(after, weights))
    after_opt = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    assert all(np.array_equal(a, b) for a, b in zip(after_opt, opt_vars))
    assert callbacks.get_lr(model.optimizer) == lr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the model still trains normally afterwards (fit resets stop_training)
    assert len(model.fit(ds, epochs=2, verbose=0, shuffle=False).history["loss"]) == 2


def test_per_batch_loss_recovered_from_running_mean():
    """Used in a normal fit (several batches per epoch) the callback still sees each batch's own loss."""
    model, ds = _toy_classifier(batch_norm=False)  # BatchNorm's training-mode loss differs from evaluate's
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    # tiny LRs: the weights barely move, so each batch's loss is its loss at the initial weights
    per_batch = [float(model.evaluate(x, y, verbose=0)) for x, y in ds]
    cb = callbacks.LRRangeTest(start_lr=1e-12, end_lr=1e-11, num_iter=8)
    model.fit(ds, epochs=3, callbacks=[cb], verbose=0, shuffle=False)
    np.testing.assert_allclose(cb.raw_losses, per_batch * 2, rtol=1e-4)


def test_schedule_optimizer_is_refused():
    model, ds = _toy_classifier()
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(0.1, 10)),
                  "sparse_categorical_crossentropy")
    with pytest.raises(TypeError, match="float"):
        callbacks.lr_range_test(model, ds, num_iter=5)


def test_no_trace_under_mixed_float16():
    """The LossScaleOptimizer's own variables (loss scale, counter) and the inner Adam's are all restored."""
    from meteor_tf.training import distribute

    distribute.set_mixed_precision("float16")
    try:
        model, ds = _toy_classifier(batch_norm=False)
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        weights = model.get_weights()
        opt_vars = [keras.ops.convert_to_numpy(v).copy() for v in model.optimizer.variables]
        res = callbacks.lr_range_test(model, ds, num_iter=30)
    finally:
        distribute.set_mixed_precision("none")
    assert res.suggestion is not None
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), weights))
    after_opt = [keras.ops.convert_to_numpy(v) for v in model.optimizer.variables]
    assert all(np.array_equal(a, b) for a, b in zip(after_opt, opt_vars))
    assert callbacks.get_lr(model.optimizer) == pytest.approx(0.01)
