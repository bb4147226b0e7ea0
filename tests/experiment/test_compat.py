"""Run directories and `.keras` models made by older code still resume and load.

`tests/fixtures/run_b8e2b99/` is the small part of a run directory written by commit b8e2b99 (before backbones knew
their structure and before the config was split into parts), made by `meteor_tf.main --data=<captures>
--depth=18 --pretrain=none --image_size=32 --folds=2 --fine_tune_epochs=2 --batch_size=4 --head_units=16
--head_dropout=0.1 --val_fraction=0.25 --seed=3` on `write_capture_folder(meteors=14, non_meteors=10, size=40)`,
cut after fold 0 (fold 1 and the final model removed from state.json; checkpoints left out: they are 134 MB).
`model_keras_config.json.gz` / `model_keras_metadata.json` are the config and metadata of that run's
final/model.keras, whose weights are left out for their size and supplied by a model the current code builds.
"""

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_capture_folder

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "run_b8e2b99"


def _old_run(tmp_path):
    data = write_capture_folder(tmp_path / "captures", meteors=14, non_meteors=10, size=40)
    run = tmp_path / "runs" / "old"
    shutil.copytree(FIXTURE, run, ignore=shutil.ignore_patterns("model_keras_*"))
    flags = json.loads((run / "flags.json").read_text())
    flags.update(data=str(data), output_dir=str(tmp_path / "runs"))
    (run / "flags.json").write_text(json.dumps(flags, indent=2, sort_keys=True))
    return run, flags


def test_old_flat_flags_json_loads_into_the_config(tmp_path):
    from meteor_tf.config import ExperimentConfig

    _, flags = _old_run(tmp_path)
    config = ExperimentConfig.from_dict(flags)
    # a setting added since (fold_workers) takes its default
    assert config.to_dict() == {**{k: (tuple(v) if isinstance(v, list) else v) for k, v in flags.items()},
                                "fold_workers": 1}
    assert config.derived_run_id() == "old"


@pytest.mark.timeout(600)
def test_run_cut_by_old_code_resumes_with_fold_0_kept(tmp_path):
    from meteor_tf.config import ExperimentConfig
    from meteor_tf.experiment.runner import run_experiment

    run, flags = _old_run(tmp_path)
    fold_0_log = (run / "fold_0" / "fine_tune_log.csv").read_text()
    result = run_experiment(ExperimentConfig.from_dict(flags))

    old_metrics = json.loads((FIXTURE / "fold_0" / "metrics.json").read_text())
    assert result["per_fold"]["fold_0"] == old_metrics  # fold 0 was not retrained: its recorded test result is kept
    assert (run / "fold_0" / "fine_tune_log.csv").read_text() == fold_0_log
    assert result["per_fold"]["fold_1"]["fine_tune"]["n"] == 12  # fold 1 trained on the split folds.json recorded
    state = json.loads((run / "state.json").read_text())["phases"]
    assert sorted(state) == ["final/fine_tune", "fold_0/fine_tune", "fold_1/fine_tune"]
    assert (run / "final" / "model.keras").exists()


def _legacy_twin(classifier):
    """The classifier as the code before ResNetBackbone built it: the same layers, the backbone a plain functional
    model (so its .weights.h5 has the old group names)."""
    import keras

    backbone = classifier.get_layer("backbone")
    plain = keras.Model(backbone.input, backbone.output, name="backbone")
    x = classifier.get_layer("preprocess")(classifier.input)
    x = classifier.get_layer("head")(classifier.get_layer("avg_pool")(plain(x)))
    return keras.Model(classifier.input, x, name=classifier.name)


def test_keras_model_saved_by_old_code_loads_and_predicts(tmp_path):
    from meteor_tf.models import build_classifier, freeze, resnet
    from meteor_tf.serving.export import load_keras_model

    current = build_classifier(18, image_size=32, head_units=(16,), head_dropout=(0.1,))
    weights = tmp_path / "model.weights.h5"
    _legacy_twin(current).save_weights(str(weights))
    old = tmp_path / "old.keras"
    with zipfile.ZipFile(old, "w") as z:  # the old file's config and metadata, with weights of the same layers
        z.writestr("metadata.json", (FIXTURE / "model_keras_metadata.json").read_bytes())
        z.writestr("config.json", gzip.decompress((FIXTURE / "model_keras_config.json.gz").read_bytes()))
        z.write(weights, "model.weights.h5")

    loaded = load_keras_model(old)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(loaded.predict(images, verbose=0), current.predict(images, verbose=0), atol=1e-6)
    # the old backbone is a plain functional model: training it in phases says how to rebuild it
    assert not isinstance(loaded.get_layer("backbone"), resnet.ResNetBackbone)
    with pytest.raises(ValueError, match="build_classifier"):
        freeze.set_phase(loaded, "fine_tune")
    rebuilt = build_classifier(18, image_size=32, head_units=(16,), head_dropout=(0.1,))
    rebuilt.set_weights(loaded.get_weights())
    freeze.set_phase(rebuilt, "fine_tune")
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), current.predict(images, verbose=0), atol=1e-6)


def test_checkpoint_of_old_code_is_upgraded_then_loads(tmp_path):
    import h5py
    import keras

    from meteor_tf.experiment.runner import upgrade_checkpoints
    from meteor_tf.models import build_classifier, weights as w
    from meteor_tf.run_dir import RunDir

    saved = build_classifier(18, image_size=32, head_units=(16,), head_dropout=(0.1,))
    saved.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    saved.fit(images, np.array([0, 1, 0, 1]), epochs=1, verbose=0)  # moving statistics and optimizer state
    path = tmp_path / "run" / "fold_1" / "backup_fine_tune" / "latest.weights.h5"
    path.parent.mkdir(parents=True)
    _legacy_twin(saved).save_weights(str(path))
    with h5py.File(path) as f:
        assert sorted(f["layers"]) == ["functional", "functional_1", "global_average_pooling2d", "input_layer",
                                       "preprocess"]  # as the file a b8e2b99 run wrote
    fresh = build_classifier(18, image_size=32, head_units=(16,), head_dropout=(0.1,))
    with pytest.raises(ValueError):
        fresh.load_weights(str(path))
    assert w.is_legacy_classifier_weights(path)

    upgrade_checkpoints(RunDir(tmp_path / "run"))
    assert not w.is_legacy_classifier_weights(path)
    assert not w.upgrade_classifier_weights(path)  # once only
    fresh.load_weights(str(path))
    np.testing.assert_allclose(fresh.predict(images, verbose=0), saved.predict(images, verbose=0), atol=1e-6)


def test_the_upgrade_leaves_a_damaged_checkpoint_to_its_reader(tmp_path):
    from meteor_tf.models import weights as w

    damaged = tmp_path / "partial.weights.h5"
    damaged.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # a file cut short by a kill
    assert not w.upgrade_classifier_weights(damaged)
    assert damaged.read_bytes().startswith(b"\x89HDF")
