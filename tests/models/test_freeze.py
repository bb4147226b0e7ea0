"""Training phases: exactly which layers train, and that a training step leaves frozen layers untouched."""

import keras
import numpy as np
import pytest

from meteor_tf.models import freeze, resnet
from meteor_tf.models.classifier import build_classifier

FIRST_SIX = {
    (18, "torchvision"): ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2",
                          "layer2.0.conv1"],
    (34, "torchvision"): ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.1.conv1", "layer1.1.conv2",
                          "layer1.2.conv1"],
    (50, "torchvision"): ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3", "layer1.0.downsample.0",
                          "layer1.1.conv1"],
    (50, "keras"): ["conv1_conv", "conv2_block1_1_conv", "conv2_block1_2_conv", "conv2_block1_3_conv",
                    "conv2_block1_0_conv", "conv2_block2_1_conv"],
}
FIRST_SIX_BATCH_NORMS = {
    (18, "torchvision"): ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1", "layer1.1.bn2", "layer2.0.bn1"],
    (50, "torchvision"): ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer1.0.bn3", "layer1.0.downsample.1",
                          "layer1.1.bn1"],
    (50, "keras"): ["conv1_bn", "conv2_block1_1_bn", "conv2_block1_2_bn", "conv2_block1_3_bn", "conv2_block1_0_bn",
                    "conv2_block2_1_bn"],
}


@pytest.fixture(scope="module")
def model():
    """A tiny ResNet-18 classifier (32 px, small head) shared by the tests; each sets its own phase."""
    return build_classifier(18, image_size=32, head_units=(8,), head_dropout=(0.0,))


@pytest.mark.parametrize("depth,layout", list(FIRST_SIX))
def test_first_six_convs(depth, layout):
    backbone = resnet.build_backbone(depth, layout)
    assert freeze.first_convs(backbone, 6) == FIRST_SIX[(depth, layout)]


@pytest.mark.parametrize("depth,layout", list(FIRST_SIX_BATCH_NORMS))
def test_batch_norm_of_each_frozen_conv(depth, layout):
    backbone = resnet.build_backbone(depth, layout)
    assert [backbone.batch_norm_for(name).name for name in FIRST_SIX[(depth, layout)]] == \
        FIRST_SIX_BATCH_NORMS[(depth, layout)]


@pytest.mark.parametrize("depth,layout", [(18, "torchvision"), (50, "torchvision"), (50, "keras")])
def test_each_recorded_batch_norm_reads_its_conv_in_the_graph(depth, layout):
    backbone = resnet.build_backbone(depth, layout)
    convs = [layer for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sorted(conv for conv, _ in backbone.convs) == sorted(layer.name for layer in convs)
    for conv, batch_norm in backbone.convs:
        assert backbone.get_layer(batch_norm).input._keras_history.operation.name == conv


def test_conv_order_covers_every_conv_once(model):
    backbone = model.get_layer("backbone")
    names = freeze.first_convs(model, 20)  # all of ResNet-18's: 1 stem + 16 block convs + 3 shortcuts
    assert sorted(names) == sorted(l.name for l in backbone.layers if isinstance(l, keras.layers.Conv2D))
    assert names[-3:] == ["layer4.0.downsample.0", "layer4.1.conv1", "layer4.1.conv2"]
    with pytest.raises(ValueError, match="only 20"):
        freeze.first_convs(model, 21)


def _trainable_names(sub_model):
    return {layer.name for layer in sub_model.layers if layer.weights and layer.trainable}


def _weighted_names(sub_model):
    return {layer.name for layer in sub_model.layers if layer.weights}


def test_head_phase_freezes_the_whole_backbone(model):
    freeze.set_phase(model, "head")
    backbone, head = model.get_layer("backbone"), model.get_layer("head")
    assert not backbone.trainable and _trainable_names(backbone) == set()
    assert _trainable_names(head) == {"bn0", "fc1", "bn1", "predictions"}
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in head.trainable_weights}


def test_fine_tune_phase_freezes_the_first_six_convs_and_their_batch_norms(model):
    freeze.set_phase(model, "fine_tune", frozen_convs=6)
    backbone = model.get_layer("backbone")
    frozen = set(FIRST_SIX[(18, "torchvision")]) | set(FIRST_SIX_BATCH_NORMS[(18, "torchvision")])
    assert _weighted_names(backbone) - _trainable_names(backbone) == frozen
    assert _trainable_names(model.get_layer("head")) == {"bn0", "fc1", "bn1", "predictions"}


def test_all_phase_and_zero_frozen_convs_train_everything(model):
    for phase, frozen_convs in (("all", 6), ("fine_tune", 0)):
        freeze.set_phase(model, phase, frozen_convs)
        backbone = model.get_layer("backbone")
        assert _trainable_names(backbone) == _weighted_names(backbone)


def test_rejects_unknown_phase(model):
    with pytest.raises(ValueError, match="phase"):
        freeze.set_phase(model, "linear_probe")


def _snapshot(backbone, names):
    return {name: [np.array(w) for w in backbone.get_layer(name).get_weights()] for name in names}


def _train_one_step(model):
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (4, 32, 32, 1)).astype("float32")
    model.train_on_batch(images, np.array([0, 1, 0, 1]))


def test_fine_tune_step_leaves_frozen_convs_and_batch_norms_unchanged(model):
    freeze.set_phase(model, "fine_tune")
    backbone = model.get_layer("backbone")
    frozen = FIRST_SIX[(18, "torchvision")] + FIRST_SIX_BATCH_NORMS[(18, "torchvision")]
    trained = ["layer2.0.conv2", "layer2.0.bn2", "layer4.1.conv2"]
    before = _snapshot(backbone, frozen + trained)
    _train_one_step(model)
    after = _snapshot(backbone, frozen + trained)
    for name in frozen:  # kernels, gamma/beta and the moving statistics alike
        for old, new in zip(before[name], after[name]):
            np.testing.assert_array_equal(old, new, err_msg=name)
    for name in trained:
        assert any(not np.array_equal(old, new) for old, new in zip(before[name], after[name])), name


def test_head_step_leaves_the_backbone_and_its_batch_norm_statistics_unchanged(model):
    freeze.set_phase(model, "head")
    backbone, head = model.get_layer("backbone"), model.get_layer("head")
    before = [np.array(w) for w in backbone.get_weights()]
    head_before = [np.array(w) for w in head.get_weights()]
    _train_one_step(model)
    for old, new in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert any(not np.array_equal(old, new) for old, new in zip(head_before, head.get_weights()))


def test_trainable_report(model):
    freeze.set_phase(model, "fine_tune")
    lines = []
    report = freeze.trainable_report(model, print_fn=lines.append)
    assert report.trainable_params == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert report.trainable_params + report.non_trainable_params == model.count_params()
    assert "backbone/conv1" in report.frozen_layers and "backbone/layer2.0.conv2" in report.trainable_layers
    assert "head/predictions" in report.trainable_layers
    assert "trainable parameters" in lines[0] and "backbone/layer1.0.downsample" not in lines[0]
