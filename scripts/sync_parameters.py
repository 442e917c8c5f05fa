"""Rewrite each notebook's ``parameters`` cell from its config (built-in methods' parameters included).

The config dataclass is the single statement of what a notebook accepts; the parameters cell
restates it for papermill and for readers, and a test checks the two agree. The four experiment
notebooks' cells hold ``params/<notebook>/default.yaml``'s values where it sets them (what
``make demo`` and ``python -m workbench run <notebook>`` run), so that *Run All* in JupyterLab runs
that configuration rather than the dataclass's bare defaults, which stop at the injection check.
Runs from the CLI or a grid are unaffected: they pass every parameter. Run after adding a parameter
or a method, or after changing a default.yaml:  .venv/bin/python scripts/sync_parameters.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from workbench.runs import config
from workbench.runs.cli import DEMO_NOTEBOOKS, default_params
from workbench.runs.paramfiles import load_param_file
from workbench.runs.params import parameters_text

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


def cell_text(notebook: str) -> str:
    if notebook not in DEMO_NOTEBOOKS:
        return config.parameters_cell(notebook)
    default = default_params(notebook)
    values = load_param_file(default)
    rows = [(name, kind, values.get(name, value), help_) for name, kind, value, help_ in config.describe(notebook)]
    return f"# the values of {default.relative_to(ROOT)} where it sets one (what `make demo` runs)\n" + parameters_text(rows)


def sync(path: Path) -> bool:
    nb = nbformat.read(str(path), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    text = cell_text(path.stem)
    if cell.source == text:
        return False
    cell.source = text
    nbformat.write(nb, str(path))
    return True


if __name__ == "__main__":
    changed = [p.name for p in sorted(NOTEBOOKS.glob("*.ipynb")) if p.stem in config.CONFIGS and sync(p)]
    print("rewrote:", ", ".join(changed) or "nothing")
    sys.exit(0)
