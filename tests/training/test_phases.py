"""compile_for_phase / train_phase on a toy model: trains, logs the LR per epoch, lr_find picks the LR."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from meteor_tf.evaluation import keras_metrics
from meteor_tf.training import phases, schedules
from meteor_tf.training.callbacks import lr_range_test


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] < 0).astype("int32")  # label 0 = "meteor"
    return x, y


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                             keras.layers.Dense(2, activation="softmax")])


def _datasets():
    x, y = _data()
    train = tf.data.Dataset.from_tensor_slices((x[:64], y[:64])).batch(16)
    val = tf.data.Dataset.from_tensor_slices((x[64:], y[64:])).batch(16)
    return train, val


def test_compile_for_phase_optimizers_and_auc():
    model = phases.compile_for_phase(_model(), 0.01)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert not isinstance(model.optimizer, keras.optimizers.AdamW)
    model = phases.compile_for_phase(_model(), 0.01, weight_decay=1e-4, meteor_auc=True)
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    assert model.optimizer.weight_decay == pytest.approx(1e-4)
    x, y = _data()
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert {"loss", "accuracy", "meteor_auc"} <= set(logs)


def test_meteor_auc_uses_class_zero():
    auc = keras_metrics.MeteorAUC()
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]], "float32")  # meteors ranked first
    auc.update_state(y, probs)
    assert float(auc.result()) == pytest.approx(1.0)


def test_train_phase_trains_and_logs_lr_per_epoch(tmp_path):
    train, val = _datasets()
    model = phases.compile_for_phase(_model(), 0.05)
    epochs = schedules.whole_cycle_epochs(2)  # 1 + 2
    csv = tmp_path / "log.csv"
    hist, lr_used = phases.train_phase(model, train, val, epochs=epochs, lr=0.05, steps_per_epoch=None,
                                       min_lr=1e-4, callbacks=[keras.callbacks.CSVLogger(str(csv))])
    assert lr_used == 0.05
    h = hist.history
    assert len(h["loss"]) == epochs and "val_loss" in h and "val_accuracy" in h
    assert h["loss"][-1] < h["loss"][0]
    spe = 4  # 64 examples / 16, from the dataset's cardinality
    expected = [schedules.sgdr_lr(s * spe + spe - 1, 0.05, spe, min_lr=1e-4) for s in range(epochs)]
    np.testing.assert_allclose(h["lr"], expected, rtol=1e-5)
    assert "lr" in csv.read_text().splitlines()[0].split(",")


def test_train_phase_resumes_schedule_from_initial_epoch():
    train, val = _datasets()
    model = phases.compile_for_phase(_model(), 0.05)
    hist, _ = phases.train_phase(model, train, None, epochs=3, lr=0.05, steps_per_epoch=4, initial_epoch=2,
                                 min_lr=1e-4)
    assert hist.history["lr"] == pytest.approx([schedules.sgdr_lr(11, 0.05, 4, min_lr=1e-4)], rel=1e-5)


def test_lr_find_changes_the_lr_used(tmp_path):
    train, val = _datasets()
    model = phases.compile_for_phase(_model(), 0.05)
    plot = tmp_path / "lr_find.png"
    hist, lr_used = phases.train_phase(model, train, val, epochs=1, lr=0.05, steps_per_epoch=4, lr_find=True,
                                       lr_find_plot=str(plot), lr_find_kwargs={"num_iter": 40})
    # the range test's own suggestion on the same fresh model and data, not the 0.05 fallback
    reference = lr_range_test(phases.compile_for_phase(_model(), 0.05), train, verbose=0, num_iter=40).suggestion
    assert lr_used == pytest.approx(float(reference), rel=1e-6) and lr_used != 0.05
    assert plot.exists()
    # SGDR started its first cycle at the suggested LR
    assert hist.history["lr"][0] == pytest.approx(schedules.sgdr_lr(3, lr_used, 4, min_lr=1e-5), rel=1e-5)


def test_terminate_on_nan_is_installed():
    train, _ = _datasets()
    model = phases.compile_for_phase(_model(), 1e30)  # guaranteed to blow up
    hist, _ = phases.train_phase(model, train, None, epochs=5, lr=1e30, steps_per_epoch=4, min_lr=1e29)
    assert len(hist.history["loss"]) < 5


def test_uncompiled_model_is_refused_without_compile():
    train, val = _datasets()
    with pytest.raises(ValueError, match="compile_for_phase"):
        phases.train_phase(_model(), train, val, epochs=1, lr=0.01, compile=False)


def test_train_phase_compiles_a_fresh_adamw_by_default():
    train, val = _datasets()
    model = _model()
    hist, lr_used = phases.train_phase(model, train, val, epochs=1, lr=0.01, weight_decay=1e-3,
                                       meteor_auc=True)
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and lr_used == 0.01
    assert "val_meteor_auc" in hist.history


def test_compile_false_keeps_the_callers_optimizer():
    train, _ = _datasets()
    model = _model()
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    opt = model.optimizer
    phases.train_phase(model, train, None, epochs=1, lr=0.01, compile=False)
    assert model.optimizer is opt


def test_a_saved_model_with_the_meteor_auc_metric_loads_without_custom_objects(tmp_path):
    """Training compiles the head alone (cached features) with MeteorAUC and the saved final model carries it: Keras
    rebuilds it on load even with compile=False, so an unregistered class made every later load of model.keras fail."""
    import keras
    from meteor_tf.evaluation.keras_metrics import MeteorAUC

    head = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")], name="head")
    head.compile("adam", "sparse_categorical_crossentropy", metrics=[MeteorAUC()])  # as on cached features
    head.fit(np.zeros((4, 4), "float32"), np.array([0, 1, 0, 1]), verbose=0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, head(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(loaded.predict(np.ones((1, 4), "float32"), verbose=0),
                               model.predict(np.ones((1, 4), "float32"), verbose=0))


def test_a_phase_after_a_resumed_phase_runs_all_its_epochs(tmp_path):
    # BackupAndRestore resumes by setting model._initial_epoch and fit() never clears it: after a head phase
    # resumed from a backup of its last epoch, fine-tuning on the same model started at that epoch (a kill at the
    # end of the head phase made the rerun's fine-tuning one epoch short)
    train, val = _datasets()
    model = phases.compile_for_phase(_model(), 0.01)
    backup = str(tmp_path / "backup")
    phases.train_phase(model, train, val, epochs=1, lr=0.01,
                       callbacks=[keras.callbacks.BackupAndRestore(backup, delete_checkpoint=False)])
    resumed, _ = phases.train_phase(model, train, val, epochs=1, lr=0.01,
                                    callbacks=[keras.callbacks.BackupAndRestore(backup)])
    assert resumed.history.get("loss", []) == []  # the backup held the phase's one epoch: nothing left to do
    phases.compile_for_phase(model, 0.01)
    nxt, _ = phases.train_phase(model, train, val, epochs=3, lr=0.01)
    assert len(nxt.history["loss"]) == 3
