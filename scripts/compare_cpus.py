"""Which conclusions of the kept synthetic results survive another CPU? (issue 28, item 7)

Float reduction order differs between CPU models (and thread counts), and tiny-model training amplifies it,
so the same parameters give other AUES on an AMD EPYC than on the Intel Xeon the kept references were made on.
This compares, row by row of each notebook's ``table.csv``, a kept reference with the same notebook run on
another CPU, and says for each row whether its conclusion holds on both:

* the sign of the region's difference from Random (AUES and MU95), and
* the side of 0.05 of the calibrated p (``p … R–R``), the quantity the verdicts read.

    .venv/bin/python scripts/compare_cpus.py outputs/reference outputs/reference/amd-epyc   # markdown to stdout
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

NOTEBOOKS = ["revisit-localizers", "oracle-vs-random", "l2-mlp-supervision", "lume"]
KEYS = ["objective", "scenario"]


def _mean(cell) -> float:
    """``0.751 ± 0.027`` → 0.751; numbers pass through."""
    try:
        return float(str(cell).split("±")[0])
    except ValueError:  # '–' or empty: not computed (e.g. MU95 on LUME)
        return float("nan")


def cpu_of(folder: Path) -> str:
    info = json.loads((folder / "params.json").read_text())
    return f"{info.get('cpu_model', 'Intel Xeon (not recorded)')}, {info.get('threads', 1)} thread(s)"


def compare(a: Path, b: Path) -> pd.DataFrame:
    """One row per (objective, scenario) of both tables: each side's numbers and whether the conclusion holds."""
    ta, tb = pd.read_csv(a / "table.csv"), pd.read_csv(b / "table.csv")
    rows = []
    for _, ra in ta.iterrows():
        match = tb[(tb.objective == ra.objective) & (tb.scenario == ra.scenario)]
        if match.empty:
            continue
        rb = match.iloc[0]
        row = {"objective": ra.objective, "scenario": ra.scenario}
        holds = True
        for q in ("AUES", "MU95"):
            if q not in ta or pd.isna(_mean(ra.get(q))):
                continue
            da, db = _mean(ra[q]) - _mean(ra[f"{q} baseline"]), _mean(rb[q]) - _mean(rb[f"{q} baseline"])
            pa, pb = ra.get(f"p {q} R–R"), rb.get(f"p {q} R–R")
            row[f"Δ{q}"] = f"{da:+.3f} → {db:+.3f}"
            row[f"p {q} calibrated"] = f"{pa:.2f} → {pb:.2f}" if pd.notna(pa) and pd.notna(pb) else "–"
            same_sign = (da > 0) == (db > 0) or min(abs(da), abs(db)) < 1e-3
            same_side = pd.isna(pa) or pd.isna(pb) or (pa < 0.05) == (pb < 0.05)
            holds &= bool(same_sign and same_side)
        row["holds on both CPUs"] = "yes" if holds else "**no**"
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    lines += ["| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |" for row in df[cols].itertuples(index=False)]
    return "\n".join(lines)


def report(kept: Path, other: Path) -> str:
    """Every notebook both folders hold, as markdown: a heading line with the two CPUs, then the rows."""
    parts = []
    for nb in NOTEBOOKS:
        a, b = Path(kept) / nb, Path(other) / nb
        if (a / "table.csv").is_file() and (b / "table.csv").is_file():
            parts.append(f"**{nb}** — {cpu_of(a)} → {cpu_of(b)}\n\n{markdown(compare(a, b))}")
    return "\n\n".join(parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kept", help="folder of kept references (<nb>/table.csv), e.g. outputs/reference")
    p.add_argument("other", help="folder with the same notebooks run on another CPU")
    args = p.parse_args(argv)
    print(report(Path(args.kept), Path(args.other)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
