"""Fashion-MNIST through tfds, offline from Debian's `dataset-fashion-mnist` package when it is installed.

Debian ships the real IDX files but rewrote their gzip headers (no file name, a new time stamp), so their
sha256 differs from the one tfds checks and tfds refuses them. The deflate streams are untouched: putting back
the original 10-byte header and file name gives files byte-identical to upstream, which tfds then prepares
from its manual folder without downloading anything. Without the Debian files, tfds downloads as usual.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Dict, Optional

from absl import logging

from meteor_tf import io

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
NAME = "fashion_mnist"
# The original gzip MTIME of each upstream file (zalandoresearch/fashion-mnist, 2017-08-31).
ORIGINAL_MTIME = {
    "train-images-idx3-ubyte.gz": 0x59A7E9DE,
    "train-labels-idx1-ubyte.gz": 0x59A7E9DE,
    "t10k-images-idx3-ubyte.gz": 0x59A7E9F3,
    "t10k-labels-idx1-ubyte.gz": 0x59A7E9F3,
}
_GZIP_FNAME = 0x08


def debian_files_present(src_dir: str = DEBIAN_DIR) -> bool:
    """Whether all four Debian IDX files are there."""
    return all(os.path.isfile(os.path.join(src_dir, name)) for name in ORIGINAL_MTIME)


def original_gzip_header(name: str) -> bytes:
    """The upstream gzip header of `name`: magic, deflate, FNAME flag, MTIME, XFL 0, OS 3 (Unix), then the
    original (uncompressed) file name, i.e. `name` without ".gz", NUL-terminated."""
    original_name = name[:-len(".gz")]
    return (b"\x1f\x8b\x08" + bytes([_GZIP_FNAME]) + struct.pack("<I", ORIGINAL_MTIME[name]) + b"\x00\x03"
            + original_name.encode() + b"\x00")


def restore_debian_fashion_mnist(dst_dir, src_dir: str = DEBIAN_DIR, verify: bool = True) -> str:
    """Write the four upstream Fashion-MNIST files into `dst_dir`, rebuilt from Debian's; returns `dst_dir`.

    With `verify`, each file's sha256 must equal tfds's recorded checksum (ValueError otherwise). Files
    already there with the right checksum are kept.
    """
    dst_dir = os.fspath(dst_dir)
    os.makedirs(dst_dir, exist_ok=True)
    expected = tfds_checksums() if verify else {}
    for name in ORIGINAL_MTIME:
        dst = os.path.join(dst_dir, name)
        if expected.get(name) and os.path.isfile(dst) and sha256_of(dst) == expected[name]:
            continue
        with open(os.path.join(src_dir, name), "rb") as f:
            debian = f.read()
        if debian[:3] != b"\x1f\x8b\x08":
            raise ValueError(f"{os.path.join(src_dir, name)} is not a gzip file")
        # A header without FNAME is exactly 10 bytes; one with a name already is left as it is.
        restored = debian if debian[3] & _GZIP_FNAME else original_gzip_header(name) + debian[10:]
        io.write_bytes(dst, restored, unique=True)
        if name in expected and sha256_of(dst) != expected[name]:
            raise ValueError(f"Restored {dst} does not match tfds's checksum for {name}: the Debian package "
                             f"may have changed. Remove {dst}; pass manual_dir= with the upstream files, or "
                             "let tfds download them.")
    logging.info("Fashion-MNIST files restored from %s into %s", src_dir, dst_dir)
    return dst_dir


def tfds_checksums() -> Dict[str, str]:
    """{file name: sha256} that tfds records for Fashion-MNIST's downloads."""
    import tensorflow_datasets as tfds

    infos = tfds.builder_cls(NAME).url_infos or {}
    return {info.filename or url.rsplit("/", 1)[-1]: info.checksum for url, info in infos.items()}


def load_fashion_mnist(split: str, data_dir: Optional[str] = None, manual_dir: Optional[str] = None,
                       src_dir: str = DEBIAN_DIR, **load_kwargs):
    """`tfds.load("fashion_mnist", split=...)`: dicts `image` uint8 (28, 28, 1) and `label` int64 (0..9).

    Preparation source, first that applies: `manual_dir` (folder with the four upstream .gz files); Debian's
    files (restored into `<data_dir>/downloads/manual/fashion_mnist`); else tfds's normal download. Preparing
    once takes ~10 s; later loads read the prepared records. Extra keyword arguments go to `tfds.load`.
    """
    import tensorflow_datasets as tfds

    if manual_dir is None and debian_files_present(src_dir) and not _prepared(data_dir):
        root = data_dir or tfds.core.constants.DATA_DIR
        manual_dir = restore_debian_fashion_mnist(os.path.join(root, "downloads", "manual", NAME), src_dir)
    if manual_dir is not None:
        # try_download_gcs=False: never fetch tfds's prepared copy from GCS; use the files given. Statistics
        # (computed by default) would double the preparation time and nothing here reads them.
        config = tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir), try_download_gcs=False,
                                              compute_stats=tfds.download.ComputeStatsMode.SKIP)
        load_kwargs.setdefault("download_and_prepare_kwargs", {}).setdefault("download_config", config)
    return tfds.load(NAME, split=split, data_dir=data_dir, **load_kwargs)


def _prepared(data_dir: Optional[str]) -> bool:
    """Whether tfds already has Fashion-MNIST prepared in `data_dir` (then no files are needed)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.builder(NAME, data_dir=data_dir).is_prepared()
    except Exception:  # noqa: BLE001 — unreadable metadata: prepare again
        return False


def sha256_of(path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


