"""Rewrite the results tables of ``docs/results.md`` (and any in ``README.md``) from ``outputs/reference/``.

The numbers are generated, never typed: each ``<!-- results:<path> -->`` block is the rendering of
``outputs/reference/<path>/`` (:mod:`workbench.viz.markdown`), each ``<!-- paper:<path> -->`` block its
comparison with the paper's tables (:mod:`workbench.viz.paper`), and ``tests/test_readme.py`` checks
that the pages equal their rendering. Run after keeping new reference results, or after changing how
a block is rendered:  .venv/bin/python scripts/render_readme.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from workbench.viz.markdown import update_readme

ROOT = Path(__file__).resolve().parents[1]
# The pages with generated blocks; the README's summary table is checked against docs/results.md instead.
PAGES = ["docs/results.md", "README.md"]

if __name__ == "__main__":
    for page in PAGES:
        changed = update_readme(ROOT / page, ROOT / "outputs" / "reference")
        print(f"rewrote {page}" if changed else f"{page} already matches outputs/reference")
    sys.exit(0)
