"""Kill-safe checkpoint callbacks: a write cut short never leaves a backup or "best" file that stops a resume."""

import keras
import numpy as np
import pytest

from meteor_tf.training.callbacks import AtomicBackupAndRestore, AtomicModelCheckpoint


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 2, 32)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in Keras catches it."""


def _cut_writes_after(model, n_good):
    """From the (n_good+1)-th call on, save_weights writes a truncated file and dies, as a kill mid-write."""
    real, calls = model.save_weights, []

    def save_weights(filepath, overwrite=True):
        calls.append(filepath)
        if len(calls) <= n_good:
            return real(filepath, overwrite=overwrite)
        with open(filepath, "wb") as f:
            f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 88)  # 96 bytes: an h5 file cut short
        raise Killed()

    model.save_weights = save_weights


@pytest.mark.parametrize("callback_cls, expect_resume", [(AtomicBackupAndRestore, True),
                                                         (keras.callbacks.BackupAndRestore, False)])
def test_backup_cut_mid_write_still_resumes(tmp_path, callback_cls, expect_resume):
    x, y = _data()
    model = _model()
    _cut_writes_after(model, n_good=2)  # epochs 0 and 1 are backed up, the kill hits epoch 2's backup
    with pytest.raises(Killed):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[callback_cls(str(tmp_path / "backup"))])

    fresh = _model()
    seen = []
    epochs = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    if not expect_resume:  # Keras's own callback: the truncated file stops the rerun (why ours exists)
        with pytest.raises(OSError):
            fresh.fit(x, y, epochs=5, verbose=0, callbacks=[callback_cls(str(tmp_path / "backup")), epochs])
        return
    fresh.fit(x, y, epochs=5, verbose=0, callbacks=[callback_cls(str(tmp_path / "backup")), epochs])
    assert seen == [2, 3, 4]  # continues after the last complete backup


def test_best_checkpoint_cut_mid_write_keeps_the_previous_best(tmp_path):
    x, y = _data()
    model = _model()
    best = tmp_path / "best.weights.h5"
    ckpt = AtomicModelCheckpoint(str(best), monitor="loss", save_best_only=True, save_weights_only=True)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ckpt])
    reloaded = _model()
    reloaded.load_weights(str(best))
    saved = reloaded.get_weights()

    _cut_writes_after(model, n_good=0)
    ckpt.best = np.inf  # force a save at the next epoch
    with pytest.raises(Killed):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[ckpt])
    after = _model()
    after.load_weights(str(best))  # still a complete file: the previous best
    for a, b in zip(after.get_weights(), saved):
        np.testing.assert_array_equal(a, b)


def test_leftover_partial_from_a_killed_run_never_replaces_the_best(tmp_path):
    """A kill mid-write leaves `partial.best…`; a rerun whose epoch does not improve must keep the real best file
    (it used to rename the truncated leftover over it, and the resumed run died loading it)."""
    x, y = _data()
    model = _model()
    best = tmp_path / "best.weights.h5"
    ckpt = AtomicModelCheckpoint(str(best), monitor="loss", save_best_only=True, save_weights_only=True)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ckpt])
    good = best.read_bytes()
    partial = tmp_path / "partial.best.weights.h5"
    partial.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 88)  # what the killed process left

    rerun = AtomicModelCheckpoint(str(best), monitor="loss", save_best_only=True, save_weights_only=True)
    rerun.best = -np.inf  # the redone epoch does not improve: nothing is saved
    model.fit(x, y, epochs=1, verbose=0, callbacks=[rerun])
    assert best.read_bytes() == good
    _model().load_weights(str(best))
    assert not partial.exists()
