"""The paper's classifier: named parts, in-model preprocessing, head, saving, FLOPs."""

import keras
import numpy as np
import pytest

from meteor_tf.config import ExperimentConfig
from meteor_tf.models import classifier
from meteor_tf.models.classifier import Preprocess, build_classifier, build_head

TORCH_MEAN = np.array([0.485, 0.456, 0.406])
TORCH_STD = np.array([0.229, 0.224, 0.225])
CAFFE_BGR = np.array([103.939, 116.779, 123.68])


@pytest.fixture(scope="module")
def small_model():
    return build_classifier(18, image_size=32, normalization="torch")


def gray_batch(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 1)).astype("float32")


def test_named_parts_and_shapes(small_model):
    assert [layer.name for layer in small_model.layers] == ["image", "preprocess", "backbone", "avg_pool", "head"]
    assert small_model.input.shape == (None, 32, 32, 1)
    assert small_model.get_layer("backbone").output.shape == (None, 1, 1, 512)
    head = small_model.get_layer("head")
    assert [layer.name for layer in head.layers] == ["features", "bn0", "fc1", "bn1", "dropout1", "fc2", "bn2",
                                                     "dropout2", "predictions"]
    probabilities = keras.ops.convert_to_numpy(small_model(gray_batch()))
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_head_follows_the_paper():
    head = build_head(512)
    assert [head.get_layer(f"fc{i}").units for i in (1, 2)] == [1024, 512]
    assert [head.get_layer(f"dropout{i}").rate for i in (1, 2)] == [0.5, 0.25]
    assert head.get_layer("fc1").activation.__name__ == "relu"
    predictions = head.get_layer("predictions")
    assert predictions.units == 2 and predictions.activation.__name__ == "softmax"
    dense_params = 512 * 1024 + 1024 + 1024 * 512 + 512 + 512 * 2 + 2
    # fastai's BatchNorms (gamma, beta, moving mean and variance) on the 512 features, and after fc1 and fc2
    assert head.count_params() == dense_params + 4 * (512 + 1024 + 512)
    assert build_head(512, batch_norm=False).count_params() == dense_params
    assert [layer.name for layer in build_head(512, batch_norm=False).layers] == [
        "features", "fc1", "dropout1", "fc2", "dropout2", "predictions"]
    with pytest.raises(ValueError, match="same length"):
        build_head(512, (1024, 512), (0.5,))
    # no hidden layers: softmax on the pooled features (the Fashion-MNIST pretraining head)
    assert [layer.name for layer in build_head(512, (), (), num_classes=10).layers] == ["features", "bn0",
                                                                                         "predictions"]


def test_size_agnostic_model_accepts_several_sizes():
    model = build_classifier(18, image_size=None)
    for size in (32, 48):
        assert keras.ops.convert_to_numpy(model(gray_batch(1, size))).shape == (1, 2)


def test_rejects_images_below_32_pixels():
    with pytest.raises(ValueError, match="at least 32"):
        build_classifier(18, image_size=31)


def test_keras_layout_needs_depth_50_or_101():
    with pytest.raises(ValueError, match="torchvision"):
        build_classifier(18, layout="keras", image_size=32)


@pytest.mark.parametrize("mode,expected", [
    ("unit", lambda v: np.repeat(v / 127.5 - 1, 3, axis=-1)),
    ("torch", lambda v: (v / 255.0 - TORCH_MEAN) / TORCH_STD),
    ("caffe", lambda v: v - CAFFE_BGR),  # gray: BGR = RGB, so the flip shows only in the means' order
])
def test_preprocess_three_channel_modes(mode, expected):
    values = gray_batch(2, 4)
    out = keras.ops.convert_to_numpy(Preprocess(mode, 3)(values))
    np.testing.assert_allclose(out, expected(values.astype(np.float64)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("mode,expected", [
    ("unit", lambda v: v / 127.5 - 1),
    ("torch", lambda v: (v / 255.0 - TORCH_MEAN.mean()) / TORCH_STD.mean()),
    ("caffe", lambda v: v - CAFFE_BGR.mean()),
])
def test_preprocess_one_channel_stem_uses_mean_constants(mode, expected):
    values = gray_batch(2, 4)
    out = keras.ops.convert_to_numpy(Preprocess(mode, 1)(values))
    assert out.shape == values.shape
    np.testing.assert_allclose(out, expected(values.astype(np.float64)), rtol=1e-5, atol=1e-4)


def test_preprocess_caffe_flips_real_rgb_input():
    rgb = np.zeros((1, 1, 1, 3), "float32") + np.array([10.0, 20.0, 30.0], "float32")
    out = keras.ops.convert_to_numpy(Preprocess("caffe", 3)(rgb))
    np.testing.assert_allclose(out[0, 0, 0], np.array([30.0, 20.0, 10.0]) - CAFFE_BGR, rtol=1e-5)


def test_preprocess_config_round_trip():
    layer = Preprocess("caffe", 1, name="preprocess")
    clone = Preprocess.from_config(layer.get_config())
    assert (clone.mode, clone.channels, clone.name) == ("caffe", 1, "preprocess")
    with pytest.raises(ValueError, match="normalization"):
        Preprocess("imagenet")


def test_keras_file_round_trip_gives_equal_outputs(tmp_path):
    model = build_classifier(18, image_size=32, normalization="caffe", head_units=(16,), head_dropout=(0.5,),
                             stem_channels=1)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    images = gray_batch(3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(model(images)),
                               rtol=1e-6, atol=1e-6)
    assert loaded.get_layer("preprocess").get_config()["mode"] == "caffe"
    assert loaded.get_layer("backbone").get_layer("conv1").kernel.shape == (7, 7, 1, 64)


def test_build_from_config_uses_the_weights_normalization():
    config = ExperimentConfig(depth=18, image_size=32, pretrain="imagenet", head_units=(8,), head_dropout=(0.1,))
    model = classifier.build_classifier_from_config(config)
    assert model.get_layer("preprocess").mode == "torch"
    assert model.input.shape == (None, 32, 32, 1)
    assert model.get_layer("head").get_layer("fc1").units == 8


def test_mixed_precision_keeps_float32_probabilities():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_classifier(18, image_size=32, head_units=(8,), head_dropout=(0.0,))
        assert model.get_layer("backbone").get_layer("conv1").compute_dtype == "float16"
        assert model.get_layer("head").get_layer("predictions").compute_dtype == "float32"
        probabilities = model(gray_batch())
        assert keras.backend.standardize_dtype(probabilities.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# torchvision's documented GFLOPS (= multiply-adds) at 224 px for the ImageNet models, fc of 1000 included.
TORCHVISION_GMACS = {18: 1.81, 34: 3.66, 50: 4.09, 101: 7.80}


@pytest.mark.parametrize("depth", [18, 50, pytest.param(34, marks=pytest.mark.slow),
                                   pytest.param(101, marks=pytest.mark.slow)])
def test_flops_match_torchvision_figures(depth):
    flops = classifier.flops_per_image(depth, "torchvision", 224, head_units=(), num_classes=1000)
    assert flops / 2e9 == pytest.approx(TORCHVISION_GMACS[depth], abs=0.006)


def test_flops_scale_with_image_area():
    small = classifier.flops_per_image(18, image_size=64, head_units=(), num_classes=2)
    large = classifier.flops_per_image(18, image_size=128, head_units=(), num_classes=2)
    assert large / small == pytest.approx(4.0, rel=0.02)


def test_the_paper_head_lr_diverges_without_the_fastai_batch_norms():
    """Adam at the paper's head LR (0.03) on pooled-ReLU-like features: the plain Dense head blows up in the first
    epoch (the bug seen on Fashion-MNIST-18 features: loss ~35), the fastai-style head with BatchNorm does not."""
    rng = np.random.default_rng(0)
    features = rng.exponential(0.9, size=(480, 512)).astype("float32")  # non-negative, mean ~0.9, like GAP output
    labels = (features[:, :8].sum(axis=1) > np.median(features[:, :8].sum(axis=1))).astype("int32")
    first_epoch_loss = {}
    for batch_norm in (False, True):
        keras.utils.set_random_seed(0)
        head = build_head(512, batch_norm=batch_norm)
        head.compile(keras.optimizers.Adam(0.03), "sparse_categorical_crossentropy")
        first_epoch_loss[batch_norm] = head.fit(features, labels, epochs=1, batch_size=32, verbose=0).history["loss"][0]
    assert first_epoch_loss[False] > 20
    assert first_epoch_loss[True] < 10


def test_head_batch_norm_statistics_catch_up_within_a_few_epochs():
    """The head's BatchNorms keep fastai's (PyTorch's) momentum 0.1: after ~100 steps their moving statistics match
    the features, so inference normalises as training did. With Keras's default 0.99 a third of the initial variance
    1 was still there (pooled features have variance ~1e-3): at inference bn0 shrank the features ~10x and the
    head-only model called every capture a meteor (tests/evaluation/test_learns.py shows the run-level effect)."""
    rng = np.random.default_rng(0)
    features = rng.normal(0.05, 0.03, size=(1600, 512)).astype("float32")
    labels = rng.integers(0, 2, 1600).astype("int32")
    head = build_head(512)
    head.compile(keras.optimizers.Adam(1e-6), "sparse_categorical_crossentropy")
    head.fit(features, labels, epochs=1, batch_size=16, verbose=0)  # 100 steps
    bn0 = head.get_layer("bn0")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn0.moving_mean), features.mean(0), atol=0.01)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(bn0.moving_variance), features.var(0), rtol=0.5)


def test_a_model_trained_under_bfloat16_is_served_in_float32_with_the_same_weights():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = build_classifier(18, image_size=32, head_units=(8,), head_dropout=(0.0,))
        assert mixed.get_layer("backbone").layers[1].dtype_policy.name == "mixed_bfloat16"
        served = classifier.as_float32(mixed)  # under the training policy still, as right after a run
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert served is not mixed
    assert {layer.dtype_policy.name for layer in classifier._all_layers(served)} == {"float32"}
    for a, b in zip(mixed.get_weights(), served.get_weights()):
        np.testing.assert_array_equal(a, b)
    reference = build_classifier(18, image_size=32, head_units=(8,), head_dropout=(0.0,))
    reference.set_weights(mixed.get_weights())
    x = gray_batch()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(served(x)), keras.ops.convert_to_numpy(reference(x)),
                               rtol=1e-6, atol=1e-6)
    assert classifier.as_float32(reference) is reference


@pytest.mark.parametrize("pooling, width", [("avg", 512), ("max", 512), ("concat", 1024)])
def test_pooling_choices(pooling, width):
    model = build_classifier(18, image_size=64, head_units=(8,), head_dropout=(0.0,), pooling=pooling)
    features = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    x = gray_batch(size=64)
    f = keras.ops.convert_to_numpy(features(x))
    m = keras.ops.convert_to_numpy(model.get_layer("backbone")(model.get_layer("preprocess")(x)))
    assert f.shape == (2, width)
    mean, top = m.mean(axis=(1, 2)), m.max(axis=(1, 2))
    expected = {"avg": mean, "max": top, "concat": np.concatenate([top, mean], -1)}[pooling]
    np.testing.assert_allclose(f, expected, rtol=1e-5, atol=1e-6)
    reloaded = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert type(reloaded.get_layer("avg_pool")) is type(model.get_layer("avg_pool"))


def test_three_channel_images_reach_the_stem_unreplicated():
    model = build_classifier(18, image_size=32, image_channels=3)
    assert model.input.shape == (None, 32, 32, 3)
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    pre = keras.ops.convert_to_numpy(model.get_layer("preprocess")(x))
    np.testing.assert_allclose(pre, x / 127.5 - 1, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="image_channels"):
        build_classifier(18, image_size=32, image_channels=2)
