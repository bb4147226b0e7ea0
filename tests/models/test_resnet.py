"""ResNet backbones: Table 1 structure, parameter counts and outputs against independent references."""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import resnet_reference as ref
from safetensors.numpy import save_file

from meteor_tf.models import resnet, weights

KERAS_APPLICATIONS = {50: "ResNet50", 101: "ResNet101"}
# keras.applications' include_top=False counts (checked against it below).
KERAS_LAYOUT_PARAMETERS = {50: 23_587_712, 101: 42_658_176}


def relative_error(ours, reference):
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.mark.slow
def test_keras_layout_parameter_count_matches_keras_applications_101():
    reference = keras.applications.ResNet101(include_top=False, weights=None)
    assert reference.count_params() == KERAS_LAYOUT_PARAMETERS[101]
    assert resnet.build_backbone(101, "keras").count_params() == reference.count_params()


def test_torchvision_layout_layer_names_are_state_dict_keys():
    """Every conv/BN variable maps 1:1 onto a torchvision key (the weight loader relies on it; depth 50 is covered
    by the loader's own all-keys check in the numpy-reference test)."""
    depth = 18
    backbone = resnet.build_backbone(depth)
    ours = {f"{layer.name}.{variable.name}" for layer in backbone.layers for variable in layer.weights}
    renamed = {"kernel": "weight", "gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
               "moving_variance": "running_var"}
    ours = {key.rsplit(".", 1)[0] + "." + renamed[key.rsplit(".", 1)[1]] for key in ours}
    theirs = {k for k in ref.torchvision_shapes(depth) if not k.startswith("fc.") and "num_batches" not in k}
    assert ours == theirs


@pytest.mark.parametrize("depth", [18, 34])
def test_keras_layout_only_for_bottleneck_depths(depth):
    with pytest.raises(ValueError, match="torchvision"):
        resnet.build_backbone(depth, "keras")


def test_rejects_unknown_depth_and_small_inputs():
    with pytest.raises(ValueError, match="depth"):
        resnet.build_backbone(152)
    with pytest.raises(ValueError, match="at least 32"):
        resnet.build_backbone(18, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="input_channels"):
        resnet.build_backbone(18, input_shape=(None, None, 1), input_channels=3)


@pytest.mark.parametrize("depth,layout", [(18, "torchvision"), (34, "torchvision"), (50, "torchvision"),
                                          (101, "torchvision"), (50, "keras"),
                                          pytest.param(101, "keras", marks=pytest.mark.slow)])
def test_builds_at_224_with_a_7x7_feature_map_and_the_reference_parameter_count(depth, layout):
    backbone = resnet.build_backbone(depth, layout, input_shape=(224, 224, 3))
    assert backbone.output.shape == (None, 7, 7, resnet.feature_channels(depth))
    if layout == "torchvision":
        assert backbone.count_params() == ref.backbone_parameter_count(depth)
    else:
        assert backbone.count_params() == KERAS_LAYOUT_PARAMETERS[depth]


def test_reference_counts_are_the_known_torchvision_figures():
    # torchvision's published totals minus fc (512·1000+1000 or 2048·1000+1000), plus 2 running stats per BN channel
    assert ref.backbone_parameter_count(18) == 11_689_512 - 513_000 + 9_600 == 11_186_112
    assert ref.backbone_parameter_count(50) == 25_557_032 - 2_049_000 + 53_120 == 23_561_152


def test_stem_halves_224_to_112_then_56_like_torchvision():
    backbone = resnet.build_backbone(18, input_shape=(224, 224, 3))
    assert backbone.get_layer("conv1").output.shape[1:3] == (112, 112)
    assert backbone.get_layer("maxpool").output.shape[1:3] == (56, 56)
    assert backbone.get_layer("layer2.0.conv1").output.shape[1:3] == (28, 28)


@pytest.mark.parametrize("depth,layout", [(18, "torchvision"), (50, "keras")])
def test_builds_at_64_with_a_2x2_feature_map(depth, layout):
    backbone = resnet.build_backbone(depth, layout, input_shape=(64, 64, 3))
    assert backbone.output.shape == (None, 2, 2, resnet.feature_channels(depth))
    out = backbone(np.zeros((1, 64, 64, 3), np.float32))
    assert out.shape == (1, 2, 2, resnet.feature_channels(depth))


def test_one_channel_stem():
    backbone = resnet.build_backbone(18, input_shape=(32, 32, 1), input_channels=1)
    assert tuple(backbone.get_layer("conv1").kernel.shape) == (7, 7, 1, 64)
    assert backbone.count_params() == 11_186_112 - 7 * 7 * 2 * 64


def _randomise(model, seed):
    return ref.randomise_variables(model, seed)


@pytest.mark.parametrize("depth", [50, pytest.param(101, marks=pytest.mark.slow)])
def test_keras_layout_matches_keras_applications_output(depth):
    reference = getattr(keras.applications, KERAS_APPLICATIONS[depth])(include_top=False, weights=None,
                                                                      input_shape=(64, 64, 3))
    _randomise(reference, seed=depth)
    ours = resnet.build_backbone(depth, "keras", input_shape=(64, 64, 3))
    assert ours.count_params() == reference.count_params()
    for layer in reference.layers:
        if layer.weights:
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    images = np.random.default_rng(1).uniform(-2, 2, (2, 64, 64, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(reference(images, training=False))
    actual = keras.ops.convert_to_numpy(ours(images, training=False))
    assert relative_error(actual, expected) < 1e-6  # same ops: measured 0.0


@pytest.mark.parametrize("depth,size", [(18, 64), (50, 64), pytest.param(34, 64, marks=pytest.mark.slow),
                                        pytest.param(101, 64, marks=pytest.mark.slow), (18, 45)])
def test_torchvision_layout_matches_numpy_reference(tmp_path, depth, size):
    """Our backbone with a torchvision safetensors file loaded = torchvision's forward pass written in numpy."""
    state = ref.random_state_dict(depth, seed=depth)
    path = str(tmp_path / f"resnet{depth}.safetensors")
    save_file(state, path)
    backbone = resnet.build_backbone(depth, input_shape=(size, size, 3))
    weights.load_imagenet_weights(backbone, depth, "torchvision", source=path)
    images = np.random.default_rng(2).uniform(-2, 2, (2, size, size, 3)).astype("float32")
    expected = ref.forward(state, depth, images)
    actual = keras.ops.convert_to_numpy(backbone(images, training=False))
    assert actual.shape == expected.shape
    assert relative_error(actual, expected) < 1e-5  # measured ~8e-7 (float32 vs float64)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None and os.environ.get("CI") != "true",
                    reason="jax is not installed (Keras's JAX backend; the test extra installs it, CI requires it)")
def test_builders_run_on_the_jax_backend_with_the_tensorflow_numbers(tmp_path):
    """The same weights give the same probabilities on Keras's JAX backend as on TensorFlow (the models are pure
    Keras, the claim the GPU runs rest on)."""
    import keras

    from meteor_tf.models import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(18, image_size=32)
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 1)).astype("float32")
    model.save_weights(tmp_path / "m.weights.h5")
    np.save(tmp_path / "images.npy", images)
    code = ("import sys, json, numpy as np, keras; assert keras.backend.backend() == 'jax'\n"
            "from meteor_tf.models import build_classifier\n"
            "m = build_classifier(18, image_size=32)\n"
            "m.load_weights(sys.argv[1] + '/m.weights.h5')\n"
            "p = m.predict(np.load(sys.argv[1] + '/images.npy'), verbose=0)\n"
            "print(json.dumps(np.asarray(p, 'float64').tolist()))\n")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    jax_probabilities = np.array(json.loads(result.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(jax_probabilities, model.predict(images, verbose=0), atol=1e-5)


@pytest.mark.parametrize("depth,layout", [(18, "torchvision"), (50, "keras")])
def test_backbone_knows_its_structure_and_serialises_it(depth, layout):
    backbone = resnet.build_backbone(depth, layout, input_shape=(64, 64, 3))
    assert (backbone.depth, backbone.layout, backbone.feature_channels) == (depth, layout,
                                                                            resnet.feature_channels(depth))
    config = backbone.get_config()
    assert {k: config[k] for k in ("depth", "layout", "input_shape", "input_channels")} == \
        {"depth": depth, "layout": layout, "input_shape": [64, 64, 3], "input_channels": 3}
    twin = resnet.ResNetBackbone.from_config(config)
    assert [layer.name for layer in twin.layers] == [layer.name for layer in backbone.layers]
    assert twin.convs == backbone.convs and twin.stage_ends == backbone.stage_ends
    assert len(backbone.stage_ends) == 4 and backbone.get_layer(backbone.stage_ends[-1]).output is backbone.output


def test_saved_classifier_reloads_with_a_resnet_backbone(tmp_path):
    from meteor_tf.models.classifier import build_classifier

    model = build_classifier(18, image_size=32, head_units=(8,), head_dropout=(0.0,))
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 1)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", compile=False)
    backbone = loaded.get_layer("backbone")
    assert isinstance(backbone, resnet.ResNetBackbone) and backbone.depth == 18
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)
