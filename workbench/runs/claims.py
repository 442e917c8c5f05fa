"""Claims on run folders: which process executes a run.

Two grids over the same runs (a second worker, or one grid started twice) share run ids. Each run is
executed under an exclusive lock on ``.<run>.lock`` beside its folder, so that the other grid skips it
instead of wiping the folder or running it twice. The OS drops the lock when its process dies: a
killed grid leaves no claim behind.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def claimed(run_dir: str | os.PathLike) -> Iterator[bool]:
    """Hold the claim on ``run_dir`` for the block (True), or learn that another process holds it (False)."""
    try:
        import fcntl
    except ImportError:  # Windows: no claims, as before
        yield True
        return
    path = Path(run_dir).with_name(f".{Path(run_dir).name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
