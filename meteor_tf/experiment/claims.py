"""Who trains which part of a run, so several processes — on one machine or on several sharing a filesystem — can
work on one run directory at once: each fold (and the final model) is a unit a worker claims before training it.

A claim is a file `claims/<part>.json` created with O_CREAT|O_EXCL (one creator wins, also over NFS v3+), holding
who made it; while the part trains, a heartbeat thread touches it every `ttl / 4` seconds. A claim whose file has not
been touched for `ttl` seconds belongs to a dead worker (killed, powered off, lost its mount): another worker renames
it away (a rename of one file succeeds once, so one taker wins) and claims the part afresh; the part then resumes from
its recorded phases and per-epoch backups, as after any kill. Own code because the fold scheduling needs no engine:
one lock file per unit on the filesystem the run directory already is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger("meteor_tf")

TTL_ENV = "METEOR_TF_CLAIM_TTL"  # seconds without a heartbeat after which a claim is a dead worker's (default 120)
DEFAULT_TTL = 120.0


def claim_ttl() -> float:
    value = os.environ.get(TTL_ENV)
    if not value:
        return DEFAULT_TTL
    try:
        ttl = float(value)
    except ValueError:
        raise ValueError(f"${TTL_ENV}={value!r} is not a number of seconds") from None
    if ttl <= 0:
        raise ValueError(f"${TTL_ENV}={value!r} must be positive")
    return ttl


class Claims:
    """The claim files of one run directory (`run_path/claims/`)."""

    def __init__(self, run_path, ttl: Optional[float] = None):
        self.dir = Path(run_path) / "claims"
        self.ttl = claim_ttl() if ttl is None else float(ttl)
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": uuid.uuid4().hex}

    def path(self, part: str) -> Path:
        return self.dir / f"{part}.json"

    def holder(self, part: str) -> Optional[dict]:
        """Who holds `part` (the claim file's content), or None."""
        try:
            return json.loads(self.path(part).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def age(self, part: str) -> Optional[float]:
        """Seconds since the claim's last heartbeat, or None without a claim."""
        try:
            return time.time() - self.path(part).stat().st_mtime
        except FileNotFoundError:
            return None

    def is_stale(self, part: str) -> bool:
        age = self.age(part)
        return age is not None and age > self.ttl

    def try_claim(self, part: str) -> bool:
        """Claims `part` for this process; False if a live worker holds it. A stale claim is taken over."""
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.is_stale(part):
            dead = self.holder(part)
            tomb = self.dir / f"{part}.stale-{uuid.uuid4().hex}"
            try:
                os.rename(self.path(part), tomb)  # one taker wins the rename
            except FileNotFoundError:
                return False
            tomb.unlink(missing_ok=True)
            log.warning("%s: the claim of %s had no heartbeat for over %.0f s (a dead worker); taking the part over",
                        part, dead, self.ttl)
        try:
            fd = os.open(self.path(part), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump({**self.owner, "part": part, "claimed": time.time()}, f)
        return True

    def mine(self, part: str) -> bool:
        return (self.holder(part) or {}).get("token") == self.owner["token"]

    def release(self, part: str) -> None:
        if self.mine(part):
            self.path(part).unlink(missing_ok=True)

    @contextlib.contextmanager
    def heartbeat(self, part: str) -> Iterator[None]:
        """Keeps this process's claim of `part` alive while the block runs, then releases it."""
        stop = threading.Event()

        def beat():
            while not stop.wait(self.ttl / 4):
                try:
                    os.utime(self.path(part))
                except FileNotFoundError:  # taken over (we looked dead): the other worker's run is as good
                    return

        thread = threading.Thread(target=beat, name=f"claim-{part}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release(part)


__all__ = ["Claims", "claim_ttl", "TTL_ENV", "DEFAULT_TTL"]
