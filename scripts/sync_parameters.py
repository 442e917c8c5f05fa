"""Rewrite each notebook's ``parameters`` cell from its config (built-in methods' parameters included).

The config dataclass is the single statement of what a notebook accepts; the parameters cell
restates it for papermill and for readers, and a test checks the two agree. Run after adding a
parameter or a method:  .venv/bin/python scripts/sync_parameters.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from workbench.runs import config

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def sync(path: Path) -> bool:
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    text = config.parameters_cell(path.stem)
    if cell.source == text:
        return False
    cell.source = text
    nbformat.write(nb, str(path))
    return True


if __name__ == "__main__":
    changed = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")) if p.stem in config.CONFIGS and sync(p)]
    print("rewrote:", ", ".join(changed) or "nothing")
    sys.exit(0)
