"""The tables of an experiment on sweeps of known value: pairs within one start model, the
Random–Random baseline, calibrated p, MU95 reached counts, and runs kept apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench import experiments
from workbench.experiments import baseline as rr

pytestmark = pytest.mark.unit

ALPHAS = [0.0, 0.25, 0.5, 0.75, 1.0]
# (start, scenario, seed, c, m): FS = α, RS = 1 − c·α (AUES = 1 − c/2), MU = 1 − m·α, FQ = −2 + α.
SWEEPS = [("θo seed 7", "oracle", 7, 0.2, 0.02), ("θo seed 7", "random", 7001, 0.4, 0.1),
          ("θo seed 7", "random", 7002, 0.3, 0.1), ("θo seed 19", "oracle", 19, 0.1, 0.1),
          ("θo seed 19", "random", 19001, 0.5, 0.1), ("θo seed 19", "random", 19002, 0.6, 0.2)]


def per_alpha(sweeps=SWEEPS) -> pd.DataFrame:
    return pd.DataFrame([{"notebook": "x", "objective": "npo", "start": start, "scenario": sc, "seed": seed,
                          "alpha": a, "FS": a, "RS": 1 - c * a, "MU": 1 - m * a, "FQ": -2 + a}
                         for start, sc, seed, c, m in sweeps for a in ALPHAS])


def test_summary_aues_and_mu95_with_reached_flag():
    s = experiments.summarise(per_alpha()).set_index("seed")
    assert s.AUES.to_dict() == pytest.approx({7: 0.9, 7001: 0.8, 7002: 0.85, 19: 0.95, 19001: 0.75, 19002: 0.7})
    assert not s.loc[7, "MU95_reached"] and s.loc[7, "MU95"] == -1.0  # MU ends at 0.98: FQ at α = 1
    assert s.loc[19002, "MU95_reached"] and s.loc[19002, "MU95"] == pytest.approx(-2 + 0.05 / 0.2)


def test_pairs_form_within_one_start_only():
    tests = experiments.compare(per_alpha(), "oracle", "random", n_rounds=64)
    assert sorted(zip(tests.seed_a, tests.seed_b)) == [(7, 7001), (7, 7002), (19, 19001), (19, 19002)]
    assert tests.set_index("seed_b").dAUES.to_dict() == pytest.approx({7001: 0.1, 7002: 0.05, 19001: 0.2, 19002: 0.25})
    assert not tests.set_index("seed_b").loc[7001, "MU95_a_reached"]
    pairs = rr.random_pairs(experiments.summarise(per_alpha()), "random")
    assert sorted(zip(pairs.seed_1, pairs.seed_2)) == [(7001, 7002), (19001, 19002)]  # never 7001 with 19001
    assert pairs.dAUES.tolist() == pytest.approx([0.05, 0.05])


def test_calibrated_p_and_paper_table_by_hand():
    tables = experiments.result_tables(per_alpha(), n_rounds=64)
    tests = tables["tests"].set_index("seed_b")
    # Random–Random |ΔAUES| = 0.05 and 0.05: an Oracle–Random |Δ| of 0.05 is matched by both, larger ones by none.
    assert tests.p_AUES_rr.to_dict() == {7001: 0.0, 7002: 1.0, 19001: 0.0, 19002: 0.0}
    row = tables["table"].iloc[0]
    assert (row.scenario, row.baseline, row.pairs, row["R–R pairs"], row.labelings) == ("oracle", "random", 4, 2, 9)
    assert row["p AUES R–R"] == 0.25 and row["|ΔAUES| R–R (max)"] == pytest.approx(0.05)
    assert np.isnan(row["p AUES labels"])  # 9 labellings: p could not fall below 1/9, so none is reported
    assert row["MU95 reached"] == "1/2" and row["MU95 baseline reached"] == "4/4"
    assert row["p AUES paper (mean)"] == pytest.approx(tests.p_AUES.mean())
    assert row.AUES == "0.925 ± 0.035" and row["AUES baseline"] == "0.775 ± 0.065"


def test_tables_written_before_start_existed_pair_by_seed():
    legacy = per_alpha([("", "oracle", 1, 0.2, 0.1), ("", "random", 1, 0.3, 0.1), ("", "random", 2, 0.4, 0.1)])
    tests = experiments.compare(legacy.drop(columns="start"), "oracle", "random", n_rounds=64)
    assert list(zip(tests.start, tests.seed_b)) == [("seed 1", 1)]


def test_two_runs_with_the_same_labels_stay_apart():
    both = pd.concat([per_alpha().assign(run_id="a"), per_alpha().assign(run_id="b", RS=lambda d: d.RS - 0.1)])
    summary = experiments.summarise(both)
    assert len(summary) == 12 and set(summary.run_id) == {"a", "b"}
    tests = experiments.compare(both, "oracle", "random", n_rounds=64)
    assert len(tests) == 8 and (tests.dAUES < 0.26).all()  # no pair mixes run a with run b
    assert (tests.n_rr == 2).all()  # each run's own Random–Random pairs


def test_the_papers_test_between_two_random_regions():
    from workbench.stats import aues_permutation_test

    pairs = experiments.result_tables(per_alpha(), n_rounds=64)["random_pairs"].set_index("seed_1")
    rows = per_alpha().set_index("seed")
    expected = aues_permutation_test(rows.loc[7001].FS, rows.loc[7001].RS, rows.loc[7002].FS, rows.loc[7002].RS,
                                     n_rounds=64, seed=7002)
    assert pairs.loc[7001, "p_AUES"] == expected
    table = experiments.result_tables(per_alpha(), n_rounds=64)["table"]
    assert table.loc[0, "p AUES paper R–R (mean)"] == pytest.approx(pairs.p_AUES.mean())


def test_end_point_tests_calibrate_rs_at_full_unlearning_against_random_pairs():
    # RS at α = 1 is 1 − c: θo 7: Oracle 0.8, Random 0.6 / 0.7; θo 19: 0.9, 0.5 / 0.4; θo 31: 0.95, 0.3 / 0.35.
    sweeps = SWEEPS + [("θo seed 31", "oracle", 31, 0.05, 0.1), ("θo seed 31", "random", 31001, 0.7, 0.1),
                       ("θo seed 31", "random", 31002, 0.65, 0.1)]
    summary = experiments.summarise(per_alpha(sweeps))
    t = rr.end_point_tests(summary, "oracle", "random").iloc[0]
    assert (t.mean_a, t.min_b, t.max_b) == pytest.approx((0.8833333, 0.3, 0.7))
    # pairs: 0.2, 0.1, 0.4, 0.5, 0.65, 0.6 against Random–Random 0.1, 0.1, 0.05: only 0.1 is matched (twice of three)
    assert t.d == pytest.approx(np.mean([0.2, 0.1, 0.4, 0.5, 0.65, 0.6]))
    assert t.d_rr_max == pytest.approx(0.1)
    assert t.p_rr == pytest.approx((2 / 3) / 6)
    # the Oracle holds the highest RS of every start: the most extreme of the 3^3 labellings
    assert (t.n_labelings, t.p_labels) == (27, pytest.approx(1 / 27))
    two_starts = rr.end_point_tests(experiments.summarise(per_alpha()), "oracle", "random").iloc[0]
    assert two_starts.n_labelings == 9 and np.isnan(two_starts.p_labels)  # 9 labellings cannot reach p < 0.05
