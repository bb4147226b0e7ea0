"""Learnability probe for the embedded night_sky dataset: is it learnable, and by more than pixel statistics?

Renders the captures straight from the generator (no tfds build), decodes the JPEGs, applies the model's input
rule (`preprocess.to_model_input`: pad to square, antialiased resize to --image_size), then on ONE stratified
group hold-out split (scenes never straddle it; stratified by sub-label so every sub-label is in the test part)
compares:
  - the pixel-statistics baseline (`meteor_tf.data.baseline`: logistic regression on an intensity histogram of
    the full-size capture, what `meteor-dataset baseline` scores),
  - the best single-feature rule (a threshold on one baseline feature, chosen on the training part): the dataset
    must not be trivially separable,
  - a small CNN (five 3x3 convs, 25 epochs) or the package's ResNet-18 (--model=resnet18), from scratch,
and prints accuracy per sub-label and per kind (frame / gmn_crop / allsky_cutout).

    python benchmarks/learnability.py                       # 1,000 + 660, seed 0, 64 px (~10-15 min on 2 cores)
    python benchmarks/learnability.py --meteors=300 --non_meteors=200 --epochs=8
    python benchmarks/learnability.py --montage=/tmp/montage.png   # 64 px meteors vs satellites vs airplanes
    python benchmarks/learnability.py --model=resnet18 --epochs=8  # the package's ResNet-18 from scratch

Rendered arrays are cached in --cache_dir (keyed by counts, seed, size and the builder's version), so reruns train
at once.
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np


def render_arrays(meteors: int, non_meteors: int, seed: int, image_size: int, small: bool = False,
                  cache_dir: str | None = None) -> dict:
    """Model inputs (N, S, S) uint8-range float32, labels, sub-labels, kinds, scene ids and baseline features."""
    from meteor_tf.data.night_sky import builder, render

    import hashlib
    import inspect

    code = hashlib.sha1(inspect.getsource(render).encode()).hexdigest()[:8]  # an edited renderer never hits the cache
    small_tag = "_small" if small else ""
    key = f"ns_v{builder.VERSION}_{code}_m{meteors}_n{non_meteors}_s{seed}_{image_size}px{small_tag}.npz"
    path = os.path.join(cache_dir, key) if cache_dir else None
    if path and os.path.exists(path):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    import tensorflow as tf
    from PIL import Image
    from tqdm.auto import tqdm

    from meteor_tf.data import baseline, preprocess

    resize = tf.function(lambda im: preprocess.to_model_input(im, image_size), reduce_retracing=True)
    out = {k: [] for k in ("x", "label", "sub_label", "kind", "scene_id", "features", "shape")}
    gen = render.generate_examples(meteors, non_meteors, seed, small)
    for _, ex in tqdm(gen, total=meteors + non_meteors, desc="render", unit="capture"):
        img = np.asarray(Image.open(io.BytesIO(ex["image"])))  # through JPEG, as the dataset stores it
        out["x"].append(resize(tf.constant(img[..., None])).numpy()[..., 0].astype(np.float16))
        out["features"].append(baseline.pixel_features([img])[0])
        out["label"].append(ex["label"])
        out["sub_label"].append(render.SUB_LABELS.index(ex["sub_label"]))
        out["kind"].append(render.KINDS.index(ex["kind"]))
        out["scene_id"].append(ex["scene_id"])
        out["shape"].append(img.shape)
    arrays = {k: np.asarray(v) for k, v in out.items()}
    if path:
        from meteor_tf import io as mio

        with mio.atomic_path(path) as partial:  # a killed run leaves no half-written cache
            np.savez_compressed(partial, **arrays)
    return arrays


def holdout_split(sub_label, scene_id, test_fraction: float = 0.25, seed: int = 0):
    """Train / test indices: StratifiedGroupKFold on sub-labels with scenes as groups, one fold as the test part."""
    from sklearn.model_selection import StratifiedGroupKFold

    k = int(round(1 / test_fraction))
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return next(cv.split(np.zeros(len(sub_label)), sub_label, scene_id))


def best_single_feature(features, y, train, test):
    """(name, test accuracy) of the best threshold on one baseline feature, thresholds chosen on `train`."""
    from meteor_tf.data.baseline import FEATURE_NAMES

    best = ("", 0.0, 0.0)
    for j, name in enumerate(FEATURE_NAMES):
        f = features[train, j]
        for thr in np.unique(np.quantile(f, np.linspace(0.02, 0.98, 49))):
            for sign in (1, -1):
                acc = float(((sign * (f - thr) > 0).astype(int) == y[train]).mean())
                if acc > best[1]:
                    best = (name, acc, (thr, sign, j))
    name, _, (thr, sign, j) = best
    return name, float(((sign * (features[test, j] - thr) > 0).astype(int) == y[test]).mean())


def small_cnn(image_size: int):
    """Five 3x3 convs (16-96 filters), random flips, global average + max pooling (a thin streak is a few pixels:
    max pooling keeps it). ~25 MMAC per 64 px image: a few seconds an epoch on 2 free cores."""
    import keras
    from keras import layers

    inp = keras.Input((image_size, image_size, 1))
    x = layers.RandomFlip("horizontal_and_vertical")(inp)  # active in training only
    x = layers.Rescaling(1 / 255.0)(x)
    for i, filters in enumerate((16, 16, 32, 64, 96)):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)  # few steps an epoch: moving stats must keep up
        x = layers.ReLU()(x)
        if i > 0:
            x = layers.MaxPooling2D()(x)
    x = layers.Concatenate()([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    x = layers.Dropout(0.3)(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inp, out)
    return model


def resnet18(image_size: int):
    """The package's ResNet-18 classifier (torchvision layout, paper head), from scratch, behind random flips."""
    import keras

    from meteor_tf.models.classifier import build_classifier

    inp = keras.Input((image_size, image_size, 1))
    x = keras.layers.RandomFlip("horizontal_and_vertical")(inp)
    out = build_classifier(18, image_size=image_size, normalization="unit", num_classes=2)(x)
    return keras.Model(inp, keras.layers.Lambda(lambda p: p[:, 1:])(out))  # P(non_meteor), like small_cnn


def train_cnn(x, y, train, test, image_size: int, epochs: int, seed: int = 0, model_name: str = "small_cnn"):
    """Test-part probabilities of meteor-vs-not (label 1 = non_meteor) from a CNN trained on `train`."""
    import keras

    keras.utils.set_random_seed(seed)
    model = small_cnn(image_size) if model_name == "small_cnn" else resnet18(image_size)
    steps = epochs * int(np.ceil(len(train) / 32))
    lr = keras.optimizers.schedules.CosineDecay(1e-3, steps)  # annealed: the last epoch is not a noisy one
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy", metrics=["accuracy"])
    xs = x[..., None].astype(np.float32)
    model.fit(xs[train], y[train].astype(np.float32), batch_size=32, epochs=epochs, shuffle=True, verbose=2,
              validation_data=(xs[test], y[test].astype(np.float32)))
    return model.predict(xs[test], batch_size=64, verbose=0)[:, 0]


def table(rows, names, correct_by_model) -> str:
    """Per-group accuracy table: rows = group index per test example."""
    head = f"{'group':<22}{'n':>5}" + "".join(f"{m:>12}" for m in correct_by_model)
    lines = [head, "-" * len(head)]
    for g, name in enumerate(names):
        m = rows == g
        if not m.any():
            continue
        lines.append(f"{name:<22}{int(m.sum()):>5}" +
                     "".join(f"{float(c[m].mean()):>12.3f}" for c in correct_by_model.values()))
    return "\n".join(lines)


def montage(arrays: dict, out_path: str, per_row: int = 10) -> str:
    """PNG: one row of model inputs per sub-label group (meteors, satellites, airplanes) — can a person tell?"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from meteor_tf.data.night_sky import render

    groups = ["meteor", "meteor_faint", "meteor_short", "meteor_dashed", "satellite", "airplane", "empty_sky"]
    fig, axes = plt.subplots(len(groups), per_row, figsize=(per_row * 1.3, len(groups) * 1.45), squeeze=False)
    for r, g in enumerate(groups):
        idx = np.nonzero(arrays["sub_label"] == render.SUB_LABELS.index(g))[0][:per_row]
        for c in range(per_row):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(idx):
                ax.imshow(arrays["x"][idx[c]].astype(np.float32), cmap="gray", vmin=0, vmax=255,
                          interpolation="nearest")
                ax.set_title(render.KINDS[arrays["kind"][idx[c]]][:6], fontsize=6)
        axes[r, 0].text(-0.1, 0.5, g, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=90)
    plt.close(fig)
    return out_path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meteors", type=int, default=1000)
    p.add_argument("--non_meteors", type=int, default=660)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--test_fraction", type=float, default=0.25)
    p.add_argument("--cache_dir", default="/tmp/night_sky_probe", help="rendered arrays are kept here ('' = none)")
    p.add_argument("--montage", default="", help="also write a montage PNG of model inputs here")
    p.add_argument("--model", default="small_cnn", choices=("small_cnn", "resnet18"),
                   help="resnet18: the package's ResNet-18 from scratch (~6x slower than small_cnn)")
    p.add_argument("--no_cnn", action="store_true", help="only the baseline and the single-feature rule")
    args = p.parse_args(argv)

    from meteor_tf.data.night_sky import render

    t0 = time.time()
    a = render_arrays(args.meteors, args.non_meteors, args.seed, args.image_size, cache_dir=args.cache_dir or None)
    print(f"rendered/loaded {len(a['label'])} captures in {time.time() - t0:.0f} s")
    y = a["label"].astype(np.int64)
    kinds = a["kind"]
    print("kinds:", {k: int((kinds == i).sum()) for i, k in enumerate(render.KINDS)},
          "| meteor share per kind:", {k: round(float(1 - y[kinds == i].mean()), 3)
                                       for i, k in enumerate(render.KINDS) if (kinds == i).any()})
    if args.montage:
        print("montage:", montage(a, args.montage))
    train, test = holdout_split(a["sub_label"], a["scene_id"], args.test_fraction, args.seed)

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(a["features"][train], y[train])
    correct = {"baseline": clf.predict(a["features"][test]) == y[test]}
    name, acc1 = best_single_feature(a["features"], y, train, test)
    majority = float(max(y[test].mean(), 1 - y[test].mean()))
    if not args.no_cnn:
        t1 = time.time()
        prob = train_cnn(a["x"], y, train, test, args.image_size, args.epochs, args.seed, args.model)
        correct[args.model] = (prob > 0.5).astype(int) == y[test]
        print(f"CNN trained in {time.time() - t1:.0f} s")
    print(f"\nhold-out: {len(train)} train / {len(test)} test captures, {args.image_size} px;"
          f" majority {majority:.3f};"
          f" best single-feature rule ({name}) {acc1:.3f}")
    print(table(a["sub_label"][test], render.SUB_LABELS, correct))
    print()
    print(table(kinds[test], render.KINDS, correct))
    print("overall".ljust(27) + "".join(f"{float(c.mean()):>12.3f}" for c in correct.values()))


if __name__ == "__main__":
    main()
