"""SGDR: cycle arithmetic, the per-batch LR sequence, the absolute floor, m_mul, and composition with Adam."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from meteor_tf.training import callbacks, schedules

BASE, MIN = 0.1, 1e-3


def test_cycle_epochs():
    assert schedules.sgdr_cycle_epochs(3) == [1, 2, 4]
    assert schedules.sgdr_cycle_epochs(3, first=2, t_mul=1) == [2, 2, 2]
    assert schedules.whole_cycle_epochs(3) == 7
    assert schedules.whole_cycle_epochs(1) == 1
    assert schedules.whole_cycle_epochs(3, first=0.5) == 4  # 3.5 epochs, rounded up
    assert schedules.cycles_in_epochs(7) == 3 and schedules.cycles_in_epochs(6) == 2


@pytest.mark.parametrize("spe", [1, 3, 10])
def test_restart_points_and_floor(spe):
    lrs = [schedules.sgdr_lr(s, BASE, spe, min_lr=MIN) for s in range(spe * 15 + 1)]
    restarts = [s for s in range(1, len(lrs)) if lrs[s] >= lrs[s - 1]]  # the LR only ever rises at a restart
    assert restarts == [spe * 1, spe * 3, spe * 7, spe * 15]
    for s in [0] + restarts:
        assert lrs[s] == pytest.approx(BASE)
    assert min(lrs) >= MIN
    # the last step of a long cycle comes close to the absolute floor
    assert lrs[spe * 15 - 1] == pytest.approx(MIN, abs=(BASE - MIN) * 0.05)
    # halfway through the second cycle (steps spe..3spe) the cosine is at its middle
    assert lrs[spe * 2] == pytest.approx(MIN + (BASE - MIN) * 0.5)


def test_m_mul_scales_amplitude_above_absolute_floor():
    spe = 4
    peaks = [schedules.sgdr_lr(s, BASE, spe, m_mul=0.5, min_lr=MIN) for s in (0, spe, 3 * spe, 7 * spe)]
    np.testing.assert_allclose(peaks, [MIN + (BASE - MIN) * 0.5**i for i in range(4)], rtol=1e-12)
    # the floor is not scaled by m_mul (unlike Keras' relative alpha would be)
    assert schedules.sgdr_lr(7 * spe - 1, BASE, spe, m_mul=0.5, min_lr=MIN) > MIN


@pytest.mark.parametrize("kw", [dict(), dict(t_mul=1), dict(t_mul=3, m_mul=0.7),
                                dict(first_cycle_epochs=0.5)])
def test_pure_function_matches_keras_cosine_decay_restarts(kw):
    spe = 5
    sched = schedules.sgdr_schedule(BASE, spe, min_lr=MIN, **kw)
    steps = np.arange(0, 80)
    keras_lrs = [float(keras.ops.convert_to_numpy(sched(int(s)))) for s in steps]
    ours = [schedules.sgdr_lr(int(s), BASE, spe, min_lr=MIN, **kw) for s in steps]
    np.testing.assert_allclose(ours, keras_lrs, rtol=1e-5, atol=1e-8)


def test_floor_above_base_gives_constant_lr():
    assert schedules.sgdr_lr(3, 1e-6, 2, min_lr=1e-5) == pytest.approx(1e-6)


def _toy(seed=0, n=64):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(keras.optimizers.Adam(0.5), "sparse_categorical_crossentropy")
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16)  # 4 batches per epoch


def test_callback_sets_lr_every_batch_and_logs_it():
    model, ds = _toy()
    spe = 4
    seen = []

    class Spy(keras.callbacks.Callback):  # runs after SGDR's batch-begin: reads what the step will use
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(callbacks.get_lr(self.model.optimizer))

    sgdr = callbacks.SGDR(BASE, spe, min_lr=MIN)
    hist = model.fit(ds, epochs=3, callbacks=[sgdr, Spy()], verbose=0, shuffle=False)
    expected = [schedules.sgdr_lr(s, BASE, spe, min_lr=MIN) for s in range(12)]
    np.testing.assert_allclose(seen, expected, rtol=1e-5)
    np.testing.assert_allclose(sgdr.lrs, expected, rtol=1e-5)
    # "lr" per epoch = the LR of the epoch's last batch (steps 3, 7, 11)
    np.testing.assert_allclose(hist.history["lr"], [expected[3], expected[7], expected[11]], rtol=1e-5)
    assert sgdr.step == 12


def test_initial_epoch_resumes_schedule_and_csvlogger_records_lr(tmp_path):
    model, ds = _toy()
    spe = 4
    sgdr = callbacks.SGDR(BASE, spe, min_lr=MIN)
    csv = tmp_path / "log.csv"
    model.fit(ds, epochs=3, initial_epoch=2, callbacks=[sgdr, keras.callbacks.CSVLogger(str(csv))], verbose=0,
              shuffle=False)
    np.testing.assert_allclose(sgdr.lrs, [schedules.sgdr_lr(s, BASE, spe, min_lr=MIN) for s in range(8, 12)],
                               rtol=1e-5)
    assert sgdr.step == 12
    header, row = csv.read_text().strip().splitlines()
    assert "lr" in header.split(",")
    assert float(row.split(",")[header.split(",").index("lr")]) == pytest.approx(sgdr.lrs[-1], rel=1e-5)


def test_initial_step_offsets_the_schedule():
    model, ds = _toy()
    sgdr = callbacks.SGDR(BASE, 4, min_lr=MIN, initial_step=5)
    model.fit(ds, epochs=1, callbacks=[sgdr], verbose=0, shuffle=False)
    np.testing.assert_allclose(sgdr.lrs, [schedules.sgdr_lr(s, BASE, 4, min_lr=MIN) for s in range(5, 9)],
                               rtol=1e-5)


def test_backup_and_restore_resumption_keeps_schedule_on_time(tmp_path):
    """A run killed after epoch 1 and restarted by BackupAndRestore continues at step 2 * spe."""
    spe, backup = 4, str(tmp_path / "backup")

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("killed")

    model, ds = _toy()
    with pytest.raises(RuntimeError, match="killed"):
        model.fit(ds, epochs=4, callbacks=[callbacks.SGDR(BASE, spe, min_lr=MIN),
                                           keras.callbacks.BackupAndRestore(backup), Crash()],
                  verbose=0, shuffle=False)
    model, ds = _toy()
    sgdr = callbacks.SGDR(BASE, spe, min_lr=MIN)
    hist = model.fit(ds, epochs=4, callbacks=[sgdr, keras.callbacks.BackupAndRestore(backup)], verbose=0,
                     shuffle=False)
    assert len(hist.history["loss"]) == 2
    np.testing.assert_allclose(sgdr.lrs, [schedules.sgdr_lr(s, BASE, spe, min_lr=MIN) for s in range(8, 16)],
                               rtol=1e-5)


def test_composes_with_adam_and_lr_range_test():
    """Same Adam optimizer: LR range test first (float LR survives), then SGDR trains and reduces the loss."""
    model, ds = _toy()
    res = callbacks.lr_range_test(model, ds, num_iter=30, end_lr=1.0)
    assert res.suggestion is not None
    assert callbacks.get_lr(model.optimizer) == pytest.approx(0.5)  # restored
    loss0 = model.evaluate(ds, verbose=0)
    sgdr = callbacks.SGDR(0.05, 4, min_lr=1e-4)
    model.fit(ds, epochs=7, callbacks=[sgdr], verbose=0, shuffle=False)
    assert model.evaluate(ds, verbose=0) < loss0
    assert math.isclose(callbacks.get_lr(model.optimizer), sgdr.lrs[-1], rel_tol=1e-5)


def test_schedule_optimizer_is_refused_with_clear_error():
    model, ds = _toy()
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9)),
                  "sparse_categorical_crossentropy")
    with pytest.raises(TypeError, match="float"):
        model.fit(ds, epochs=1, callbacks=[callbacks.SGDR(BASE, 4)], verbose=0, shuffle=False)
