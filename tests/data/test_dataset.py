import types

import numpy as np
import pytest
import tensorflow as tf

from meteor_tf.config import ExperimentConfig
from meteor_tf.data import dataset, preprocess


def test_folder_examples(class_folder):
    examples = dataset.load_examples(ExperimentConfig(data=str(class_folder), image_size=32))
    assert examples.images.shape == (6, 32, 32, 1) and examples.images.dtype == np.float32
    assert 0 <= examples.images.min() and examples.images.max() <= 255
    assert examples.labels.dtype == np.int32 and list(examples.labels) == [0, 0, 0, 1, 1, 1]
    assert list(examples.ids) == sorted(examples.ids)
    assert examples.sub_labels == [""] * 6 and examples.skipped == []
    assert examples.source == str(class_folder)
    group = dict(zip(examples.ids, examples.groups))
    assert group["meteor/camA_0001__m1.jpg"] == group["non_meteor/camA_0001__n1.png"]
    assert len(set(examples.groups)) == 4
    assert examples.class_counts() == {"meteor": 3, "non_meteor": 3}
    part = examples.subset([4, 1])
    assert list(part.ids) == [examples.ids[4], examples.ids[1]] and part.images.shape[0] == 2


def test_training_and_serving_paths_give_equal_tensors(class_folder):
    """Folder → load_examples (tf.data) and a serving signature on the file's bytes give the same input."""
    examples = dataset.load_examples(ExperimentConfig(data=str(class_folder), image_size=48))
    index = list(examples.ids).index("meteor/camA_0001__m1.jpg")
    serve = tf.function(lambda b: preprocess.preprocess_bytes_batch(b, 48),
                        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    jpeg = (class_folder / "meteor" / "camA_0001__m1.jpg").read_bytes()
    np.testing.assert_array_equal(serve(tf.constant([jpeg])).numpy()[0], examples.images[index])


class FakeNightSky:
    """Stands in for meteor_tf.data.night_sky with its documented API."""

    SUB_LABELS = ("meteor", "plane", "satellite")

    def __init__(self):
        self.calls = []
        fake = self

        class NightSky:
            def __init__(self, data_dir=None):
                names = fake.SUB_LABELS
                self.info = types.SimpleNamespace(features={"sub_label": types.SimpleNamespace(names=names)})

        self.NightSky = NightSky

    def load_night_sky(self, data_dir=None, meteors=1000, non_meteors=660, seed=0, small=False):
        self.calls.append(dict(data_dir=data_dir, meteors=meteors, non_meteors=non_meteors, seed=seed))
        n = meteors + non_meteors
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 255, size=(n, 20, 30, 1)).astype(np.uint8)
        labels = np.array([0] * meteors + [1] * non_meteors, np.int64)
        return tf.data.Dataset.from_tensor_slices({
            "image": images, "label": labels,
            "sub_label": np.where(labels == 0, 0, 1 + np.arange(n) % 2),
            "scene_id": (np.arange(n) // 2).astype(np.int64),
            "kind": np.array(["synthetic"] * n),
            "example_id": np.array([f"ex{(n - i):03d}" for i in range(n)]),  # reverse order on purpose
        })


def test_embedded_examples_through_the_documented_api(monkeypatch, tmp_path):
    fake = FakeNightSky()
    monkeypatch.setattr(dataset, "_night_sky_module", lambda: fake)
    config = ExperimentConfig(image_size=32, embedded_meteors=4, embedded_non_meteors=3, seed=123,
                              tfds_data_dir=str(tmp_path))
    examples = dataset.load_examples(config)
    # The data seed is fixed, whatever the training seed.
    assert fake.calls == [dict(data_dir=str(tmp_path), meteors=4, non_meteors=3, seed=0)]
    assert examples.images.shape == (7, 32, 32, 1) and examples.images.dtype == np.float32
    assert list(examples.ids) == sorted(examples.ids)
    assert examples.labels.dtype == np.int32 and sorted(examples.labels) == [0, 0, 0, 0, 1, 1, 1]
    assert set(examples.sub_labels) <= set(FakeNightSky.SUB_LABELS)
    assert all((s == "meteor") == (y == 0) for s, y in zip(examples.sub_labels, examples.labels))
    assert examples.groups.dtype == np.int64 and len(set(examples.groups)) == 4  # scene_id = i // 2
    # The same preprocessing as everything else.
    raw = next(iter(fake.load_night_sky(meteors=4, non_meteors=3).skip(6)))  # "ex001", first once sorted
    np.testing.assert_array_equal(examples.images[0], preprocess.to_model_input(raw["image"], 32).numpy())
    assert "embedded" in examples.source


def test_real_night_sky_when_available(tmp_path):
    config = ExperimentConfig(image_size=32, embedded_meteors=6, embedded_non_meteors=4,
                              tfds_data_dir=str(tmp_path))
    examples = dataset.load_examples(config)
    assert examples.images.shape == (10, 32, 32, 1)
    assert examples.class_counts() == {"meteor": 6, "non_meteor": 4}
    assert list(examples.ids) == sorted(examples.ids) and len(set(examples.ids)) == 10
    assert all(examples.sub_labels)
