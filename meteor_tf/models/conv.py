"""`Conv2D`: keras.layers.Conv2D whose input gradient, on the TensorFlow backend, is a forward convolution.

For a stride-1 convolution the gradient with respect to its input is itself a convolution: the output gradient
convolved with the kernel flipped in space and with its in/out channels swapped ("full" padding for a "valid"
convolution, "same" for an odd-sized "same" one). TensorFlow's CPU kernel for that gradient (Conv2DBackpropInput)
is slow at ResNet shapes — 2× to 17× slower than the forward convolution that computes the same numbers
(`benchmarks/conv_backprop.py`; e.g. 3×3, 512 channels on 2×2 maps, batch 32: 230 ms against 14 ms), which made a
ResNet-18 training step at 32–64 px cost over 1 s whatever the image size (now 4.5× faster at 32 px, 2.4× at 64,
1.1× at 224). Own layer because Keras has no switch for it;
it changes nothing else (same weights, names, config and forward graph), and other backends (JAX, torch) or strided,
dilated or grouped convolutions use Keras's Conv2D unchanged.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="meteor_tf")
class Conv2D(layers.Conv2D):
    """keras.layers.Conv2D with a fast input gradient on TensorFlow for stride-1 convolutions (see the module)."""

    def _small_enough_if_strided(self, input_shape) -> bool:
        """A strided convolution's input gradient as a forward convolution runs over the zero-interleaved output
        gradient: faster than TensorFlow's kernel on small maps only (≤ 4×4 outputs: 117 → 14 ms for 3×3,
        256→512 channels, batch 32), slower on large ones (28×28: 84 → 199 ms; benchmarks/conv_backprop.py)."""
        if tuple(self.strides) == (1, 1):
            return True
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            return False
        out_h = (height - self.kernel_size[0]) // self.strides[0] + 1
        out_w = (width - self.kernel_size[1]) // self.strides[1] + 1
        return out_h * out_w <= 16

    def _fast_gradient(self) -> bool:
        kernel_h, kernel_w = self.kernel_size
        strides = tuple(self.strides)
        return (keras.backend.backend() == "tensorflow" and strides[0] == strides[1]
                and tuple(self.dilation_rate) == (1, 1) and self.groups == 1
                and self.data_format == "channels_last"
                and (self.padding == "valid" or (strides == (1, 1) and kernel_h % 2 == 1 and kernel_w % 2 == 1)))

    def convolution_op(self, inputs, kernel):
        if not self._fast_gradient() or not self._small_enough_if_strided(inputs.shape):
            return super().convolution_op(inputs, kernel)
        return conv2d_forward_input_gradient(inputs, kernel, self.strides[0], self.padding.upper())


def conv2d_forward_input_gradient(inputs, kernel, stride: int, padding: str):
    """tf.nn.conv2d (NHWC; stride 1 "SAME" with an odd kernel, or "VALID" with any stride) whose input gradient is
    computed as a forward convolution: the output gradient, zero-interleaved by the stride and fully padded,
    convolved with the flipped, channel-swapped kernel."""
    import tensorflow as tf

    @tf.custom_gradient
    def conv(x, w):
        def grad(dy):
            flipped = tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2])
            if padding == "SAME":
                dx = tf.nn.conv2d(dy, flipped, 1, "SAME")
            else:
                kh, kw = w.shape[0], w.shape[1]
                spread = _interleave_zeros(dy, stride)
                # rows/columns of x past the last window got no gradient: pad them at the end
                extra_h = tf.shape(x)[1] - (tf.shape(spread)[1] + kh - 1)
                extra_w = tf.shape(x)[2] - (tf.shape(spread)[2] + kw - 1)
                padded = tf.pad(spread, [[0, 0], [kh - 1, kh - 1 + extra_h], [kw - 1, kw - 1 + extra_w], [0, 0]])
                dx = tf.nn.conv2d(padded, flipped, 1, "VALID")
            dw = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=tf.shape(w), out_backprop=dy,
                                                 strides=[1, stride, stride, 1], padding=padding)
            return dx, dw

        return tf.nn.conv2d(x, w, stride, padding), grad

    # read the variable outside: its value is an input of the custom gradient, so the tape reaches the variable
    return conv(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


def _interleave_zeros(t, stride: int):
    """(N, H, W, C) -> (N, (H-1)*s+1, (W-1)*s+1, C) with s-1 zeros between neighbouring rows and columns."""
    import tensorflow as tf

    if stride == 1:
        return t
    n, h, w, c = tf.unstack(tf.shape(t))
    zeros = tf.zeros_like(t)
    t = tf.stack([t] + [zeros] * (stride - 1), axis=3)  # N, H, W, s, C
    t = tf.reshape(t, [n, h, w * stride, c])[:, :, :(w - 1) * stride + 1]
    zeros = tf.zeros_like(t)
    t = tf.stack([t] + [zeros] * (stride - 1), axis=2)  # N, H, s, W', C
    return tf.reshape(t, [n, h * stride, (w - 1) * stride + 1, c])[:, :(h - 1) * stride + 1]
