"""TensorFlow's Conv2DBackpropInput against the forward convolution that computes the same input gradient.

    python benchmarks/conv_backprop.py [--batch 32] [--steps 5]

For ResNet shapes (batch 32, stride 1), the input gradient of a convolution timed two ways on this machine:
TensorFlow's own kernel (`tf.raw_ops.Conv2DBackpropInput`, what `tf.GradientTape` runs for keras.layers.Conv2D) and a
forward `tf.nn.conv2d` of the output gradient with the flipped, channel-swapped kernel (what
`meteor_tf.models.conv.Conv2D` runs). Prints a markdown table (median ms of --steps calls after one warm-up) and the
largest relative difference between the two results. Then the training step of the ResNet-18 classifier built with
meteor_tf's Conv2D and with keras.layers.Conv2D (`--step_sizes`).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SHAPES = [  # (channels, spatial, kernel): layer4 .. layer1 of ResNet-18/50 at 32-224 px, and a bottleneck 1x1
    (512, 1, 3), (512, 2, 3), (512, 7, 3), (256, 4, 3), (256, 14, 3), (128, 8, 3), (128, 28, 3), (64, 16, 3),
    (64, 56, 3), (2048, 7, 1)]


def _median_ms(fn, steps: int) -> float:
    fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def conv_rows(batch: int, steps: int):
    import tensorflow as tf

    rows = []
    for channels, hw, k in SHAPES:
        cin = channels if k == 3 else 512
        rng = np.random.default_rng(0)
        x_shape = (batch, hw, hw, cin)
        w = tf.constant(rng.normal(size=(k, k, cin, channels)).astype("float32") * 0.01)
        dy = tf.constant(rng.normal(size=(batch, hw, hw, channels)).astype("float32"))

        @tf.function
        def native():
            return tf.raw_ops.Conv2DBackpropInput(input_sizes=x_shape, filter=w, out_backprop=dy,
                                                  strides=[1, 1, 1, 1], padding="SAME")

        @tf.function
        def forward():
            return tf.nn.conv2d(dy, tf.transpose(tf.reverse(w, [0, 1]), [0, 1, 3, 2]), 1, "SAME")

        a, b = native().numpy(), forward().numpy()
        t_native, t_forward = _median_ms(native, steps), _median_ms(forward, steps)
        rows.append([f"{k}x{k}, {cin}->{channels}", f"{hw}x{hw}", round(t_native, 1), round(t_forward, 1),
                     round(t_native / t_forward, 1), f"{np.abs(a - b).max() / np.abs(a).max():.1e}"])
    return rows


def step_rows(sizes, batch: int, steps: int):
    import keras

    from meteor_tf.models import conv, resnet
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.training.phases import compile_for_phase

    rows = []
    for size in sizes:
        x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 1)).astype("float32")
        y = np.arange(batch) % 2
        times = {}
        for name, cls in (("meteor_tf Conv2D", conv.Conv2D), ("keras.layers.Conv2D", keras.layers.Conv2D)):
            resnet.Conv2D = cls  # the builders look the class up at build time
            try:
                model = compile_for_phase(build_classifier(18, "torchvision", size), 1e-3)
            finally:
                resnet.Conv2D = conv.Conv2D
            times[name] = _median_ms(lambda: model.train_on_batch(x, y), steps)
        ours, theirs = times["meteor_tf Conv2D"], times["keras.layers.Conv2D"]
        rows.append([size, round(theirs), round(ours), round(theirs / ours, 2), round(batch / ours * 1000, 1)])
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--step_sizes", type=int, nargs="*", default=[32, 64, 112, 224],
                   help="image sizes of the ResNet-18 training-step comparison (none: skip it)")
    args = p.parse_args(argv)
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import common

    print(f"load average at start: {os.getloadavg()}")
    print(common.markdown_table(["conv", "map", "Conv2DBackpropInput ms", "forward conv ms", "speed-up",
                                 "max rel. diff"], conv_rows(args.batch, args.steps)))
    if args.step_sizes:
        print()
        print(f"ResNet-18 classifier, train_on_batch, batch {args.batch}, Adam, every layer trainable:")
        print(common.markdown_table(["px", "keras.layers.Conv2D ms", "meteor_tf Conv2D ms", "speed-up",
                                     "img/s (meteor_tf)"], step_rows(args.step_sizes, args.batch, args.steps)))
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
