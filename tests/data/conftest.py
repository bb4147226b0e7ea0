"""Helpers for the data tests: tiny images written in any format, and a class-folder builder."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image


def save_image(path, array, fmt=None, mode=None, **kwargs):
    """Write a numpy array as an image file (format from the extension unless `fmt`); returns the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(np.asarray(array), mode) if mode else Image.fromarray(np.asarray(array))
    image.save(path, format=fmt, **kwargs)
    return str(path)


def png_header_only(path, width, height):
    """A PNG that claims width×height 8-bit gray with a tiny IDAT: cheap, for header-only checks."""
    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def sky(height=24, width=32, seed=0, streak=True):
    """A dark noisy frame with an optional bright diagonal streak (uint8, H×W)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 30, size=(height, width)).astype(np.uint8)
    if streak:
        for t in range(min(height, width) - 4):
            image[2 + t, 2 + t] = 220
    return image


@pytest.fixture
def class_folder(tmp_path):
    """A minimal valid folder: 3 meteor JPEGs (two of one scene) and 3 non-meteor PNGs, one in a subfolder."""
    root = tmp_path / "DATA"
    save_image(root / "meteor" / "camA_0001__m1.jpg", sky(seed=1), quality=95)
    save_image(root / "meteor" / "camA_0001__m2.jpg", sky(seed=2), quality=95)
    save_image(root / "meteor" / "night2" / "m3.jpg", sky(seed=3), quality=95)
    save_image(root / "non_meteor" / "camA_0001__n1.png", sky(seed=4, streak=False))
    save_image(root / "non_meteor" / "n2.png", sky(seed=5, streak=False))
    save_image(root / "non_meteor" / "sub" / "n3.png", sky(seed=6, streak=False))
    return root


@pytest.fixture
def img():
    """The helpers above as one object (tests take them as a fixture, no conftest imports)."""
    import types

    return types.SimpleNamespace(save=save_image, png_header_only=png_header_only, sky=sky)
