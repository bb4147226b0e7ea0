"""Fashion-MNIST pretraining: runs when nothing is cached, caches by settings, reuses the cache (tfds mock data)."""

import json

import pytest
import tensorflow_datasets as tfds

from meteor_tf.config import ExperimentConfig
from meteor_tf.models.classifier import build_classifier
from meteor_tf.models.weights import load_backbone
from meteor_tf.training import pretrain
from tests.conftest import require_debian_fashion_mnist


def _config(tmp_path, **changes):
    base = dict(depth=18, pretrain="fashion_mnist", fmnist_backbone="pretrain", fmnist_image_size=32, fmnist_epochs=1, fmnist_examples=32,
                batch_size=16, pretrain_cache_dir=str(tmp_path / "cache"), tfds_data_dir=str(tmp_path / "tfds"),
                image_size=32)
    base.update(changes)
    return ExperimentConfig(**base)


def test_pretrains_when_nothing_is_cached_then_reuses_the_cache(tmp_path, monkeypatch):
    config = _config(tmp_path)
    with tfds.testing.mock_data(num_examples=40):
        path = pretrain.ensure_fashion_mnist_backbone(config)
    assert path.exists() and path.parent == tmp_path / "cache"
    info = json.loads((path.parent / (path.name + ".json")).read_text())
    assert info["train_examples"] == 32 and info["test_examples"] == 40
    correct = info["test_accuracy"] * 40  # counted over exactly the 40 test images
    assert correct == pytest.approx(round(correct), abs=1e-6)
    # the cached backbone loads into the meteor classifier (other image size, 2-class head)
    model = build_classifier(18, "torchvision", 48, normalization="unit")
    load_backbone(model.get_layer("backbone"), str(path))

    def fail(*a, **k):
        raise AssertionError("pretrained again although a cached backbone exists")

    monkeypatch.setattr(pretrain, "pretrain_fashion_mnist", fail)
    assert pretrain.ensure_fashion_mnist_backbone(config) == path


def test_cache_key_follows_the_settings_that_change_the_weights(tmp_path):
    a = pretrain.backbone_cache_path(_config(tmp_path))
    assert pretrain.backbone_cache_path(_config(tmp_path, fmnist_epochs=3)) != a
    assert pretrain.backbone_cache_path(_config(tmp_path, depth=34)) != a
    # settings of the meteor runs that do not touch pretraining share the cached backbone
    assert pretrain.backbone_cache_path(_config(tmp_path, folds=3, augment="on_side", lr_head=0.01)) == a


def test_pretraining_on_real_fashion_mnist_learns(tmp_path):
    """The real pretraining on a slice of the real Fashion-MNIST (Debian's files, prepared offline): 5,000 training
    images, one epoch, 32 px, scored on all 10,000 test images — clearly above the 10% of chance. Under CI the files
    must be there (scripts/setup.sh installs them): it fails instead of skipping."""
    require_debian_fashion_mnist()
    config = _config(tmp_path, fmnist_examples=5000, batch_size=32)
    path = pretrain.ensure_fashion_mnist_backbone(config)
    info = json.loads((path.parent / (path.name + ".json")).read_text())
    assert info["train_examples"] == 5000 and info["test_examples"] == 10000
    assert info["test_accuracy"] >= 0.6, info["test_accuracy"]
