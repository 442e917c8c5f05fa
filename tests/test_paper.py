"""Our kept results next to the paper's numbers: Δ, Δ/σ_R and the verdict, on hand-made tables."""

from __future__ import annotations

import pandas as pd
import pytest

from workbench.viz import paper

pytestmark = pytest.mark.unit


def _kept(tmp_path):
    # Two start models; Oracle and two Random sweeps each. By hand: Δ per start = 0.70 − 0.61 and
    # 0.66 − 0.59, mean 0.08; σ_R = std(0.60, 0.62, 0.58, 0.60) = 0.016330 → Δ/σ_R = +4.9.
    rows = [("npo", "θo 7", "oracle", 0.70, -5.0, True), ("npo", "θo 7", "random", 0.60, -6.0, True),
            ("npo", "θo 7", "random", 0.62, -7.0, False), ("npo", "θo 19", "oracle", 0.66, -4.0, True),
            ("npo", "θo 19", "random", 0.58, -6.0, True), ("npo", "θo 19", "random", 0.60, -5.0, True)]
    summary = pd.DataFrame(rows, columns=["objective", "start", "scenario", "AUES", "MU95", "MU95_reached"])
    summary.to_csv(tmp_path / "summary.csv", index=False)
    pd.DataFrame([{"objective": "npo", "scenario": "oracle", "baseline": "random", "p AUES paper (mean)": 0.5,
                   "p AUES R–R": 0.01, "p MU95 paper (mean)": 0.4, "p MU95 R–R": 0.3}]).to_csv(tmp_path / "table.csv", index=False)
    pd.DataFrame([
        {"table": 2, "model": "M", "objective": "npo", "region": "random", "metric": "aues", "mean": 0.60, "std": 0.02, "p_value": 0.7},
        {"table": 2, "model": "M", "objective": "npo", "region": "oracle", "metric": "aues", "mean": 0.61, "std": 0.01, "p_value": 0.7},
    ]).to_csv(tmp_path / "paper.csv", index=False)
    return summary


def test_our_delta_is_per_start_model_and_in_units_of_random_spread(tmp_path):
    summary = _kept(tmp_path)
    row = paper.ours(summary, "AUES").iloc[0]
    assert row.delta == pytest.approx(0.08)
    assert row.sigma == pytest.approx(0.0163299, rel=1e-5)
    assert paper.ours(summary, "MU95").iloc[0].reached == "2/2 vs 3/4"


def test_comparison_row_and_verdict(tmp_path):
    _kept(tmp_path)
    lines = paper.comparison(tmp_path, "oracle-vs-random", "AUES", tmp_path / "paper.csv")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[2] == "+0.080 (+4.9)" and cells[3] == "0.5 / 0.01"
    assert cells[4] == "+0.010 (+0.5), 0.7"  # the paper: Oracle 0.61 − Random 0.60, σ_R 0.02
    assert cells[5] == "differ: ours separates from Random"
    assert paper.comparison(tmp_path, "oracle-vs-random", "MU95", tmp_path / "paper.csv") == []  # the paper has none


def test_verdicts():
    assert paper._verdict(0.01, 0.6, -0.01, 0.4).startswith("agree: no difference")
    assert paper._verdict(0.01, 0.6, -0.01, 0.01) == "differ: the paper separates"
    assert paper._verdict(0.03, 0.4, -0.02, float("nan")) == "opposite ordering (paper: below Random)"
    assert paper._verdict(-0.03, 0.4, -0.02, float("nan")) == "same ordering (paper: below Random)"
