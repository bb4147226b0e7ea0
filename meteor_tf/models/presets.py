"""Named, shipped weights (keras-hub's "presets"): files inside the package, each with a JSON of its provenance.

`resnet18_fashion_mnist`: the paper's winning backbone, a ResNet-18 (torchvision layout) pretrained on all 60,000
Fashion-MNIST training images by `meteor-pretrain` (see its JSON for settings, test accuracy, time, CPU, packages,
commit). Stored as float16 (gzip) to halve the package's size; loading casts back to float32. The JSON's `sha256` is
checked before every load: a missing or corrupt file is an error naming it and the command that regenerates it,
never a silent random start.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from meteor_tf.data.fashion_mnist import sha256_of
from meteor_tf.io import atomic_path, write_json
from meteor_tf.models.weights import WeightsNotFoundError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


@dataclasses.dataclass(frozen=True)
class Preset:
    name: str
    depth: int
    layout: str
    regenerate: str  # the command that makes the file again


PRESETS: Dict[str, Preset] = {
    "resnet18_fashion_mnist": Preset(
        "resnet18_fashion_mnist", 18, "torchvision",
        "python -m meteor_tf.pretrain --out=runs/pretrain/resnet18_fashion_mnist.weights.h5 --image_size=64 "
        "--epochs=7 --mixed_precision=bfloat16 && python -m meteor_tf.models.presets --compact "
        "runs/pretrain/resnet18_fashion_mnist.weights.h5"),
}


class PresetError(WeightsNotFoundError):
    """A shipped preset is missing, does not match its recorded sha256, or does not exist for the settings."""


def _base(presets_dir: Optional[Path]) -> Path:
    return Path(presets_dir) if presets_dir is not None else PRESETS_DIR


def preset_files(name: str, presets_dir: Optional[Path] = None):
    base = _base(presets_dir)
    return base / f"{name}.weights.h5", base / f"{name}.json"


def preset_info(name: str, presets_dir: Optional[Path] = None) -> dict:
    _, info_path = preset_files(_known(name).name, presets_dir)
    if not info_path.exists():
        raise PresetError(f"the shipped preset {name!r} has no provenance file {info_path}: the installation is "
                          f"incomplete. Reinstall meteor_tf, or regenerate it with: {PRESETS[name].regenerate}")
    return json.loads(info_path.read_text())


def preset_path(name: str, presets_dir: Optional[Path] = None) -> Path:
    """The verified weights file of preset `name` (sha256 checked against its JSON)."""
    preset = _known(name)
    path, _ = preset_files(name, presets_dir)
    info = preset_info(name, presets_dir)
    if not path.exists():
        raise PresetError(f"the shipped backbone {path} is missing (preset {name!r}). Reinstall meteor_tf, or "
                          f"regenerate it with: {preset.regenerate}")
    actual = sha256_of(path)
    if actual != info["sha256"]:
        raise PresetError(f"the shipped backbone {path} is corrupt: sha256 {actual}, expected {info['sha256']} "
                          f"(from {path.with_suffix('').with_suffix('.json').name}). Reinstall meteor_tf, or "
                          f"regenerate it with: {preset.regenerate}")
    return path


def fashion_mnist_preset_for(depth: int, layout: str) -> Preset:
    """The shipped Fashion-MNIST preset for (depth, layout), or a ValueError that says how to get another."""
    for preset in PRESETS.values():
        if preset.name.endswith("_fashion_mnist") and (preset.depth, preset.layout) == (depth, layout):
            return preset
    shipped = ", ".join(f"ResNet-{p.depth} {p.layout}" for p in PRESETS.values())
    raise PresetError(f"no shipped Fashion-MNIST backbone for ResNet-{depth} ({layout} layout); shipped: {shipped}. "
                     "Pass --fmnist_backbone=pretrain to pretrain (and cache) one for these settings.")


def compact(src: str, dst: str, dtype: str = "float16") -> str:
    """Copy a `save_backbone` file with every array as `dtype`, gzip-compressed (for shipping); returns `dst`."""
    import h5py

    with atomic_path(dst) as partial, h5py.File(src, "r") as fin, h5py.File(partial, "w") as fout:
        for key, value in fin.attrs.items():
            fout.attrs[key] = value

        def copy(key, item):
            if isinstance(item, h5py.Dataset):
                data = item[()]
                data = data.astype(dtype) if np.issubdtype(data.dtype, np.floating) else data
                fout.create_dataset(key, data=data, compression="gzip", compression_opts=9, shuffle=True)

        fin.visititems(copy)
    return dst


def _known(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]


def make_preset(src: str, name: str = "resnet18_fashion_mnist", presets_dir: Optional[Path] = None,
                dtype: str = "float16", data_dir: Optional[str] = None) -> dict:
    """Turn a finished `meteor-pretrain` output into the shipped preset: compact copy (`dtype`, gzip), Fashion-MNIST
    test accuracy of the float32 source and of the compact file (all 10,000 and the first 1,000), and a JSON with
    the source's provenance, both accuracies, size and sha256. Returns the JSON's dict."""
    from meteor_tf.training.pretrain import evaluate_backbone_file

    preset = _known(name)
    source_info = json.loads(Path(str(src) + ".json").read_text())
    size = int(source_info["image_size"])
    path, info_path = preset_files(name, presets_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    compact(src, str(path), dtype)
    kw = dict(data_dir=data_dir, depth=preset.depth, layout=preset.layout)
    float32, stored = evaluate_backbone_file(src, size, **kw), evaluate_backbone_file(path, size, **kw)
    info = {**source_info, "name": name, "file": path.name, "stored_dtype": dtype, "size_bytes": path.stat().st_size,
            "sha256": sha256_of(path), "source_sha256": source_info.get("sha256"),
            "test_accuracy": stored["all"], "test_accuracy_first_1000": stored["first_1000"],
            "float32_test_accuracy": float32["all"], "float32_test_accuracy_first_1000": float32["first_1000"],
            "training_policy_test_accuracy": source_info.get("test_accuracy"),
            "evaluated_with": "float32 policy, meteor_tf.training.pretrain.evaluate_backbone_file"}
    write_json(info_path, info)
    return info


SHIPPED_FILTER = "meteor_filter"  # savedmodels-style folder under presets/: the filter meteor-predict uses by default


def shipped_filter_path(presets_dir: Optional[Path] = None) -> Path:
    """The shipped station filter (a SavedModel version folder), or a PresetError saying how to pass one."""
    path = _base(presets_dir) / SHIPPED_FILTER
    if not path.is_dir():
        raise PresetError(f"no shipped filter in this installation ({path}); pass --model=savedmodels/NAME, a .tflite "
                          "file or a run directory")
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Make a shipped preset from a finished meteor-pretrain output.")
    parser.add_argument("--compact", required=True, metavar="SRC", help="the meteor-pretrain .weights.h5 (with its .json)")
    parser.add_argument("--name", default="resnet18_fashion_mnist", choices=sorted(PRESETS))
    parser.add_argument("--presets_dir", default=None, help="default: the package's presets/ folder")
    parser.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    args = parser.parse_args()
    result = make_preset(args.compact, args.name, Path(args.presets_dir) if args.presets_dir else None, args.dtype)
    print(json.dumps({k: result[k] for k in ("file", "size_bytes", "sha256", "test_accuracy", "test_accuracy_first_1000",
                                             "float32_test_accuracy", "float32_test_accuracy_first_1000")}, indent=2))
