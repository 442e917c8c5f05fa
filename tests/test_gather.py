"""Gathering finished runs into one result: the same tables as one run holding every sweep, and a
refusal, naming the run and the fix, wherever the runs are not one experiment."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_tables import SWEEPS, per_alpha

from workbench import experiments
from workbench.runs import cli, config
from workbench.runs import rundir as runs
from workbench.viz.gather import GatherError, gather

pytestmark = pytest.mark.integration

PARAMS = {"seed": 0, "lr_npo": 0.01, "n_rounds": 200, "objectives": ["npo"]}


def _run(outputs, run_id: str, start: str, *, params=None, complete=True, change=None) -> runs.RunDir:
    """A finished run holding the sweeps of ``SWEEPS`` that start from ``start``."""
    table = per_alpha([s for s in SWEEPS if s[0] == start])
    if change is not None:
        table = change(table)
    seed = int(start.split()[-1])
    run = runs.RunDir.create("oracle-vs-random", {**PARAMS, "region_seeds": [seed], **(params or {})},
                             run_id=run_id, outputs=outputs, device="cpu")
    run.save_table(table, runs.PER_ALPHA)
    pd.DataFrame({"seed": [seed], "forget_es_r": [0.0], "retain_es_r": [1.0], "forget_es_o": [1.0],
                  "retain_es_o": [1.0]}).to_csv(run.path / "checks.csv", index=False)
    if complete:
        run.complete()
    return run


def test_gathered_tables_equal_one_run_of_every_sweep(tmp_path):
    a, b = _run(tmp_path, "a", "θo seed 7"), _run(tmp_path, "b", "θo seed 19")
    dest = gather([a.path, b.path], tmp_path / "both")
    expected = experiments.result_tables(per_alpha(), n_rounds=PARAMS["n_rounds"])
    for name in ("summary", "tests", "table", "random_pairs"):
        got = pd.read_csv(dest / f"{name}.csv")
        want = pd.read_csv(pd.io.common.StringIO(expected[name].to_csv(index=False)))
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    table = pd.read_csv(dest / "table.csv").iloc[0]
    # Over both target seeds: two Random–Random pairs (one per θo) and 3 x 3 region labellings, where
    # each run alone has one pair and 3 labellings.
    assert (table["R–R pairs"], table["labelings"]) == (2, 9)
    info = json.loads((dest / "params.json").read_text())
    assert info["params"]["region_seeds"] == [7, 19] and info["params"]["lr_npo"] == 0.01
    assert [g["run_id"] for g in info["gathered_from"]] == ["a", "b"]
    assert sorted(pd.read_csv(dest / "checks.csv").seed) == [7, 19]
    assert "RS vs FS" in (dest / "figures.html").read_text()


def test_a_sweep_in_two_runs_is_kept_once_and_must_agree(tmp_path):
    a, b = _run(tmp_path, "a", "θo seed 7"), _run(tmp_path, "b", "θo seed 19")
    again = _run(tmp_path, "c", "θo seed 7")
    dest = gather([a.path, b.path, again.path], tmp_path / "once")
    assert len(pd.read_csv(dest / "per_alpha.csv")) == len(per_alpha())
    moved = _run(tmp_path, "d", "θo seed 7", change=lambda t: t.assign(RS=t.RS - 0.01))
    with pytest.raises(GatherError, match="sweep .* is in a and in d with different numbers"):
        gather([a.path, moved.path], tmp_path / "clash")


def test_runs_of_another_setting_are_refused_unless_allowed(tmp_path):
    a = _run(tmp_path, "a", "θo seed 7")
    b = _run(tmp_path, "b", "θo seed 19", params={"lr_npo": 0.02})
    with pytest.raises(GatherError, match=r"lr_npo: a=0.01, b=0.02.*--allow lr_npo"):
        gather([a.path, b.path], tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written
    dest = gather([a.path, b.path], tmp_path / "allowed", allow=["lr_npo"])
    info = json.loads((dest / "params.json").read_text())
    assert "lr_npo" not in info["params"] and info["differing"]["lr_npo"] == [0.01, 0.02]


def test_a_parameter_added_after_a_run_counts_as_its_default(tmp_path):
    """A kept run recorded before ``eval_dtype`` existed gathers with a newer run that records the default
    (and the filling is recorded), but not with one that set it otherwise."""
    default = config.from_params("oracle-vs-random", {}).eval_dtype
    old, new = _run(tmp_path, "old", "θo seed 7"), _run(tmp_path, "new", "θo seed 19", params={"eval_dtype": default})
    info = json.loads((gather([old.path, new.path], tmp_path / "both") / "params.json").read_text())
    assert info["params"]["eval_dtype"] == default and "eval_dtype" in info["filled_with_defaults"]["old"]
    assert "eval_dtype" not in info["filled_with_defaults"]["new"]
    other = _run(tmp_path, "other", "θo seed 19", params={"eval_dtype": "bfloat16"})
    with pytest.raises(GatherError, match=rf"eval_dtype: old={default!r}, other='bfloat16'"):
        gather([old.path, other.path], tmp_path / "refused")


def test_unfinished_runs_other_notebooks_and_a_full_folder_are_refused(tmp_path):
    a, b = _run(tmp_path, "a", "θo seed 7"), _run(tmp_path, "b", "θo seed 19", complete=False)
    with pytest.raises(GatherError, match="the run is running, not complete"):
        gather([a.path, b.path], tmp_path / "x")
    other = runs.RunDir.create("lume", PARAMS, run_id="l", outputs=tmp_path, device="cpu")
    other.save_table(per_alpha(), runs.PER_ALPHA)
    other.complete()
    with pytest.raises(GatherError, match="different notebooks"):
        gather([a.path, other.path], tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    b.complete()
    with pytest.raises(GatherError, match="not empty"):
        gather([a.path, b.path], tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_cli_gathers_and_reports_a_refusal_in_one_line(tmp_path, capsys):
    a, b = _run(tmp_path, "a", "θo seed 7"), _run(tmp_path, "b", "θo seed 19")
    assert cli.main(["gather", str(tmp_path / "out"), str(a.path), str(b.path), "--title", "five θo, one table"]) == 0
    assert (tmp_path / "out" / "table.csv").is_file()
    assert "five θo, one table" in (tmp_path / "out" / "figures.html").read_text(encoding="utf-8")
    assert cli.main(["gather", str(tmp_path / "out"), str(a.path), str(b.path)]) == cli.EXIT_INVALID
    assert "not empty" in capsys.readouterr().err


def test_gathered_result_renders_one_row_per_target_seed(tmp_path):
    from workbench.viz.markdown import results_block

    a, b = _run(tmp_path, "a", "θo seed 7"), _run(tmp_path, "b", "θo seed 19")
    block = results_block(gather([b.path, a.path], tmp_path / "both"))
    rows = [line for line in block.splitlines() if line.startswith("| npo | θo seed")]
    # numeric order of the seeds; RS at α = 1 is 1 − c: Oracle 0.80, Random 0.60 / 0.70 at seed 7
    assert rows[0].startswith("| npo | θo seed 7 | 0.900 | 0.825 (0.800–0.850) | 0.80 | 0.65 (0.60–0.70) |")
    assert rows[1].startswith("| npo | θo seed 19 |")
    assert "npo, RS at α = 1, Oracle vs Random: 0.85 vs 0.55 (0.40–0.70)" in block


def _recovery_run(outputs, run_id: str, model: str, auroc: float, seeds=(7, 19)) -> runs.RunDir:
    rows = pd.DataFrame([{"fraction": 0.1, "seed": seed, "inject_epochs": epochs, "localizer": name,
                          "forget_es_o": epochs / 10, "rel_change": 0.01 * epochs, "precision": 0.1, "auroc": auroc + seed / 1000,
                          "base_rate": 0.1, "passes_check": epochs > 5}
                         for seed in seeds for epochs in (2, 8) for name in ("activations", "wagle")])
    run = runs.RunDir.create("localizer-recovery", {"model": model, "region_seeds": list(seeds)}, run_id=run_id,
                             outputs=outputs, device="cpu")
    rows.to_csv(run.path / "localization.csv", index=False)
    run.complete()
    return run


def test_localizer_recovery_runs_of_two_models_gather_into_one_figure_and_table(tmp_path):
    from workbench.viz.markdown import results_block

    tiny, smol = _recovery_run(tmp_path, "t", "tiny-llama", 0.9), _recovery_run(tmp_path, "s", "smollm2", 0.5)
    with pytest.raises(GatherError, match="--allow model"):
        gather([tiny.path, smol.path], tmp_path / "refused")
    dest = gather([tiny.path, smol.path], tmp_path / "both", allow=["model"])
    summary = pd.read_csv(dest / "summary.csv")
    assert len(summary) == 2 * 2 * 2  # model x strength x localizer, means over the two seeds
    assert summary.set_index(["model", "inject_epochs", "localizer"]).auroc[("smollm2", 8, "wagle")] == pytest.approx(0.513)
    block = results_block(dest)
    assert "| smollm2 | 10% | 8 | 0.80 | 0.080 | yes | 0.513 (0.10) | 0.513 (0.10) |" in block
    assert "WAGLE \\u00b7 smollm2" in (dest / "figures.html").read_text()  # one line per localizer and model


def test_a_model_run_at_one_fraction_only_still_has_a_legend_entry():
    from workbench.viz.recovery import recovery_figure

    rows = pd.DataFrame([{"model": model, "fraction": fraction, "seed": 7, "inject_epochs": 5, "localizer": "wagle",
                          "forget_es_o": 0.9, "auroc": 0.6, "precision": 0.2}
                         for model, fraction in (("tiny-llama", 0.01), ("tiny-llama", 0.1), ("smollm2", 0.1))])
    legend = [t.name for t in recovery_figure(rows).data if t.showlegend]
    assert sorted(legend) == ["WAGLE · smollm2", "WAGLE · tiny-llama"]


def test_recovery_table_of_models_with_different_seed_counts_says_each_count(tmp_path):
    from workbench.viz.markdown import results_block

    tiny, smol = _recovery_run(tmp_path, "t", "tiny-llama", 0.9), _recovery_run(tmp_path, "s", "smollm2", 0.5, seeds=(7,))
    block = results_block(gather([tiny.path, smol.path], tmp_path / "both", allow=["model", "region_seeds"]))
    assert "Means over target seeds, smollm2: 1, tiny-llama: 2 (one θo each per cell)" in block
    same = _recovery_run(tmp_path, "s2", "smollm2", 0.5)  # two seeds each: one count
    assert "Means over 2 target seeds (one" in results_block(gather([tiny.path, same.path], tmp_path / "two", allow=["model"]))
