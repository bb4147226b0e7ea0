"""How a capture becomes model input, measured: the paper's recipe on one hold-out split per input rule.

Reads an exported night_sky folder (`meteor-dataset export --seed=1 --out=DIR`: file names carry scene id, sub-label
and kind), decodes every capture at full size once, then for each input rule makes the S×S model inputs and trains
the shipped Fashion-MNIST ResNet-18 the recipe's way (head on frozen features, then fine-tuning with the first 6
convs frozen, Adam, cosine decay) on one stratified, scene-grouped 75/25 split. Prints accuracy and AUC overall, per
kind and per sub-label for each rule, beside the CPU's flags.

    python benchmarks/input_handling.py --data=/work/night_sky_seed1 --rules=resize,maxpool,norm_maxpool

`--train_data=DIR [--train_count=N]` trains on another export (e.g. `meteor-dataset export --seed=2 --meteors=6000
--non_meteors=4000`) and scores the same test part of `--data`: how accuracy grows with the number of training
captures. `--adabn` re-estimates the backbone's BatchNorm statistics on the training images first.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import numpy as np
import tensorflow as tf

from meteor_tf.data import preprocess
from meteor_tf.data.night_sky import render

NAME = re.compile(r"scene(?P<scene>\d+)__ns-\d+_(?P<sub>.+?)_(?P<kind>" + "|".join(render.KINDS) + r")\.[a-z]+$")


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


# The package's rules (`preprocess.INPUT_RULES`: "resize", "detect") and measured alternatives (README: input handling).
RULES = ("resize", "maxpool", "norm", "norm_max", "detect", "detect_extent", "detect_fixed", "detect_masked",
         "views", "views_wide")
# three-channel rules: the 3 channels the stem takes are three views around the detected structure, not one gray
# replicated — (native window sides as multiples of S, then the whole capture resized)
VIEWS = {"views": (2, 8), "views_wide": (2, 4)}
NORM_BACKGROUND = 16.0  # background-normalised rules: sky median → this grey level,
NORM_LEVELS_PER_SIGMA = 8.0  # one robust noise sigma → this many levels (saturates at ~30 sigma)


def model_input(image, size: int, rule: str):
    """(H, W, C) uint8 → (S, S, 1) float32 0..255 by `rule`: "resize" and "detect" are the package's rules;
    "detect_*" are variants of "detect" (DETECT_VARIANTS, `extent_crop`); "maxpool" pads to a
    square and takes the maximum over f×f blocks (a one-pixel streak keeps its full brightness); "norm" resizes,
    then maps the sky median and robust noise sigma to fixed grey levels; "norm_max" does that after the block max."""
    if rule in preprocess.INPUT_RULES:
        return preprocess.to_model_input(image, size, rule)
    image = preprocess.to_grayscale(tf.cast(image, tf.float32))
    if rule in VIEWS:
        centre_y, centre_x = preprocess.detection_centre(image)
        out = [preprocess.window_around(image, centre_y, centre_x, k * size, size) for k in VIEWS[rule]]
        out.append(preprocess.pad_to_square(preprocess.fit_longer_side(image, size), size))
        return tf.ensure_shape(tf.clip_by_value(tf.concat(out, -1), 0.0, 255.0), [size, size, 3])
    if rule in DETECT_VARIANTS:
        return tf.ensure_shape(preprocess.detection_window(image, size, **DETECT_VARIANTS[rule]), [size, size, 1])
    if rule == "detect_extent":
        return tf.ensure_shape(extent_crop(image, size), [size, size, 1])
    if rule == "maxpool":
        image = preprocess.pad_to_square(preprocess.block_max(preprocess.pad_to_square(image), size), size)
    else:
        image = preprocess.fit_longer_side(image, size) if rule == "norm" else preprocess.block_max(image, size)
        image = preprocess.pad_to_square(_normalise_background(image), size)
    return tf.ensure_shape(tf.clip_by_value(image, 0.0, 255.0), [size, size, 1])


def folder_inputs(data: str, rule: str, size: int, count: int = 0, seed: int = 0):
    """Model inputs (N, S, S, 1), labels and kinds of an exported folder, converted while reading (a 10,000-capture
    folder does not fit in memory at full size); `count` > 0 keeps a random, label-stratified `count` of them."""
    from PIL import Image

    names = [(label, cls, n) for label, cls in enumerate(("meteor", "non_meteor"))
             for n in sorted(os.listdir(os.path.join(data, cls))) if NAME.match(n)]
    if count:
        rng = np.random.default_rng(seed)
        labels = np.array([label for label, _, _ in names])
        keep = np.concatenate([rng.permutation(np.flatnonzero(labels == v))[:round(count * (labels == v).mean())]
                               for v in (0, 1)])
        names = [names[i] for i in np.sort(keep)]
    fn = tf.function(lambda im: model_input(im, size, rule), reduce_retracing=True)
    x = []
    for label, cls, n in names:
        with Image.open(os.path.join(data, cls, n)) as im:
            x.append(fn(tf.constant(np.asarray(im.convert("L"))[..., None])).numpy())
    return np.stack(x), np.array([label for label, _, _ in names]), np.array([NAME.match(n)["kind"] for _, _, n in names])


def make_inputs(images, rule: str, size: int) -> np.ndarray:
    import tensorflow as tf

    fn = tf.function(lambda im: model_input(im, size, rule), reduce_retracing=True)
    return np.stack([fn(tf.constant(im[..., None])).numpy() for im in images])


# variants of the package's "detect" rule (`preprocess.detection_window`: fixed 2·S window, bands masked, top-hat
# widened), to measure what each part brings; "detect_extent" spans the structure's extent instead (`extent_crop`)
DETECT_VARIANTS = {"detect_fixed": {"mask_bands": False, "widen": False}, "detect_masked": {"widen": False}}


def extent_crop(image, size):
    """(H, W, 1) float gray → (size, size, 1): a square window of the capture spanning its line-like structure's
    extent (where the unwidened `preprocess.line_response` exceeds 30% of its peak, ×1.2, at least `size`), centred
    on it; no bands masked."""
    score, f = preprocess.line_response(image, widen=False)
    mask = score > 0.3 * tf.reduce_max(score)
    rows = tf.cast(tf.where(tf.reduce_any(mask, 1))[:, 0], tf.int32)
    cols = tf.cast(tf.where(tf.reduce_any(mask, 0))[:, 0], tf.int32)
    y0, y1 = tf.reduce_min(rows) * f, (tf.reduce_max(rows) + 1) * f
    x0, x1 = tf.reduce_min(cols) * f, (tf.reduce_max(cols) + 1) * f
    side = tf.maximum(tf.cast(tf.cast(tf.maximum(y1 - y0, x1 - x0), tf.float32) * 1.2, tf.int32), size)
    return preprocess.window_around(image, (y0 + y1) // 2, (x0 + x1) // 2, side, size)


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
    model = build_classifier(18, "torchvision", image_size=x.shape[1], normalization="unit",
                             image_channels=x.shape[-1], pooling=args.pooling)
    load_backbone(model.get_layer("backbone"), str(preset_path("resnet18_fashion_mnist")))
    if args.adabn:
        adapt_batch_norm(model, x[train], args.seed)
    steps = int(np.ceil(len(train) / args.batch_size))
    for phase, epochs, lr in (("head", args.head_epochs, args.lr_head), ("fine_tune", args.fine_tune_epochs,
                                                                        args.lr_fine_tune)):
        if epochs <= 0:
            continue
        freeze.set_phase(model, phase, frozen_convs=args.frozen_convs)
        compile_for_phase(model, lr)
        model.optimizer.learning_rate = keras.optimizers.schedules.CosineDecay(lr, epochs * steps, alpha=1e-3)
        model.fit(_training_data(x[train], y[train], args), epochs=epochs, verbose=0)
    return model.predict(x[test], batch_size=64, verbose=0)[:, 0], model  # P(meteor)


def adapt_batch_norm(model, images, seed, count=256):
    """AdaBN (Li et al. 2016): the backbone's BatchNorm statistics re-estimated on `count` training images (one
    forward pass in training mode with momentum 0), so the frozen layers normalise night-sky activations, not
    Fashion-MNIST's."""
    import keras

    backbone = model.get_layer("backbone")
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    kept = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    pick = np.random.default_rng(seed).permutation(len(images))[:count]
    backbone(model.get_layer("preprocess")(tf.constant(images[pick])), training=True)
    for layer, momentum in zip(norms, kept):
        layer.momentum = momentum


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


def score_folder(model, folder: str, rule: str, size: int) -> str:
    """AUC, meteor recall and false alarms at 0.5 of a trained model on any labelled folder (meteor/, non_meteor/),
    whole images and centre-square crops, through `rule`: a diagnosis only; nothing is chosen on it."""
    from PIL import Image
    from sklearn.metrics import roc_auc_score

    images, labels = [], []
    for label, cls in enumerate(("meteor", "non_meteor")):
        for name in sorted(os.listdir(os.path.join(folder, cls))):
            with Image.open(os.path.join(folder, cls, name)) as im:
                images.append(np.asarray(im.convert("L")))
            labels.append(label)
    is_meteor = np.asarray(labels) == 0
    lines = []
    for view, views in (("whole", images), ("centre crop", [_centre_square(im) for im in images])):
        p = model.predict(make_inputs(views, rule, size), batch_size=64, verbose=0)[:, 0]
        lines.append(f"  {folder} ({view}): AUC {roc_auc_score(is_meteor, p):.3f}, meteors found "
                     f"{int((p[is_meteor] > 0.5).sum())}/{int(is_meteor.sum())}, false alarms "
                     f"{int((p[~is_meteor] > 0.5).sum())}/{int((~is_meteor).sum())}")
    return "\n".join(lines)


def _centre_square(image):
    h, w = image.shape[:2]
    side = min(h, w)
    return image[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]


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
    p.add_argument("--frozen_convs", type=int, default=6)
    p.add_argument("--pooling", default="avg", choices=("avg", "max", "concat"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--augment", default="none", choices=("none", "flips", "on_side", "complete"))
    p.add_argument("--adabn", action="store_true", help="re-estimate the backbone's BatchNorm statistics on 256 "
                   "training images before the head phase")
    p.add_argument("--train_data", default="", help="train on this exported folder (another seed) instead of the "
                   "training part of --data; the test part of --data is scored either way")
    p.add_argument("--train_count", type=int, default=0, help="with --train_data: a random stratified subset of "
                   "this many captures (0: all)")
    p.add_argument("--score_folder", default="", help="also score each trained model on this labelled folder "
                   "(meteor/, non_meteor/; e.g. ../shared/real_captures): a diagnosis, never used to choose")
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
        if args.train_data:
            x_tr, y_tr, _ = folder_inputs(args.train_data, rule, args.image_size, args.train_count, args.seed)
            print(f"  {len(y_tr)} training captures from {args.train_data}", flush=True)
            x = np.concatenate([x_tr, make_inputs([d["img"][i] for i in test], rule, args.image_size)])
            yy = np.concatenate([y_tr, y[test]])
            tr, te = np.arange(len(y_tr)), len(y_tr) + np.arange(len(test))
            groups = {k: np.concatenate([np.full(len(y_tr), ""), d[k][test]]) for k in ("kind", "sub")}
            p_meteor, model = train_and_score(x, yy, tr, te, args)
            text, acc, auc = report(rule, p_meteor, yy, groups, te)
        else:
            x = make_inputs(d["img"], rule, args.image_size)
            p_meteor, model = train_and_score(x, y, train, test, args)
            text, acc, auc = report(rule, p_meteor, y, {"kind": d["kind"], "sub": d["sub"]}, test)
        print(text + f"\n  ({time.time() - t1:.0f} s)", flush=True)
        if args.score_folder:
            print(score_folder(model, args.score_folder, rule, args.image_size), flush=True)
        results.append((rule, acc, auc))
    print("\nrule                 accuracy   AUC")
    for rule, acc, auc in results:
        print(f"{rule:<20} {acc:>8.3f} {auc:>6.3f}")


if __name__ == "__main__":
    main()
