"""Claims on run folders: which process executes a run.

Two grids over the same runs (a second worker, or one grid started twice) share run ids. Each run is
executed under an exclusive lock on ``.<run>.lock`` beside its folder, so that the other grid skips it
instead of wiping the folder or running it twice. The OS drops the lock when its process dies: a
killed grid leaves no claim behind, and :func:`held` tells a reader (``python -m workbench status``)
whether the process of a run that says "running" is still alive.

:func:`exclusive` is the blocking kind, for work that a second process should wait for rather than skip
(a cache entry two runs need: one builds it, the other then reads it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no claims (every run is executed, as before claims existed)
    fcntl = None

TRIES, RETRY_S = 5, 0.02
log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def exclusive(lock_path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` for the block, waiting for whoever holds it now.

    The lock is an ``flock`` on the file: the OS drops it when its process dies, so a killed builder
    leaves no stale lock (the file may stay; an unheld file blocks nobody). The holder writes
    ``pid@host`` into the file, for the message a waiting process logs, and removes the file when done.
    ``flock`` is local to one machine: processes on several hosts sharing a network cache are not
    serialised. Without ``fcntl`` (Windows) nothing is locked.
    """
    if fcntl is None:
        yield
        return
    path = Path(lock_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            log.warning("waiting for %s, which %s is building", what, handle.read().strip() or "another process")
            fcntl.flock(handle, fcntl.LOCK_EX)
        # The previous holder removes the file before unlocking: a lock on a removed file locks nothing.
        if _same_file(handle, path):
            break
        handle.close()
    try:
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}@{socket.gethostname()}")
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        handle.close()  # closing drops the lock


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False
