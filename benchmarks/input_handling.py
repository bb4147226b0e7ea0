"""How a capture becomes model input, measured: the paper's recipe on one hold-out split per input rule.

Reads an exported night_sky folder (`meteor-dataset export --seed=1 --out=DIR`: file names carry scene id, sub-label
and kind), decodes every capture at full size once, then for each input rule makes the S×S model inputs and trains
the shipped Fashion-MNIST ResNet-18 the recipe's way (head on frozen features, then fine-tuning with the first 6
convs frozen, Adam, cosine decay) on one stratified, scene-grouped 75/25 split. Prints accuracy and AUC overall, per
kind and per sub-label for each rule, beside the CPU's flags.

    python benchmarks/input_handling.py --data=/work/night_sky_seed1 --rules=resize,maxpool,norm_maxpool
"""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np
import tensorflow as tf

NAME = re.compile(r"scene(?P<scene>\d+)__ns-\d+_(?P<sub>.+?)_(?P<kind>frame|gmn_crop|allsky_cutout)\.[a-z]+$")


def load_folder(data: str):
    """Gray uint8 arrays (full size), labels (0 meteor, 1 non_meteor), sub-labels, kinds, scene ids."""
    from PIL import Image

    out = {k: [] for k in ("img", "label", "sub", "kind", "scene")}
    for label, cls in enumerate(("meteor", "non_meteor")):
        for name in sorted(os.listdir(os.path.join(data, cls))):
            m = NAME.match(name)
            if not m:
                raise SystemExit(f"{data}/{cls}/{name}: not an exported night_sky file name")
            with Image.open(os.path.join(data, cls, name)) as im:
                out["img"].append(np.asarray(im.convert("L")))
            out["label"].append(label)
            out["sub"].append(m["sub"])
            out["kind"].append(m["kind"])
            out["scene"].append(int(m["scene"]))
    return {k: (v if k == "img" else np.asarray(v)) for k, v in out.items()}


# Measured alternatives to the package's rule (`preprocess.to_model_input`, "resize"); none beat it on seed 1 (README).
RULES = ("resize", "maxpool", "norm", "norm_max")
NORM_BACKGROUND = 16.0  # background-normalised rules: sky median → this grey level,
NORM_LEVELS_PER_SIGMA = 8.0  # one robust noise sigma → this many levels (saturates at ~30 sigma)


def model_input(image, size: int, rule: str):
    """(H, W, C) uint8 → (S, S, 1) float32 0..255 by `rule`: "resize" is the package's rule; "maxpool" pads to a
    square and takes the maximum over f×f blocks (a one-pixel streak keeps its full brightness); "norm" resizes,
    then maps the sky median and robust noise sigma to fixed grey levels; "norm_max" does that after the block max."""
    import tensorflow as tf

    from meteor_tf.data import preprocess

    if rule == "resize":
        return preprocess.to_model_input(image, size)
    image = preprocess.to_grayscale(tf.cast(image, tf.float32))
    if rule == "maxpool":
        image = preprocess.pad_to_square(_block_max(preprocess.pad_to_square(image), size), size)
    else:
        image = preprocess.fit_longer_side(image, size) if rule == "norm" else _block_max(image, size)
        image = preprocess.pad_to_square(_normalise_background(image), size)
    return tf.ensure_shape(tf.clip_by_value(image, 0.0, 255.0), [size, size, 1])


def make_inputs(images, rule: str, size: int) -> np.ndarray:
    import tensorflow as tf

    fn = tf.function(lambda im: model_input(im, size, rule), reduce_retracing=True)
    return np.stack([fn(tf.constant(im[..., None])).numpy() for im in images])


def _hw(image):
    shape = tf.shape(image)
    return shape[-3], shape[-2]


def _upscale_small(image, size):
    """Bilinear upscale so that the longer side is at least `size` (no-op for larger images)."""
    height, width = _hw(image)
    side = tf.maximum(height, width)

    def up():
        scale = tf.cast(size, tf.float32) / tf.cast(side, tf.float32)
        new = tf.cast(tf.math.ceil(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
        return tf.image.resize(image, tf.maximum(new, 1), method="bilinear")

    return tf.cond(side < size, up, lambda: image)


def _block_max(image, size):
    """Downscale by the maximum over f×f blocks, f = ceil(longer side / size): a one-pixel streak stays at its
    full brightness. The edges are padded by repeating the last row/column, so no black seams appear."""
    image = _upscale_small(image, size)
    height, width = _hw(image)
    f = (tf.maximum(height, width) + size - 1) // size
    out_h, out_w = (height + f - 1) // f, (width + f - 1) // f
    rank = len(image.shape)
    pad = [[0, 0]] * (rank - 3) + [[0, out_h * f - height], [0, out_w * f - width], [0, 0]]
    image = tf.pad(image, pad, mode="SYMMETRIC")
    lead = tf.shape(image)[:-3]
    blocks = tf.reshape(image, tf.concat([lead, [out_h, f, out_w, f, tf.shape(image)[-1]]], 0))
    return tf.reduce_max(blocks, axis=[-4, -2])


def _median_last(values):
    ordered = tf.sort(values, axis=-1)
    return tf.gather(ordered, tf.shape(values)[-1] // 2, axis=-1)


def _normalise_background(image):
    """Per image: sky median → NORM_BACKGROUND, one robust noise sigma (1.4826 × median absolute deviation,
    at least 0.1 grey level) → NORM_LEVELS_PER_SIGMA levels. A camera's gain, offset and noise then give the
    same picture; a faint streak a few sigma above the sky becomes visible."""
    flat = tf.reshape(image, tf.concat([tf.shape(image)[:-3], [-1]], 0))
    median = _median_last(flat)
    sigma = tf.maximum(1.4826 * _median_last(tf.abs(flat - median[..., None])), 0.1)
    median, sigma = median[..., None, None, None], sigma[..., None, None, None]
    return NORM_BACKGROUND + (image - median) / sigma * NORM_LEVELS_PER_SIGMA


def train_and_score(x, y, train, test, args):
    import keras

    from meteor_tf.models import freeze
    from meteor_tf.models.classifier import build_classifier
    from meteor_tf.models.presets import preset_path
    from meteor_tf.models.weights import load_backbone
    from meteor_tf.training.phases import compile_for_phase

    keras.utils.set_random_seed(args.seed)
    model = build_classifier(18, "torchvision", image_size=x.shape[1], normalization="unit")
    load_backbone(model.get_layer("backbone"), str(preset_path("resnet18_fashion_mnist")))
    steps = int(np.ceil(len(train) / args.batch_size))
    for phase, epochs, lr in (("head", args.head_epochs, args.lr_head), ("fine_tune", args.fine_tune_epochs,
                                                                        args.lr_fine_tune)):
        if epochs <= 0:
            continue
        freeze.set_phase(model, phase, frozen_convs=6)
        compile_for_phase(model, lr)
        model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(lr, epochs * steps, alpha=1e-3)
        model.fit(_training_data(x[train], y[train], args), epochs=epochs, verbose=0)
    return model.predict(x[test], batch_size=64, verbose=0)[:, 0]  # P(meteor)


def _training_data(x, y, args):
    """Shuffled batches of the training part, through the augmentation `args.augment` names ("flips": horizontal
    and vertical flips only, which lose no pixel)."""
    import keras
    import tensorflow as tf

    from meteor_tf.data.augment import build_augmentation

    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=args.seed).batch(args.batch_size)
    if args.augment == "flips":
        aug = keras.layers.RandomFlip("horizontal_and_vertical", seed=args.seed)
    else:
        aug = build_augmentation(args.augment, seed=args.seed)
    if aug is not None:
        ds = ds.map(lambda a, b: (aug(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(2)


def report(rule, p_meteor, y, groups_by, test):
    from sklearn.metrics import roc_auc_score

    correct = (p_meteor > 0.5) == (y[test] == 0)
    auc = roc_auc_score(y[test] == 0, p_meteor)
    lines = [f"{rule}: accuracy {correct.mean():.3f}, AUC {auc:.3f}"]
    for title, g in groups_by.items():
        g = g[test]
        lines.append("  " + title + ": " + ", ".join(f"{v} {correct[g == v].mean():.2f} ({int((g == v).sum())})"
                                                     for v in sorted(set(g))))
    return "\n".join(lines), float(correct.mean()), float(auc)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="an exported night_sky folder (meteor-dataset export)")
    p.add_argument("--rules", default="resize,maxpool", help=f"comma-separated input rules of {RULES}")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--head_epochs", type=int, default=3)
    p.add_argument("--fine_tune_epochs", type=int, default=7)
    p.add_argument("--lr_head", type=float, default=0.03)
    p.add_argument("--lr_fine_tune", type=float, default=0.003)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default="none", choices=("none", "flips", "on_side", "complete"))
    p.add_argument("--mixed_precision", default="float32", choices=("float32", "mixed_bfloat16"))
    args = p.parse_args(argv)

    import keras
    from sklearn.model_selection import StratifiedGroupKFold

    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import device_record

    keras.mixed_precision.set_global_policy(args.mixed_precision)
    rec = device_record()
    print("CPU:", rec["cpu"], "|", rec["peak"], "| policy", args.mixed_precision)
    print("settings:", vars(args))
    t0 = time.time()
    d = load_folder(args.data)
    print(f"loaded {len(d['label'])} captures in {time.time() - t0:.0f} s")
    y = d["label"]
    train, test = next(StratifiedGroupKFold(4, shuffle=True, random_state=args.seed).split(y, d["sub"], d["scene"]))
    results = []
    for rule in args.rules.split(","):
        t1 = time.time()
        x = make_inputs(d["img"], rule, args.image_size)
        p_meteor = train_and_score(x, y, train, test, args)
        text, acc, auc = report(rule, p_meteor, y, {"kind": d["kind"], "sub": d["sub"]}, test)
        print(text + f"\n  ({time.time() - t1:.0f} s)", flush=True)
        results.append((rule, acc, auc))
    print("\nrule                 accuracy   AUC")
    for rule, acc, auc in results:
        print(f"{rule:<20} {acc:>8.3f} {auc:>6.3f}")


if __name__ == "__main__":
    main()
