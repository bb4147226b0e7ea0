"""meteor_tf.models.conv.Conv2D: same outputs and gradients as keras.layers.Conv2D (its input gradient is computed
as a forward convolution on TensorFlow), same config, and it round-trips through saving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from meteor_tf.models.conv import Conv2D


@pytest.mark.parametrize("kernel, stride, padding, size", [
    (3, 1, "same", 5), (3, 1, "valid", 6), (1, 1, "valid", 4), (3, 2, "valid", 9), (3, 2, "valid", 8),
    (1, 2, "valid", 7), (7, 2, "valid", 13), (3, 2, "valid", 30), (3, 1, "same", 1), (2, 1, "same", 5), (3, 2, "same", 6)])
def test_outputs_and_gradients_equal_keras_conv2d(kernel, stride, padding, size):
    rng = np.random.default_rng(kernel * 100 + stride * 10 + size)
    x = tf.constant(rng.normal(size=(2, size, size, 3)).astype("float32"))
    ours = Conv2D(4, kernel, strides=stride, padding=padding, use_bias=True)
    ref = keras.layers.Conv2D(4, kernel, strides=stride, padding=padding, use_bias=True)
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights([w + 0.1 for w in ours.get_weights()])
    ours.set_weights(ref.get_weights())
    results = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * tf.cos(y))  # a non-uniform output gradient
        results.append([y, *tape.gradient(loss, [x, layer.kernel, layer.bias])])
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)


def test_fast_gradient_is_used_where_it_applies():
    assert Conv2D(4, 3, padding="same")._fast_gradient()
    assert Conv2D(4, 3, strides=2, padding="valid")._fast_gradient()
    assert not Conv2D(4, 2, padding="same")._fast_gradient()  # asymmetric "same" padding: Keras's own path
    assert not Conv2D(4, 3, strides=2, padding="same")._fast_gradient()
    assert not Conv2D(4, 3, dilation_rate=2, padding="same")._fast_gradient()


def test_saved_model_file_loads_back_with_the_same_class(tmp_path):
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, Conv2D(2, 3, padding="same", name="c")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("c")) is Conv2D
    x = np.ones((1, 8, 8, 1), "float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_strided_convolutions_use_the_forward_form_only_on_small_maps():
    layer = Conv2D(4, 3, strides=2, padding="valid")
    assert layer._small_enough_if_strided((None, 9, 9, 3))  # 4x4 output
    assert not layer._small_enough_if_strided((None, 11, 11, 3))  # 5x5
    assert not layer._small_enough_if_strided((None, None, None, 3))
    assert Conv2D(4, 3, padding="same")._small_enough_if_strided((None, 224, 224, 3))
