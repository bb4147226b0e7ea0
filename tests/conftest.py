"""Shared fixtures: small capture folders written by the tests themselves (no downloads)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
# The suite computes in float32 on every CPU: --mixed_precision=auto would pick bfloat16 where the CPU has AVX512_BF16
# or AMX and change the numbers tests compare. Tests of that choice fake the flags themselves.
os.environ.setdefault("METEOR_TF_CPU_FLAGS", "")

import numpy as np
import pytest
from PIL import Image


def draw_capture(rng, meteor: bool, size: int = 48) -> np.ndarray:
    """A tiny night-sky-like capture: noise and stars; a meteor is a bright straight streak, a non-meteor a blob."""
    img = rng.normal(18, 4, (size, size)).clip(0, 255)
    for _ in range(6):
        y, x = rng.integers(0, size, 2)
        img[y, x] = 200
    if meteor:
        y0, x0, y1, x1 = rng.integers(4, size - 4, 4)
        for t in np.linspace(0, 1, 4 * size):
            img[int(y0 + t * (y1 - y0)), int(x0 + t * (x1 - x0))] = 230
    else:
        cy, cx = rng.integers(8, size - 8, 2)
        yy, xx = np.mgrid[:size, :size]
        img += 150 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    return img.clip(0, 255).astype(np.uint8)


def write_capture_folder(root, meteors=12, non_meteors=10, seed=0, size=48):
    rng = np.random.default_rng(seed)
    for cls, n in (("meteor", meteors), ("non_meteor", non_meteors)):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(draw_capture(rng, cls == "meteor", size)).save(root / cls / f"{cls}_{i:03d}.png")
    return root


def write_streak_task(root, per_class: int, seed: int = 0, size: int = 48):
    """`per_class` PNGs per class: noise and 8 stars; a meteor adds one straight streak of half to 0.9 the side
    through the middle of the frame, in any direction."""
    rng = np.random.default_rng(seed)
    for cls in ("meteor", "non_meteor"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            img = rng.normal(20, 4, (size, size))
            for _ in range(8):
                y, x = rng.integers(0, size, 2)
                img[y, x] = rng.uniform(120, 240)
            if cls == "meteor":
                angle, length = rng.uniform(0, np.pi), rng.uniform(0.5, 0.9) * size
                cy, cx = rng.uniform(0.35, 0.65, 2) * size
                t = np.linspace(-0.5, 0.5, 3 * size)
                ys = np.clip((cy + t * length * np.sin(angle)).astype(int), 0, size - 1)
                xs = np.clip((cx + t * length * np.cos(angle)).astype(int), 0, size - 1)
                img[ys, xs] = 220
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / cls / f"{cls}_{i:03d}.png")
    return root


def require_debian_fashion_mnist() -> None:
    """Skip without Debian's dataset-fashion-mnist files, except under CI, where scripts/setup.sh installs them and a
    missing file is a failure."""
    from meteor_tf.data.fashion_mnist import debian_files_present

    if not debian_files_present():
        if os.environ.get("CI"):
            pytest.fail("Debian's dataset-fashion-mnist files are missing: scripts/setup.sh installs them")
        pytest.skip("Debian's dataset-fashion-mnist files are not installed")


@pytest.fixture()
def capture_folder(tmp_path):
    return write_capture_folder(tmp_path / "captures")
