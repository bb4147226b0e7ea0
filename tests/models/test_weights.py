"""Weight loading from the files users really have, written here from random reference models (nothing downloads)."""

import importlib.util

import h5py
import keras
import numpy as np
import pytest
import resnet_reference as ref
from safetensors.numpy import save_file

from meteor_tf.models import resnet, weights
from meteor_tf.models.weights import WeightsNotFoundError, load_imagenet_weights


@pytest.fixture(autouse=True)
def empty_caches(tmp_path, monkeypatch):
    """Point every default weights place at an empty folder, so no test sees (or fills) a real cache."""
    for variable in ("KERAS_HOME", "TORCH_HOME", "XDG_CACHE_HOME", "HF_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(variable, str(tmp_path / "cache" / variable.lower()))


def write_safetensors(path, depth, seed=0, prefix=""):
    state = ref.random_state_dict(depth, seed)
    save_file({prefix + key: value for key, value in state.items()}, str(path))
    return state


def assert_loaded(backbone, state):
    """Every torchvision tensor is in the backbone, kernels transposed OIHW → HWIO."""
    names = {"weight": None, "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        module, parameter = key.rsplit(".", 1)
        layer = backbone.get_layer(module)
        if value.ndim == 4:
            np.testing.assert_array_equal(np.array(layer.kernel), value.transpose(2, 3, 1, 0), err_msg=key)
        else:
            variable = getattr(layer, names[parameter] or "gamma")
            np.testing.assert_array_equal(np.array(variable), value, err_msg=key)


@pytest.mark.parametrize("depth", [18, 34, 50, pytest.param(101, marks=pytest.mark.slow)])
def test_safetensors_every_key_loads_with_matching_shapes(tmp_path, depth):
    path = tmp_path / f"resnet{depth}.safetensors"
    state = write_safetensors(path, depth, seed=depth)
    backbone = resnet.build_backbone(depth)
    assert load_imagenet_weights(backbone, depth, "torchvision", source=str(path)) == str(path)
    assert_loaded(backbone, state)


def test_timm_style_prefix_is_stripped(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    state = write_safetensors(path, 18, prefix="module.")
    backbone = resnet.build_backbone(18)
    load_imagenet_weights(backbone, 18, "torchvision", source=str(path))
    assert_loaded(backbone, state)


def test_rgb_stem_is_summed_into_a_one_channel_stem(tmp_path):
    path = tmp_path / "resnet18.safetensors"
    state = write_safetensors(path, 18)
    backbone = resnet.build_backbone(18, input_shape=(None, None, 1), input_channels=1)
    load_imagenet_weights(backbone, 18, "torchvision", source=str(path))
    expected = state["conv1.weight"].transpose(2, 3, 1, 0).sum(axis=2, keepdims=True)
    np.testing.assert_allclose(np.array(backbone.get_layer("conv1").kernel), expected, rtol=1e-6)


def test_one_channel_stem_sees_gray_as_the_rgb_network_does(tmp_path):
    """Gray replicated into the RGB network = gray into the summed 1-channel stem."""
    path = tmp_path / "resnet18.safetensors"
    write_safetensors(path, 18)
    rgb, gray = resnet.build_backbone(18), resnet.build_backbone(18, input_shape=(None, None, 1), input_channels=1)
    for backbone in (rgb, gray):
        load_imagenet_weights(backbone, 18, "torchvision", source=str(path))
    images = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(np.array(gray(images)), np.array(rgb(np.repeat(images, 3, axis=-1))),
                               rtol=1e-4, atol=1e-4)


def test_shape_mismatch_names_the_key(tmp_path):
    state = ref.random_state_dict(18)
    state["layer1.0.conv1.weight"] = np.zeros((64, 64, 1, 1), np.float32)
    save_file(state, str(tmp_path / "bad.safetensors"))
    backbone = resnet.build_backbone(18)
    before = np.array(backbone.get_layer("conv1").kernel)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight") as error:
        load_imagenet_weights(backbone, 18, "torchvision", source=str(tmp_path / "bad.safetensors"))
    assert "(1, 1, 64, 64)" in str(error.value) and "(3, 3, 64, 64)" in str(error.value)
    # all or nothing: nothing was assigned
    np.testing.assert_array_equal(np.array(backbone.get_layer("conv1").kernel), before)


def test_wrong_depth_lists_the_extra_keys(tmp_path):
    path = tmp_path / "resnet34.safetensors"
    write_safetensors(path, 34)
    with pytest.raises(ValueError, match=r"not in the model: .*layer1\.2\."):
        load_imagenet_weights(resnet.build_backbone(18), 18, "torchvision", source=str(path))


def test_torchvision_weights_refuse_the_keras_layout(tmp_path):
    path = tmp_path / "resnet50.safetensors"
    save_file({"conv1.weight": np.zeros((64, 3, 7, 7), np.float32)}, str(path))
    with pytest.raises(ValueError, match="layout=torchvision"):
        load_imagenet_weights(None, 50, "keras", source=str(path))


def test_missing_file_raises_weights_not_found(tmp_path):
    missing = str(tmp_path / "nowhere" / "resnet18.safetensors")
    with pytest.raises(WeightsNotFoundError, match="--weights=PATH") as error:
        load_imagenet_weights(None, 18, "torchvision", source=missing)
    assert isinstance(error.value, FileNotFoundError) and missing in str(error.value)


def test_offline_without_weights_names_every_place_and_the_flag():
    with pytest.raises(WeightsNotFoundError) as error:
        load_imagenet_weights(None, 18, "torchvision", download=False)
    message = str(error.value)
    for place in weights.torchvision_candidates(18):
        assert place in message
    assert weights.TORCHVISION_URLS[18] in message
    assert "--weights=PATH" in message and ".safetensors" in message and "[torch]" in message


def test_offline_keras_layout_names_the_keras_cache_and_url():
    with pytest.raises(WeightsNotFoundError) as error:
        load_imagenet_weights(None, 50, "keras", download=False)
    message = str(error.value)
    assert weights.keras_applications_file(50) in message
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message and "--weights=PATH" in message


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="with torch installed it would download")
def test_default_without_torch_says_downloading_needs_the_torch_extra():
    with pytest.raises(WeightsNotFoundError, match=r"meteor_tf\[torch\]"):
        load_imagenet_weights(None, 18, "torchvision")


def test_default_finds_timm_weights_in_the_hugging_face_cache(tmp_path, monkeypatch):
    hub = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    snapshot = hub / "models--timm--resnet18.tv_in1k" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    state = write_safetensors(snapshot / "model.safetensors", 18)
    backbone = resnet.build_backbone(18)
    assert load_imagenet_weights(backbone, 18, "torchvision", download=False).endswith("model.safetensors")
    assert_loaded(backbone, state)


def test_unknown_format_is_refused(tmp_path):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="format"):
        load_imagenet_weights(None, 18, "torchvision", source=str(path))


# ---- our own backbones (.weights.h5) ----


def test_save_and_load_backbone_round_trip(tmp_path):
    source = resnet.build_backbone(18, input_shape=(32, 32, 3))
    for variable in source.weights:  # moving statistics too
        variable.assign(np.random.default_rng(len(variable.path)).standard_normal(variable.shape).astype("float32"))
    path = weights.save_backbone(source, str(tmp_path / "fmnist" / "resnet18.weights.h5"))
    target = resnet.build_backbone(18)
    weights.load_backbone(target, path)
    for ours, theirs in zip(target.weights, source.weights):
        np.testing.assert_array_equal(np.array(ours), np.array(theirs), err_msg=ours.path)
    # the same file through the ImageNet entry point (--weights=PATH), into a 1-channel stem: summed
    gray = resnet.build_backbone(18, input_shape=(None, None, 1), input_channels=1)
    assert "meteor_tf backbone" in load_imagenet_weights(gray, 18, "torchvision", source=path)
    np.testing.assert_allclose(np.array(gray.get_layer("conv1").kernel),
                               np.array(source.get_layer("conv1").kernel).sum(axis=2, keepdims=True), rtol=1e-6)


def test_save_backbone_wants_the_weights_h5_suffix(tmp_path):
    with pytest.raises(ValueError, match=r"\.weights\.h5"):
        weights.save_backbone(resnet.build_backbone(18), str(tmp_path / "resnet18.h5"))


def test_load_backbone_of_another_depth_names_the_keys(tmp_path):
    path = weights.save_backbone(resnet.build_backbone(18), str(tmp_path / "r18.weights.h5"))
    with pytest.raises(ValueError, match=r"missing from the file: .*layer1\.2\.conv1/kernel"):
        weights.load_backbone(resnet.build_backbone(34), path)
    with pytest.raises(WeightsNotFoundError):
        weights.load_backbone(resnet.build_backbone(18), str(tmp_path / "absent.weights.h5"))


# ---- keras.applications weights (keras layout) ----


@pytest.fixture(scope="module")
def keras_reference_50():
    """keras.applications.ResNet50 (no top) with random weights and random BatchNorm statistics."""
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    return ref.randomise_variables(model, seed=5)


def _check_same_outputs(ours, reference):
    images = np.random.default_rng(3).uniform(-2, 2, (2, 64, 64, 3)).astype("float32")
    expected = np.array(reference(images, training=False))
    actual = np.array(ours(images, training=False))
    assert np.max(np.abs(actual - expected)) / np.max(np.abs(expected)) < 1e-5


def test_keras_applications_legacy_h5_file(tmp_path, keras_reference_50):
    """The format of keras.applications' own download (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)."""
    from keras.src.legacy.saving import legacy_h5_format  # writes that Keras 2 format (test-only helper)

    path = str(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, keras_reference_50)
    ours = resnet.build_backbone(50, "keras", input_shape=(64, 64, 3))
    load_imagenet_weights(ours, 50, "keras", source=path)
    _check_same_outputs(ours, keras_reference_50)


@pytest.mark.slow
def test_keras_3_weights_file_of_a_keras_applications_model(tmp_path, keras_reference_50):
    path = str(tmp_path / "resnet50.weights.h5")
    keras_reference_50.save_weights(path)
    ours = resnet.build_backbone(50, "keras", input_shape=(64, 64, 3))
    load_imagenet_weights(ours, 50, "keras", source=path)
    _check_same_outputs(ours, keras_reference_50)
    # our layer order equals keras.applications', so Keras's positional loader fits too
    direct = resnet.build_backbone(50, "keras", input_shape=(64, 64, 3))
    weights.load_backbone(direct, path)
    _check_same_outputs(direct, keras_reference_50)


def test_keras_default_asks_keras_applications_for_imagenet(keras_reference_50, monkeypatch):
    """weights=None → keras.applications' "imagenet" weights (its own cache/download, stubbed here: no network)."""
    asked = []

    def fake_keras_applications(depth, path, weights):
        asked.append((depth, path, weights))
        return {f"{layer.name}/{v.name}": (v.path, np.array(v)) for layer in keras_reference_50.layers
                for v in layer.weights}

    monkeypatch.setattr(weights, "_from_keras_applications", fake_keras_applications)
    ours = resnet.build_backbone(50, "keras", input_shape=(64, 64, 3))
    assert load_imagenet_weights(ours, 50, "keras") == weights.keras_applications_file(50)
    assert asked == [(50, weights.keras_applications_file(50), "imagenet")]
    _check_same_outputs(ours, keras_reference_50)


def test_keras_default_offline_becomes_weights_not_found(monkeypatch):
    def offline(depth, path, weights):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(weights, "_from_keras_applications", offline)
    with pytest.raises(WeightsNotFoundError, match="name resolution") as error:
        load_imagenet_weights(None, 50, "keras")
    assert weights.KERAS_APPLICATIONS_URL in str(error.value) and "--weights=PATH" in str(error.value)


# ---- optional extras ----


@pytest.mark.torch
def test_pth_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    state = ref.random_state_dict(18)
    path = str(tmp_path / "resnet18-f37072fd.pth")
    torch.save({key: torch.from_numpy(np.asarray(value)) for key, value in state.items()}, path)
    backbone = resnet.build_backbone(18)
    load_imagenet_weights(backbone, 18, "torchvision", source=path)
    assert_loaded(backbone, state)


def test_pth_without_torch_names_the_extra(tmp_path):
    if importlib.util.find_spec("torch") is not None:
        pytest.skip("torch is installed")
    path = tmp_path / "resnet18.pth"
    path.write_bytes(b"not really")
    with pytest.raises(ImportError, match=r"meteor_tf\[torch\]"):
        load_imagenet_weights(resnet.build_backbone(18), 18, "torchvision", source=str(path))


@pytest.mark.hub
def test_keras_hub_preset_directory(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    hub_backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 128, 256, 512],
        stackwise_num_blocks=[2, 2, 2, 2], stackwise_num_strides=[1, 2, 2, 2], block_type="basic_block",
        use_pre_activation=False)
    rng = np.random.default_rng(0)
    for variable in hub_backbone.weights:
        variable.assign(rng.uniform(0.5, 1.5, tuple(variable.shape)).astype("float32"))
    preset = str(tmp_path / "resnet_18_imagenet")
    hub_backbone.save_to_preset(preset)
    ours = resnet.build_backbone(18)
    load_imagenet_weights(ours, 18, "torchvision", source=preset)
    np.testing.assert_array_equal(np.array(ours.get_layer("conv1").kernel),
                                  np.array(hub_backbone.get_layer("conv1_conv").kernel))
    np.testing.assert_array_equal(np.array(ours.get_layer("layer2.0.downsample.1").moving_variance),
                                  np.array(hub_backbone.get_layer("stack1_block0_0_bn").moving_variance))
