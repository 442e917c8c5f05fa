"""Rewrite the README's results tables from the kept references in ``outputs/reference/``.

The README's numbers are generated, never typed: each ``<!-- results:<notebook> -->`` block is the
rendering of ``outputs/reference/<notebook>/`` (:mod:`workbench.viz.markdown`), and a test checks
that they agree. Run after keeping new reference results:  .venv/bin/python scripts/render_readme.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.viz.markdown import update_readme

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    changed = update_readme(ROOT / "README.md", ROOT / "outputs" / "reference")
    print("rewrote README.md" if changed else "README.md already matches outputs/reference")
    sys.exit(0)
