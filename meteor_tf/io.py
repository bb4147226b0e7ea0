"""Writing files so that a kill never leaves half of one: every module of the package writes through these.

A writer gets a temporary twin of the file (same folder, same suffix, so `np.save`, h5py and matplotlib accept it),
and the twin is renamed over the real name only when the writing succeeded: a run killed at any moment leaves
either the previous file or the new one, never a truncated file where a resumed run, a station or a reader looks.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator, Union

import numpy as np

from meteor_tf import faults

PathLike = Union[str, os.PathLike]
PARTIAL_PREFIX = "partial."


def partial_path(path: PathLike, unique: bool = False) -> Path:
    """The temporary twin of `path`: ``partial.<name>``; with `unique`, ``partial.<pid>.<name>``, for files that
    several processes may write at once (workers of a distributed search, parallel downloads)."""
    path = Path(path)
    return path.with_name(f"{PARTIAL_PREFIX}{os.getpid()}.{path.name}" if unique else PARTIAL_PREFIX + path.name)


@contextlib.contextmanager
def atomic_path(path: PathLike, unique: bool = False) -> Iterator[Path]:
    """Yields the temporary twin of `path` (see `partial_path`) and renames it over `path` when the block
    succeeds. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path, unique)
    yield partial
    faults.point("report_write")
    partial.replace(path)


def jsonable(o):
    """`json.dumps`' default for what runs and benchmarks record: NumPy scalars and arrays, tuples, sets."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def dumps(obj) -> str:
    """The package's JSON text: indented, keys sorted, NumPy values as plain numbers."""
    return json.dumps(obj, indent=2, sort_keys=True, default=jsonable)


def write_text(path: PathLike, text: str, unique: bool = False) -> Path:
    with atomic_path(path, unique) as partial:
        partial.write_text(text)
    return Path(path)


def write_bytes(path: PathLike, data: bytes, unique: bool = False) -> Path:
    with atomic_path(path, unique) as partial:
        partial.write_bytes(data)
    return Path(path)


def write_json(path: PathLike, obj, unique: bool = False) -> Path:
    """Writes `obj` as the package's JSON (`dumps`), atomically."""
    return write_text(path, dumps(obj), unique)


def read_json(path: PathLike):
    return json.loads(Path(path).read_text())
