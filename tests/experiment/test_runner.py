"""The experiment runner end to end on tiny settings: files, report content, no test-fold leakage."""

import json

import numpy as np
import pytest

from meteor_tf.config import ExperimentConfig
from meteor_tf.experiment import features
from meteor_tf.experiment import fold as fold_module
from meteor_tf.experiment import runner as cv
from meteor_tf.run_dir import ConfigMismatchError, RunDir
from tests.conftest import write_capture_folder


def tiny_config(tmp_path, data, **changes):
    base = dict(data=str(data), depth=18, pretrain="none", image_size=32, folds=3, head_epochs=1,
                fine_tune_epochs=1, batch_size=8, head_units=(16,), head_dropout=(0.1,), output_dir=str(tmp_path / "runs"),
                val_fraction=0.25, retrain_final=False, seed=3)
    base.update(changes)
    return ExperimentConfig(**base)


@pytest.fixture()
def backbone_file(tmp_path):
    """A 'pretrained' backbone file written by the test (random weights), standing in for Fashion-MNIST."""
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.weights import save_backbone

    model = build_classifier(18, "torchvision", 32, normalization="unit", head_units=(), head_dropout=(),
                             num_classes=10)
    path = tmp_path / "fmnist_backbone.weights.h5"
    save_backbone(model.get_layer("backbone"), str(path))
    return path


def test_two_phase_run_writes_the_complete_report(tmp_path, backbone_file):
    data = write_capture_folder(tmp_path / "captures", meteors=12, non_meteors=9)
    (data / "meteor" / "broken.jpg").write_bytes(b"")
    config = tiny_config(tmp_path, data, pretrain="fashion_mnist", weights=str(backbone_file), retrain_final=True)
    result = cv.run_experiment(config)
    run_dir = tmp_path / "runs" / config.derived_run_id()
    for name in ("flags.json", "provenance.json", "folds.json", "state.json", "metrics.json", "summary.md",
                 "confusion_head.png", "confusion_fine_tune.png", "confusion_recall_first.png",
                 "learning_curves.png", "final/model.keras", "final/model_info.json"):
        assert (run_dir / name).exists(), name
    from meteor_tf.data.dataset import load_examples

    labels = load_examples(config).labels
    folds = json.loads((run_dir / "folds.json").read_text())
    for k in range(3):
        fold = json.loads((run_dir / f"fold_{k}" / "metrics.json").read_text())
        assert set(fold) == {"head", "fine_tune"}
        saved = np.load(run_dir / f"fold_{k}" / "predictions_fine_tune.npz")
        assert len(saved["test_idx"]) == len(folds[k]["test"])  # the fold's test captures, each once
        correct = (saved["test_prob"] >= 0.5) == (labels[saved["test_idx"]] == 0)  # label 0 = meteor
        assert fold["fine_tune"]["accuracy"] == pytest.approx(correct.mean())
    summary = (run_dir / "summary.md").read_text()
    assert "| No fine tuning |" in summary and "| With fine tuning |" in summary
    assert "broken.jpg" in summary
    assert "stored with the final model, final/model_info.json" in summary
    assert set(result["stats"]) == {"head", "fine_tune"}
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["packages"]["tensorflow"] and provenance["seed"] == 3
    info = json.loads((run_dir / "final" / "model_info.json").read_text())
    assert info["threshold"] == pytest.approx(result["threshold"]["value"])


def test_a_second_run_of_the_same_command_reuses_the_finished_work(tmp_path, capture_folder, monkeypatch):
    config = tiny_config(tmp_path, capture_folder)
    first = cv.run_experiment(config)
    calls = []
    monkeypatch.setattr(fold_module, "run_phase", lambda *a, **k: calls.append(a))
    second = cv.run_experiment(config)
    assert calls == []
    assert second["stats"] == first["stats"]
    summary = (tmp_path / "runs" / config.derived_run_id() / "summary.md").read_text()
    assert "stored with the final model" not in summary  # no final model without --retrain_final


def test_a_run_id_with_other_settings_is_refused(tmp_path, capture_folder):
    config = tiny_config(tmp_path, capture_folder, run_id="same")
    cv.prepare_run_dir(config)
    with pytest.raises(ConfigMismatchError, match="other settings .*depth"):
        cv.prepare_run_dir(config.replace(depth=34))


def spy_on_training_data(monkeypatch) -> list:
    """Tags every loaded image (pixel (0, 0)) and every cached feature row (column 0) with its example index, and
    returns the list that receives, per `pipeline.make_dataset` call, the set of example indices it was given."""
    from meteor_tf.data import dataset as dataset_mod
    from meteor_tf.data import pipeline

    real_load, real_features, real_make_dataset = dataset_mod.load_examples, fold_module.backbone_features, pipeline.make_dataset

    def tagged_load(config):
        ex = real_load(config)
        ex.images[:, 0, 0, 0] = np.arange(len(ex.labels))
        return ex

    def tagged_features(config, images, *a, **k):
        feats = real_features(config, images, *a, **k).copy()
        feats[:, 0] = np.arange(len(feats))
        return feats

    seen = []

    def spy_make_dataset(images, labels, *a, **k):
        images = np.asarray(images)
        seen.append(set((images[:, 0] if images.ndim == 2 else images[:, 0, 0, 0]).astype(int).tolist()))
        return real_make_dataset(images, labels, *a, **k)

    monkeypatch.setattr(dataset_mod, "load_examples", tagged_load)
    monkeypatch.setattr(fold_module, "backbone_features", tagged_features)
    monkeypatch.setattr(pipeline, "make_dataset", spy_make_dataset)
    return seen


def test_no_test_fold_example_reaches_training_lr_finding_checkpointing_or_the_threshold(
        tmp_path, capture_folder, monkeypatch):
    """Every image carries its example index in pixel (0, 0); we record what each fold's training sees."""
    from meteor_tf.evaluation import metrics as m

    seen = {"datasets": spy_on_training_data(monkeypatch), "threshold_n": []}
    real_threshold = m.recall_first_threshold
    monkeypatch.setattr(m, "recall_first_threshold",
                        lambda labels, prob, target: seen["threshold_n"].append(len(labels)) or
                        real_threshold(labels, prob, target))
    config = tiny_config(tmp_path, capture_folder, lr_find=True)
    cv.run_experiment(config)
    folds = json.loads((tmp_path / "runs" / config.derived_run_id() / "folds.json").read_text())
    ids = sorted(sum((f["test"] for f in folds), []))
    # each fold made a training and a validation dataset (plus the LR test's); none holds its test examples
    assert len(seen["datasets"]) >= 2 * len(folds)
    per_fold = len(seen["datasets"]) // len(folds)
    for k, fold in enumerate(folds):
        test = {ids.index(i) for i in fold["test"]}
        for used in seen["datasets"][k * per_fold:(k + 1) * per_fold]:
            assert not (used & test)
    assert seen["threshold_n"] == [sum(len(f["val"]) for f in folds)]


def test_no_test_fold_capture_or_scene_mate_reaches_the_cached_feature_head(tmp_path, backbone_file, monkeypatch):
    """The head phase on cached features with scene-prefixed file names: each cached feature row carries its capture
    index, and no dataset a fold trains on (head features or fine-tuning images) holds a test capture of that fold
    or another capture of a test capture's scene."""
    from meteor_tf.data import dataset as dataset_mod

    data = write_capture_folder(tmp_path / "captures", meteors=16, non_meteors=12)
    for cls in ("meteor", "non_meteor"):  # two captures per scene, as a frame and its crop: <scene>__<name>
        for i, path in enumerate(sorted((data / cls).iterdir())):
            path.rename(path.with_name(f"{cls[:1]}{i // 2:02d}__{path.name}"))
    real_load = dataset_mod.load_examples
    seen = spy_on_training_data(monkeypatch)
    config = tiny_config(tmp_path, data, pretrain="fashion_mnist", weights=str(backbone_file), head_epochs=2)
    assert features.use_cached_features(config)
    cv.run_experiment(config)
    examples = real_load(config)
    folds = json.loads((tmp_path / "runs" / config.derived_run_id() / "folds.json").read_text())
    ids = list(examples.ids)
    per_fold = len(seen) // len(folds)
    assert per_fold >= 4  # head (features) and fine-tuning (images): a training and a validation set each
    for k, fold in enumerate(folds):
        test = {ids.index(i) for i in fold["test"]}
        scenes = {examples.groups[i] for i in test}
        scene_mates = {i for i, g in enumerate(examples.groups) if g in scenes}
        assert scene_mates == test  # a scene is wholly in the test fold
        for used in seen[k * per_fold:(k + 1) * per_fold]:
            assert not (used & scene_mates)


def test_cached_features_train_one_head_compiled_once_and_predict_as_the_full_model(tmp_path, backbone_file,
                                                                                    monkeypatch):
    """Head-only CV on cached features: one compile (one trace) for all folds and the final model, and the
    predictions taken from the features equal the full model's on the images."""
    from meteor_tf.models.classifier import build_classifier_from_config
    from meteor_tf.training import phases

    compiles = []
    real_compile = phases.compile_for_phase
    monkeypatch.setattr(phases, "compile_for_phase", lambda model, *a, **k: compiles.append(model.name) or
                        real_compile(model, *a, **k))
    data = write_capture_folder(tmp_path / "captures", meteors=12, non_meteors=9)
    config = tiny_config(tmp_path, data, pretrain="fashion_mnist", weights=str(backbone_file), fine_tune=False,
                         retrain_final=True, head_epochs=2)
    cv.run_experiment(config)
    assert compiles == ["head"]  # not one per fold (3) and one for the final model
    run_dir = tmp_path / "runs" / config.derived_run_id()
    from meteor_tf.data.dataset import load_examples

    examples = load_examples(config)
    for k in range(3):
        model = build_classifier_from_config(config)
        model.load_weights(str(run_dir / f"fold_{k}" / "after_head.weights.h5"))
        saved = np.load(run_dir / f"fold_{k}" / "predictions_head.npz")
        direct = model.predict(examples.images[saved["test_idx"]], verbose=0)[:, 0]
        np.testing.assert_allclose(saved["test_prob"], direct, atol=1e-5)


def test_cached_head_starts_each_fold_from_the_folds_weights_and_a_fresh_optimizer(tmp_path):
    from meteor_tf.models.classifier import build_head

    config = tiny_config(tmp_path, tmp_path, pretrain="fashion_mnist", head_epochs=1)
    shared = features.CachedHead(config, feature_dim=8)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 8)).astype("float32"), rng.integers(0, 2, 16)
    shared.model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert int(shared.model.optimizer.iterations.numpy()) == 4
    fold_head = build_head(8, (16,), (0.1,))
    shared.start(fold_head)
    assert int(shared.model.optimizer.iterations.numpy()) == 0
    assert all(not np.any(v.numpy()) for v in shared.model.optimizer.variables if "momentum" in v.path
               or "velocity" in v.path)
    for mine, theirs in zip(shared.model.get_weights(), fold_head.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    shared.model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    shared.finish(fold_head)
    for mine, theirs in zip(shared.model.get_weights(), fold_head.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_a_fold_trained_after_a_resume_equals_the_same_fold_uninterrupted(tmp_path, backbone_file):
    """Random state depends on (seed, fold, phase) only: fold 1 trained in a process that skipped fold 0 (a rerun
    after a kill between the folds) gives the same predictions as in the uninterrupted run."""
    import shutil

    data = write_capture_folder(tmp_path / "captures", meteors=12, non_meteors=9)
    config = tiny_config(tmp_path, data, pretrain="fashion_mnist", weights=str(backbone_file), folds=2,
                         head_epochs=2, head_units=(16,), head_dropout=(0.5,))
    cv.run_experiment(config)
    run_dir = tmp_path / "runs" / config.derived_run_id()
    uninterrupted = {p: np.load(run_dir / "fold_1" / f"predictions_{p}.npz")["test_prob"] for p in ("head", "fine_tune")}

    state = json.loads((run_dir / "state.json").read_text())
    state["phases"] = {k: v for k, v in state["phases"].items() if not k.startswith("fold_1/")}
    (run_dir / "state.json").write_text(json.dumps(state))
    shutil.rmtree(run_dir / "fold_1")
    first_fold_0 = sum(v["seconds"] for k, v in state["phases"].items() if k.startswith("fold_0/"))
    result = cv.run_experiment(config)  # fold 0 is done: fold 1 now trains first
    assert result["timings"]["fold 0"] == pytest.approx(first_fold_0)  # its real time, not the rerun's 0 s
    for phase, expected in uninterrupted.items():
        resumed = np.load(run_dir / "fold_1" / f"predictions_{phase}.npz")["test_prob"]
        np.testing.assert_allclose(resumed, expected, atol=1e-6, err_msg=phase)


def test_a_run_stopped_by_its_data_leaves_no_run_folder(tmp_path):
    from meteor_tf.data import DataError

    data = write_capture_folder(tmp_path / "captures", meteors=2, non_meteors=9)  # too few meteors for 3 folds
    config = tiny_config(tmp_path, data)
    with pytest.raises(DataError, match="at least 3"):
        cv.run_experiment(config)
    assert not (tmp_path / "runs" / config.derived_run_id()).exists()


def test_a_resume_with_other_thread_settings_is_reported(tmp_path, caplog):
    from meteor_tf.evaluation.provenance import threads

    (tmp_path / "provenance.json").write_text(json.dumps({"threads": threads()}))
    assert cv.check_threads(RunDir(tmp_path))
    (tmp_path / "provenance.json").write_text(json.dumps({"threads": dict(threads(), usable_cores=64)}))
    with caplog.at_level("WARNING", logger="meteor_tf"):
        assert not cv.check_threads(RunDir(tmp_path))
    assert "the run started with" in caplog.text


def test_auto_precision_on_a_bf16_cpu_is_recorded_kept_on_resume_and_served_in_float32(tmp_path, capture_folder,
                                                                                       monkeypatch):
    import keras

    from meteor_tf.models.classifier import _all_layers
    from meteor_tf.serving.export import load_keras_model
    from meteor_tf.training import distribute

    monkeypatch.setenv(distribute.CPU_FLAGS_ENV, "avx2 avx512f avx512_bf16")
    config = tiny_config(tmp_path, capture_folder, folds=2, retrain_final=True)
    try:
        result = cv.run_experiment(config)
        provenance = RunDir(tmp_path / "runs" / config.derived_run_id()).read_provenance()
        assert (provenance["mixed_precision"], provenance["cpu_bf16"]) == ("bfloat16", "avx512_bf16")
        served = load_keras_model(result["final"]["model"])
        assert {layer.dtype_policy.name for layer in _all_layers(served)} == {"float32"}
        distribute.set_mixed_precision("none")
        monkeypatch.setenv(distribute.CPU_FLAGS_ENV, "avx2")  # resumed on a CPU without bf16: it keeps the run's
        assert cv.run_experiment(config)["stats"] == result["stats"]
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        distribute.set_mixed_precision("none")


def test_features_cached_under_bfloat16_are_read_back_as_the_same_floats(tmp_path, backbone_file, caplog):
    """np.save keeps a bfloat16 array as 2-byte voids that np.load cannot read as numbers: a resumed (or parallel)
    bf16 run trained its heads on garbage (AUC 0.5) before the cache was stored as float32."""
    import keras

    config = tiny_config(tmp_path, tmp_path, pretrain="fashion_mnist", weights=str(backbone_file))
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 1)).astype("float32")
    cache = tmp_path / "features.npy"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        first = features.backbone_features(config, images, backbone_file, cache, 4)
        again = features.backbone_features(config, images, backbone_file, cache, 4)  # from the file
        np.save(cache, first.astype(keras.ops.convert_to_numpy(keras.ops.zeros(1, "bfloat16")).dtype))  # older file
        with caplog.at_level("WARNING", logger="meteor_tf"):
            recomputed = features.backbone_features(config, images, backbone_file, cache, 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert first.dtype == again.dtype == recomputed.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, recomputed)
    assert "recomputing it" in caplog.text and np.load(cache).dtype == np.float32
