"""An independent ResNet reference for the tests: torchvision's state-dict keys/shapes and a numpy forward pass.

Written from torchvision's `ResNet` definition (torchvision/models/resnet.py), not from meteor_tf's code, so that the
backbone builder and the weight loader are checked against something they do not share.
"""

import numpy as np

# torchvision: resnet18/34 use BasicBlock, resnet50/101 Bottleneck (expansion 4, stride on conv2 = "v1.5").
BLOCKS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]),
          50: ("bottleneck", [3, 4, 6, 3]), 101: ("bottleneck", [3, 4, 23, 3])}
EPS = 1e-5


def _bn_keys(prefix, channels):
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def torchvision_shapes(depth, num_classes=1000):
    """Every key of `torchvision.models.resnet{depth}().state_dict()` with its shape, in definition order."""
    kind, blocks = BLOCKS[depth]
    expansion = 4 if kind == "bottleneck" else 1
    shapes = {"conv1.weight": (64, 3, 7, 7), **_bn_keys("bn1", 64)}
    inplanes = 64
    for layer, (planes, count) in enumerate(zip([64, 128, 256, 512], blocks), start=1):
        stride = 1 if layer == 1 else 2
        for b in range(count):
            p = f"layer{layer}.{b}"
            if kind == "basic":
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 3, 3)
                shapes.update(_bn_keys(f"{p}.bn1", planes))
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                shapes.update(_bn_keys(f"{p}.bn2", planes))
            else:
                shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
                shapes.update(_bn_keys(f"{p}.bn1", planes))
                shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
                shapes.update(_bn_keys(f"{p}.bn2", planes))
                shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
                shapes.update(_bn_keys(f"{p}.bn3", planes * 4))
            if b == 0 and (stride != 1 or inplanes != planes * expansion):
                shapes[f"{p}.downsample.0.weight"] = (planes * expansion, inplanes, 1, 1)
                shapes.update(_bn_keys(f"{p}.downsample.1", planes * expansion))
            inplanes = planes * expansion
    shapes["fc.weight"] = (num_classes, 512 * expansion)
    shapes["fc.bias"] = (num_classes,)
    return shapes


def backbone_parameter_count(depth):
    """Keras's count_params() of the backbone: conv + BN weights and BN running stats, no fc, no step counter."""
    return sum(int(np.prod(s)) for k, s in torchvision_shapes(depth).items()
               if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))


def random_state_dict(depth, seed=0, dtype=np.float32):
    """A torchvision-keyed state dict of random values that keep activations O(1), with random BN statistics."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in torchvision_shapes(depth).items():
        if key.endswith("num_batches_tracked"):
            state[key] = np.array(7, dtype=np.int64)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(dtype)
        elif key.endswith(("running_var", ".weight")):  # BN variance and gamma (and fc.weight): around 1
            state[key] = rng.uniform(0.5, 1.5, shape).astype(dtype)
        else:  # BN beta, running_mean, fc.bias
            state[key] = (rng.standard_normal(shape) * 0.1).astype(dtype)
    return state


# ---- numpy forward pass (NHWC activations, torch OIHW kernels) ----

def conv2d(x, w, stride, pad):
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = w.shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, H', W', C, kh, kw
    windows = windows[:, ::stride, ::stride]
    return np.einsum("nhwckl,ockl->nhwo", windows, w, optimize=True)


def batch_norm(x, state, prefix):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + EPS)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def max_pool_3x3_s2_p1(x):
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2]
    return windows.max(axis=(-1, -2))


def relu(x):
    return np.maximum(x, 0)


def forward(state, depth, images):
    """torchvision ResNet forward up to layer4 (eval mode), on NHWC images; float64."""
    s = {k: np.asarray(v, np.float64) for k, v in state.items()}
    kind, blocks = BLOCKS[depth]
    x = relu(batch_norm(conv2d(np.asarray(images, np.float64), s["conv1.weight"], 2, 3), s, "bn1"))
    x = max_pool_3x3_s2_p1(x)
    for layer, count in enumerate(blocks, start=1):
        for b in range(count):
            p = f"layer{layer}.{b}"
            stride = 2 if (layer > 1 and b == 0) else 1
            if kind == "basic":
                y = relu(batch_norm(conv2d(x, s[f"{p}.conv1.weight"], stride, 1), s, f"{p}.bn1"))
                y = batch_norm(conv2d(y, s[f"{p}.conv2.weight"], 1, 1), s, f"{p}.bn2")
            else:
                y = relu(batch_norm(conv2d(x, s[f"{p}.conv1.weight"], 1, 0), s, f"{p}.bn1"))
                y = relu(batch_norm(conv2d(y, s[f"{p}.conv2.weight"], stride, 1), s, f"{p}.bn2"))
                y = batch_norm(conv2d(y, s[f"{p}.conv3.weight"], 1, 0), s, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in s:
                x = batch_norm(conv2d(x, s[f"{p}.downsample.0.weight"], stride, 0), s, f"{p}.downsample.1")
            x = relu(y + x)
    return x


def randomise_variables(model, seed):
    """Random values for every Keras variable, BN moving statistics included, so BN is not the identity."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path or "gamma" in variable.path:
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) == 4:
            value = rng.standard_normal(shape) * np.sqrt(1.0 / np.prod(shape[:3]))
        else:
            value = rng.standard_normal(shape) * 0.1
        variable.assign(value.astype("float32"))
    return model
