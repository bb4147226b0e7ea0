"""Pretrained weights for the backbones: ImageNet from the files users really have, and our own backbones.

Sources `load_imagenet_weights` accepts (`source`, the `--weights` flag):

* ``.safetensors`` — a torchvision/timm ResNet state dict (e.g. Hugging Face ``timm/resnet50.tv_in1k``); no PyTorch
  needed. Keys ``conv1.weight``, ``bn1.*``, ``layer{s}.{b}.conv{k}.weight``, ``layer{s}.{b}.bn{k}.*``,
  ``layer{s}.{b}.downsample.0/.1.*``; ``fc.*`` and ``num_batches_tracked`` are skipped. Layout "torchvision".
* ``.pth`` / ``.pt`` — the same state dict saved by PyTorch (torchvision's own downloads); needs the ``[torch]`` extra.
* a keras-hub preset directory (``resnet_18_imagenet``, … saved locally); needs the ``[hub]`` extra. Layout
  "torchvision".
* ``.h5`` — keras.applications ResNet50/101 weights (``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``, or a
  Keras 3 ``.weights.h5`` of such a model). Layout "keras".
* ``.weights.h5`` written by `save_backbone` (e.g. the Fashion-MNIST pretrained backbone), any layout.
* ``None`` — the default places: for layout "keras" keras.applications' cache (downloaded when online); for layout
  "torchvision" PyTorch's hub cache and the Hugging Face cache (downloaded with PyTorch when it is installed).

Weights are never silently left random: a missing source raises `WeightsNotFoundError`, a source that does not fit
the backbone raises ValueError naming the keys. A 3-channel stem kernel loaded into a 1-channel stem is summed over its
input channels (gray = R = G = B).
"""

from __future__ import annotations

import glob
import os
import re
from typing import Dict, Optional, Tuple

import keras
import numpy as np

from meteor_tf.models import resnet

# torchvision's IMAGENET1K_V1 weights, the ones fastai (and so the paper) used.
TORCHVISION_URLS = {
    18: "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    34: "https://download.pytorch.org/models/resnet34-b627a593.pth",
    50: "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    101: "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}
KERAS_APPLICATIONS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
KERAS_APPLICATIONS_MODELS = {50: "ResNet50", 101: "ResNet101"}
ACCEPTED_FORMATS = (".safetensors (torchvision/timm state dict, e.g. Hugging Face timm/resnet50.tv_in1k), "
                    ".pth/.pt (torchvision; needs the [torch] extra), a keras-hub preset directory (needs the [hub] "
                    "extra), .h5 keras.applications weights (--layout=keras), or a .weights.h5 written by "
                    "meteor_tf.models.weights.save_backbone")
# Marks .weights.h5 files written by save_backbone (name-keyed), as opposed to Keras's own positional format.
FORMAT_ATTRIBUTE = "meteor_tf_backbone_format"
FORMAT_VERSION = 1
TORCH_PREFIXES = ("module.", "model.", "backbone.")
BN_PARAMETERS = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
STEM_CONVS = ("conv1", "conv1_conv")

# Our state: "layer_name/variable_name" -> (key in the source, array in Keras layout).
State = Dict[str, Tuple[str, np.ndarray]]


class WeightsNotFoundError(FileNotFoundError):
    """No pretrained weights where they were looked for; the message says where and how to pass `--weights`."""


def load_imagenet_weights(backbone: keras.Model, depth: Optional[int] = None, layout: Optional[str] = None,
                          source: Optional[str] = None, download: bool = True) -> str:
    """Load ImageNet (or our own) weights into `backbone`; returns a description of what was loaded.

    `source` is a path in one of the formats of the module docstring, or None for the default places (downloading
    when `download` and online). `depth` and `layout` default to the backbone's own (a `resnet.ResNetBackbone`
    knows them); given, they must agree with it. Raises WeightsNotFoundError when nothing is found, ValueError when
    the weights do not fit the backbone.
    """
    depth, layout = _architecture_of(backbone, depth, layout)
    if source is None:
        return _load_default(backbone, depth, layout, download)
    path = os.path.expanduser(os.fspath(source))
    if not os.path.exists(path):
        raise WeightsNotFoundError(_not_found_message(depth, layout, [path], "not attempted (a path was given)"))
    if os.path.isdir(path):
        state = _from_keras_hub(_require_torchvision(layout, path, "keras-hub preset"))
    elif path.endswith(".safetensors"):
        state = _from_torchvision(_read_safetensors(_require_torchvision(layout, path, "torchvision/timm")), backbone)
    elif path.endswith((".pth", ".pt", ".bin")):
        state = _from_torchvision(_read_torch(_require_torchvision(layout, path, "torchvision/timm")), backbone)
    elif path.endswith(".weights.h5") and _is_our_file(path):
        load_backbone(backbone, path)
        return f"meteor_tf backbone {path}"
    elif path.endswith(".h5"):
        state = _from_keras_applications(depth, _require_keras(layout, path), weights=path)
    else:
        raise ValueError(f"don't know the format of {path!r}; --weights accepts {ACCEPTED_FORMATS}")
    _assign(backbone, state, path)
    return path


def _architecture_of(backbone, depth, layout):
    """(depth, layout) of the backbone, checked against the ones given."""
    if isinstance(backbone, resnet.ResNetBackbone):
        for what, given, own in (("depth", depth, backbone.depth), ("layout", layout, backbone.layout)):
            if given is not None and given != own:
                raise ValueError(f"{what}={given!r} was given for backbone {backbone.name!r}, which is {what} {own!r}")
        return backbone.depth, backbone.layout
    if depth is None or layout is None:
        raise ValueError(f"{backbone.name!r} is not a meteor_tf ResNetBackbone: pass its depth and layout")
    resnet.check_architecture(depth, layout)
    return depth, layout


EXTRA_GROUP = "_extra"  # arrays stored beside a backbone (e.g. its pretraining head); loading ignores them


def save_backbone(backbone: keras.Model, path: str, extra: Optional[Dict[str, np.ndarray]] = None) -> str:
    """Save a backbone's weights by layer name to `path` (must end in .weights.h5); returns the path. `extra`
    arrays (name → array) go under `_extra/`, which `load_backbone` skips."""
    import h5py  # Keras's own dependency for .weights.h5

    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise ValueError(f"backbone weights files end in .weights.h5, got {path!r}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs[FORMAT_ATTRIBUTE] = FORMAT_VERSION
        f.attrs["backbone_name"] = backbone.name
        for layer in backbone.layers:
            for variable in layer.weights:
                f.create_dataset(f"{layer.name}/{variable.name}", data=keras.ops.convert_to_numpy(variable))
        for name, value in (extra or {}).items():
            f.create_dataset(f"{EXTRA_GROUP}/{name}", data=np.asarray(value))
    return path


def read_extra(path: str) -> Dict[str, np.ndarray]:
    """The `_extra/` arrays of a `save_backbone` file (float32)."""
    import h5py

    out: Dict[str, np.ndarray] = {}
    with h5py.File(os.fspath(path), "r") as f:
        if EXTRA_GROUP in f:
            f[EXTRA_GROUP].visititems(lambda key, item: out.update({key: item[()].astype(np.float32)})
                                      if isinstance(item, h5py.Dataset) else None)
    return out


def load_backbone(backbone: keras.Model, path: str) -> str:
    """Load weights written by `save_backbone` (or Keras's own `save_weights` file) into `backbone`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsNotFoundError(f"backbone weights file {path!r} does not exist; pass --weights=PATH with "
                                   f"{ACCEPTED_FORMATS}")
    if not _is_our_file(path):
        backbone.load_weights(path)  # Keras's own positional format
        return path
    import h5py

    state: State = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda key, item: state.update({key: (key, item[()])})
                     if isinstance(item, h5py.Dataset) and not key.startswith(EXTRA_GROUP + "/") else None)
    _assign(backbone, state, path)
    return path


# ---------------------------------------------------------------------------------------------------------------
# default places


def _load_default(backbone, depth, layout, download):
    if layout == "keras":
        return _load_default_keras(backbone, depth, download)
    return _load_default_torchvision(backbone, depth, download)


def keras_applications_file(depth: int) -> str:
    """Where keras.applications caches the ResNet-{depth} no-top ImageNet weights."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "models", f"resnet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5")


def _load_default_keras(backbone, depth, download):
    cached = keras_applications_file(depth)
    url = KERAS_APPLICATIONS_URL + os.path.basename(cached)
    if os.path.exists(cached) or download:
        try:
            # weights="imagenet" checks the cached file's hash and downloads it if needed.
            state = _from_keras_applications(depth, cached, weights="imagenet")
        except Exception as error:  # offline: urllib/ssl/OSError, all reported the same way
            raise WeightsNotFoundError(_not_found_message(depth, "keras", [cached], f"{url} failed: {error}")) \
                from error
        _assign(backbone, state, cached)
        return cached
    raise WeightsNotFoundError(_not_found_message(depth, "keras", [cached], f"{url} not attempted (download=False)"))


def torchvision_candidates(depth: int) -> list:
    """Files that may hold torchvision's ResNet-{depth} ImageNet weights: PyTorch's hub cache, timm's on HF."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(xdg_cache, "torch")
    hf_home = os.environ.get("HF_HUB_CACHE") or os.path.join(os.environ.get("HF_HOME") or
                                                             os.path.join(xdg_cache, "huggingface"), "hub")
    file_name = os.path.basename(TORCHVISION_URLS[depth])
    return [os.path.join(torch_home, "hub", "checkpoints", file_name),
            os.path.join(hf_home, f"models--timm--resnet{depth}.tv_in1k", "snapshots", "*", "model.safetensors")]


def _load_default_torchvision(backbone, depth, download):
    candidates = torchvision_candidates(depth)
    for pattern in candidates:
        for path in sorted(glob.glob(pattern)):
            return load_imagenet_weights(backbone, source=path)
    url = TORCHVISION_URLS[depth]
    if not download:
        raise WeightsNotFoundError(_not_found_message(depth, "torchvision", candidates,
                                                      f"{url} not attempted (download=False)"))
    try:
        import torch
    except ImportError:
        raise WeightsNotFoundError(_not_found_message(
            depth, "torchvision", candidates, f"{url} not attempted: downloading .pth files needs PyTorch "
            "(pip install 'meteor_tf[torch]')")) from None
    try:
        state_dict = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False)
    except Exception as error:  # offline
        raise WeightsNotFoundError(_not_found_message(depth, "torchvision", candidates, f"{url} failed: {error}")) \
            from error
    _assign(backbone, _from_torchvision(_torch_to_numpy(state_dict), backbone), url)
    return url


def _not_found_message(depth, layout, looked_in, download_note):
    places = "\n  ".join(looked_in)
    return (f"No ImageNet weights for ResNet-{depth} ({layout} layout). Looked for:\n  {places}\n"
            f"Download: {download_note}.\n"
            f"Pass --weights=PATH with {ACCEPTED_FORMATS}; or use --pretrain=fashion_mnist or --pretrain=none.")


# ---------------------------------------------------------------------------------------------------------------
# readers: each returns our State or a torchvision-keyed dict of numpy arrays


def _require_torchvision(layout, path, kind):
    if layout != "torchvision":
        raise ValueError(f"{path!r} holds {kind} weights, which fit --layout=torchvision, not --layout={layout}")
    return path


def _require_keras(layout, path):
    if layout != "keras":
        raise ValueError(f"{path!r} holds keras.applications weights, which fit --layout=keras, "
                         f"not --layout={layout}")
    return path


def _read_safetensors(path):
    from safetensors.numpy import load_file

    return load_file(path)


def _read_torch(path):
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path!r} needs PyTorch: pip install 'meteor_tf[torch]' "
                          "(or convert the state dict to .safetensors)") from None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # training checkpoints wrap the state dict
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
    return _torch_to_numpy(checkpoint)


def _torch_to_numpy(state_dict):
    return {key: value.detach().cpu().float().numpy() for key, value in state_dict.items()
            if hasattr(value, "detach")}


def _from_torchvision(state_dict, backbone) -> State:
    """torchvision keys → our State (conv OIHW → HWIO, BN weight/bias/running_* → gamma/beta/moving_*)."""
    layer_types = {layer.name: layer for layer in backbone.layers}
    state: State = {}
    for key, value in state_dict.items():
        name = _strip_prefix(key)
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue  # ImageNet classifier and PyTorch's BN step counter: nothing to load
        module, parameter = name.rsplit(".", 1)
        layer = layer_types.get(module)
        value = np.asarray(value)
        if isinstance(layer, keras.layers.BatchNormalization) and parameter in BN_PARAMETERS:
            state[f"{module}/{BN_PARAMETERS[parameter]}"] = (key, value)
        elif parameter == "weight" and value.ndim == 4:
            state[f"{module}/kernel"] = (key, value.transpose(2, 3, 1, 0))
        else:
            state[f"{module}/{parameter}"] = (key, value)  # conv bias or an unknown key: _assign reports it
    return state


def _strip_prefix(key):
    for prefix in TORCH_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _from_keras_applications(depth, path, weights) -> State:
    """Build keras.applications' ResNet with `weights` (a file or "imagenet") and read its variables by name."""
    if depth not in KERAS_APPLICATIONS_MODELS:
        raise ValueError(f"keras.applications has no ResNet-{depth}; use --layout=torchvision")
    constructor = getattr(keras.applications, KERAS_APPLICATIONS_MODELS[depth])
    try:
        reference = constructor(include_top=False, weights=weights, input_shape=(None, None, 3))
    except ValueError:
        # A file with the ImageNet top (1000-way "predictions") only loads into the full model.
        reference = constructor(include_top=True, weights=weights)
    return {f"{layer.name}/{variable.name}": (f"{layer.name}/{variable.name}", keras.ops.convert_to_numpy(variable))
            for layer in reference.layers if layer.name != "predictions" for variable in layer.weights}


_HUB_BLOCK = re.compile(r"stack(\d+)_block(\d+)_(\d)_(conv|bn)$")


def _from_keras_hub(path) -> State:
    """A keras-hub ResNet preset directory → our State (its names mapped onto torchvision's)."""
    try:
        import keras_hub
    except ImportError:
        raise ImportError(f"reading the keras-hub preset {path!r} needs keras-hub: pip install 'meteor_tf[hub]'") \
            from None
    hub_backbone = keras_hub.models.Backbone.from_preset(path)
    state: State = {}
    for layer in hub_backbone.layers:
        name = _hub_to_torchvision(layer.name)
        for variable in layer.weights if name else ():
            state[f"{name}/{variable.name}"] = (f"{layer.name}/{variable.name}",
                                               keras.ops.convert_to_numpy(variable))
    return state


def _hub_to_torchvision(hub_name):
    """keras-hub ResNet (v1) layer name → torchvision module name; None for layers without a counterpart."""
    if hub_name in ("conv1_conv", "conv1_bn"):
        return "conv1" if hub_name.endswith("conv") else "bn1"
    match = _HUB_BLOCK.match(hub_name)
    if not match:
        return None
    stack, block, position, kind = match.groups()
    prefix = f"layer{int(stack) + 1}.{block}"
    if position == "0":
        return f"{prefix}.downsample.{0 if kind == 'conv' else 1}"
    return f"{prefix}.{kind}{position}"


def _is_our_file(path):
    import h5py

    with h5py.File(path, "r") as f:
        return FORMAT_ATTRIBUTE in f.attrs


# ---------------------------------------------------------------------------------------------------------------
# assignment


def _assign(backbone: keras.Model, state: State, source: str) -> None:
    """Check every variable of `backbone` against `state`, then assign all of them (or none, with a clear error)."""
    values, missing, mismatched = [], [], []
    used = set()
    for layer in backbone.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key not in state:
                missing.append(key)
                continue
            used.add(key)
            source_key, value = state[key]
            value = _fit_stem(layer.name, value, tuple(variable.shape))
            if value.shape != tuple(variable.shape):
                mismatched.append(f"{source_key}: {value.shape} in the file, {key} needs {tuple(variable.shape)}")
                continue
            values.append((variable, value))
    unexpected = sorted(state[key][0] for key in set(state) - used)
    problems = [f"shape mismatch: {line}" for line in mismatched]
    problems += [f"missing from the file: {', '.join(_few(missing))}"] if missing else []
    problems += [f"in the file but not in the model: {', '.join(_few(unexpected))}"] if unexpected else []
    if problems:
        raise ValueError(f"weights in {source!r} do not fit backbone {backbone.name!r} (wrong depth, layout or "
                         "file?):\n  " + "\n  ".join(problems))
    for variable, value in values:
        variable.assign(value.astype(variable.dtype))


def _fit_stem(layer_name, value, shape):
    """A 3-channel stem kernel for a 1-channel stem: sum over input channels (gray = R = G = B)."""
    if layer_name in STEM_CONVS and value.ndim == 4 and value.shape[2] == 3 and shape[2:3] == (1,):
        return value.sum(axis=2, keepdims=True)
    return value


def _few(names, limit=8):
    names = list(names)
    return names[:limit] + ([f"… ({len(names) - limit} more)"] if len(names) > limit else [])


# ---------------------------------------------------------------------------------------------------------------
# classifier checkpoints written before backbones knew their structure

# Keras's .weights.h5 addresses a sub-model by its class name: a plain functional backbone was "functional" and the
# head "functional_1"; a ResNetBackbone is "res_net_backbone" and the head becomes "functional".
_LEGACY_GROUPS = (("layers/functional", "layers/res_net_backbone"), ("layers/functional_1", "layers/functional"))


def is_legacy_classifier_weights(path) -> bool:
    """True for a classifier's Keras .weights.h5 (a checkpoint of a fold or the final model) written by meteor_tf
    before the backbone was a `resnet.ResNetBackbone`."""
    import h5py

    try:
        f = h5py.File(os.fspath(path), "r")
    except OSError:  # a partial file a kill left behind: whoever reads it decides (a backup's twin is ignored)
        return False
    with f:
        if FORMAT_ATTRIBUTE in f.attrs or "layers" not in f:
            return False
        groups = f["layers"]
        return "functional_1" in groups and "res_net_backbone" not in groups and \
            "layers/conv2d" in groups["functional"]


def upgrade_classifier_weights(path) -> bool:
    """Rewrites a legacy classifier checkpoint (`is_legacy_classifier_weights`) to today's group names, atomically
    (same arrays, renamed groups), so runs started by older code resume. Returns whether it rewrote the file."""
    import shutil

    import h5py

    from meteor_tf import io

    if not is_legacy_classifier_weights(path):
        return False
    with io.atomic_path(path) as partial:
        shutil.copyfile(path, partial)
        with h5py.File(partial, "r+") as f:
            f.move(_LEGACY_GROUPS[0][0], "layers/_backbone")  # "functional" is reused by the head: move via a temp
            f.move(_LEGACY_GROUPS[1][0], _LEGACY_GROUPS[1][1])
            f.move("layers/_backbone", _LEGACY_GROUPS[0][1])
    return True
