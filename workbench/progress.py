"""Progress bars that reach whoever is waiting: a widget in JupyterLab, text on the terminal under the CLI.

Inside a notebook kernel ``tqdm.auto`` draws an ipywidgets bar, which papermill stores in the
executed notebook but never shows on the terminal of ``python -m workbench run``. The CLI sets
``WORKBENCH_PROGRESS=text`` for the kernel it starts; bars are then plain text on stderr, which
papermill streams to the terminal (``log_output``), refreshed at most every ``mininterval`` seconds
so that the executed notebook does not fill up with bar frames.
"""

from __future__ import annotations

import os
import sys
from typing import Any

ENV = "WORKBENCH_PROGRESS"
TEXT_INTERVAL_S = 15.0


def text_mode() -> bool:
    return os.environ.get(ENV) == "text"


def progress_bar(*args: Any, **kwargs: Any):
    """A ``tqdm`` bar: text on stderr under the CLI, ``tqdm.auto`` otherwise (same arguments)."""
    if text_mode():
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", TEXT_INTERVAL_S)
        kwargs.setdefault("ascii", True)
        return tqdm(*args, file=sys.stderr, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(*args, **kwargs)


def announce(message: str) -> None:
    """A stage name, printed for the terminal under the CLI (the run's status file records it too)."""
    if text_mode():
        print(f"[workbench] {message}", file=sys.stderr, flush=True)
