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


def make_inputs(images, rule: str, size: int) -> np.ndarray:
    import tensorflow as tf

    from meteor_tf.data import preprocess

    fn = tf.function(lambda im: preprocess.to_model_input(im, size, rule=rule), reduce_retracing=True)
    return np.stack([fn(tf.constant(im[..., None])).numpy() for im in images])


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
        model.fit(x[train], y[train], batch_size=args.batch_size, epochs=epochs, shuffle=True, verbose=0)
    return model.predict(x[test], batch_size=64, verbose=0)[:, 0]  # P(meteor)


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
    p.add_argument("--rules", default="resize,maxpool", help="comma-separated input rules of preprocess.RULES")
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--head_epochs", type=int, default=3)
    p.add_argument("--fine_tune_epochs", type=int, default=7)
    p.add_argument("--lr_head", type=float, default=0.03)
    p.add_argument("--lr_fine_tune", type=float, default=0.003)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
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
