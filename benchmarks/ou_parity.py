"""Parity with open-unlearning: evaluate ``shared/reference/ou-parity/model`` as open-unlearning does
and compare with its own per-example evaluation, metric by metric.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/ou_parity.py [--reference ../shared/reference/ou-parity]
        [--tofu ../shared/data/tofu] [--rows N] [--markdown PARITY.md]

Prints the parity table (metric, ours, theirs, largest per-example difference, reason) and the
generations that differ. ``--rows N`` evaluates a seeded subset of N rows per split (the default
test does that; the aggregates then compare against open-unlearning's values on the same rows).
The comparison itself lives in :mod:`workbench.experiments.parity` so that the test and this script agree.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from workbench.experiments import parity

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference" / "ou-parity"))
    parser.add_argument("--tofu", default=str(ROOT.parent / "shared" / "data" / "tofu"))
    parser.add_argument("--rows", type=int, default=0, help="rows per split (0: all)")
    parser.add_argument("--markdown", default="", help="also write the table to this file")
    args = parser.parse_args()
    start = time.perf_counter()
    report = parity.run(args.reference, args.tofu, rows=args.rows or None)
    table = parity.table_markdown(report)
    print(table)
    print(f"\ngenerations: {report.generations_equal}/{report.generations_total} identical")
    for line in report.generation_differences[:10]:
        print("  " + line)
    print(f"\nevaluation {report.seconds:.1f} s, in all {time.perf_counter() - start:.1f} s")
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")


if __name__ == "__main__":
    main()
