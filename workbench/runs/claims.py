"""Claims on run folders: which process executes a run.

Two grids over the same runs (a second worker, or one grid started twice) share run ids. Each run is
executed under an exclusive lock on ``.<run>.lock`` beside its folder, so that the other grid skips it
instead of wiping the folder or running it twice. The OS drops the lock when its process dies: a
killed grid leaves no claim behind, and :func:`held` tells a reader (``python -m workbench status``)
whether the process of a run that says "running" is still alive.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no claims (every run is executed, as before claims existed)
    fcntl = None

TRIES, RETRY_S = 5, 0.02


def _lock_file(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir).with_name(f".{Path(run_dir).name}.lock")


@contextlib.contextmanager
def claimed(run_dir: str | os.PathLike) -> Iterator[bool]:
    """Hold the claim on ``run_dir`` for the block (True), or learn that another process holds it (False)."""
    if fcntl is None:
        yield True
        return
    path = _lock_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        for _ in range(TRIES):  # a reader (:func:`held`) holds the lock for microseconds: try again
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(RETRY_S)
        else:
            yield False
            return
        yield True


def held(run_dir: str | os.PathLike) -> bool:
    """Whether a process holds the claim on ``run_dir`` now (read only: no lock file is created)."""
    if fcntl is None:
        return False
    try:
        handle = open(_lock_file(run_dir))
    except OSError:  # never claimed
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False
