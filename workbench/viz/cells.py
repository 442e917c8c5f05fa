"""How a kept results table is read back and its p-values are written, for every rendering of it.

The README's results blocks (:mod:`workbench.viz.markdown`) and the comparison with the paper
(:mod:`workbench.viz.paper`) read the same ``table.csv`` and print p the same way; both take it
from here, so neither needs the other.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd


def p_value(value: float) -> str:
    """Two significant digits; '–' where a test was not run or could not reach 0.05."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.2g}"


# Mean ± std cells are written as text ("0.740"); reading them as numbers would drop the trailing zero.
TEXT_COLUMNS = ["Original FQ", "MU95 reached", "MU95 baseline reached"] + [
    f"{c}{m}{s}" for m in ("AUES", "MU95") for c, s in (("", ""), ("", " baseline"), ("|Δ", "|"))]


def read_table(folder: Path) -> pd.DataFrame:
    """A kept run's ``table.csv``, its mean ± std cells kept as the text they were written as."""
    return pd.read_csv(folder / "table.csv", dtype={c: str for c in TEXT_COLUMNS}, keep_default_na=False,
                       na_values=[""])
