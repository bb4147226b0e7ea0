"""A test hook that kills this process at a named point, so tests can prove every kill is survived.

`METEOR_TF_KILL_AT=NAME` (or `NAME@N`, the N-th time the point is reached) makes `point(NAME)` send SIGKILL to the
process — no cleanup, no atexit, no flushed buffers, as a power cut or the OOM killer would. Unset (always, outside
tests) it costs one dictionary lookup. The points, each where a kill could leave a half-done state:

- ``backup_write``: the per-epoch backup's weights written to their temporary name, not yet renamed;
- ``epoch_end``: an epoch's backup complete (the next epoch not started);
- ``checkpoint_write``: a best-checkpoint written to its temporary name, not yet renamed;
- ``report_write``: a report/state file (JSON, CSV, Markdown, PNG, model) written to its temporary name, not renamed;
- ``export_write``: a SavedModel version written to its temporary directory, not yet renamed to its number.
"""

from __future__ import annotations

import os
import signal

ENV = "METEOR_TF_KILL_AT"
POINTS = ("backup_write", "epoch_end", "checkpoint_write", "report_write", "export_write")
_seen: dict = {}


def point(name: str) -> None:
    """SIGKILL this process if METEOR_TF_KILL_AT names this point (and this is its N-th passage)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition("@")
    if target not in POINTS:
        raise ValueError(f"{ENV}={spec!r}: unknown point {target!r}; one of {', '.join(POINTS)} (optionally @N)")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
