"""Localizer recovery (beyond the paper): each localizer scored against knowledge planted in a known region,
for several region fractions, target seeds and injection strengths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from workbench.delta import RegionDelta
from workbench.experiments.recovery import relative_change
from workbench.regions import random_region
from workbench.runs import config
from workbench.viz.markdown import results_block
from workbench.viz.report import keep_reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.unit
def test_relative_change_is_the_median_per_vector_ratio(tiny_llama_model):
    region = random_region(tiny_llama_model, 0.25, 3)
    delta = RegionDelta(tiny_llama_model, region)
    scales = {}
    with torch.no_grad():
        for i, layer in enumerate(delta.layers):  # row j of layer i moves by (i + 1) * (j + 1) % 5 / 10 of itself
            rows = delta.params[str(layer)]
            factor = torch.tensor([((i + 1) * (j + 1) % 5) / 10 for j in range(rows.shape[0])])
            rows.mul_(1 + factor[:, None])
            scales[layer] = factor
    expected = torch.cat(list(scales.values())).median()  # ‖v(1+f) − v‖ / ‖v‖ = f, computed without norms
    assert relative_change(delta) == pytest.approx(float(expected), rel=1e-5)
    assert relative_change(RegionDelta(tiny_llama_model, region)) == 0.0  # nothing trained: nothing changed


@pytest.mark.unit
def test_config_checks_each_fraction_and_strength_and_knows_no_learning_rates():
    with pytest.raises(config.ConfigError, match="'region_fractions' must lie in the open interval"):
        config.from_params("localizer-recovery", {"region_fractions": [0.1, 1.5]})
    with pytest.raises(config.ConfigError, match="'injection_epochs' must be positive"):
        config.from_params("localizer-recovery", {"injection_epochs": [5, 0]})
    with pytest.raises(config.ConfigError, match="unknown localizer 'oracle'"):
        config.from_params("localizer-recovery", {"localizers": ["oracle"]})
    names = set(config.field_names("localizer-recovery"))
    assert "memflex_mu" in names and not any(n.startswith("lr_") for n in names)  # nothing is unlearned
    # a 30% region alone is fine here (no disjoint Random region has to fit beside it)
    assert config.from_params("localizer-recovery", {"region_fractions": [0.6]}).region_fractions == [0.6]


@pytest.mark.notebooks
def test_the_cli_runs_the_notebook_and_a_second_run_recomputes_nothing(tmp_path):
    """From the CLI, as a researcher runs it; then again into another run id: every θo and every score is served
    from the cache, so the table is the same to the last bit."""
    env = {**__import__("os").environ, "WORKBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    tables = []
    for run_id in ("first", "again"):
        cmd = [sys.executable, "-m", "workbench", "run", "localizer-recovery", "-p",
               "params/localizer-recovery/smoke.yaml", "--run-id", run_id, "--outputs", str(tmp_path / "out")]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        run = tmp_path / "out" / "localizer-recovery" / run_id
        assert (run / "figures.html").is_file() and (run / "summary.csv").is_file()
        tables.append(pd.read_csv(run / "localization.csv"))
    table = tables[0]
    # smoke.yaml: fractions [0.1, 0.3] x seed [7] x epochs [1, 2] x localizers [activations, wagle]
    assert len(table) == 8 and set(table.localizer) == {"activations", "wagle"}
    assert set(zip(table.fraction, table.inject_epochs)) == {(0.1, 1), (0.1, 2), (0.3, 1), (0.3, 2)}
    assert table.precision.to_numpy() == pytest.approx((table.hits / table.k).to_numpy()) and (table.k == table["size"]).all()
    # each θo differs by strength: the longer injection moved the region further
    change = table.groupby(["fraction", "inject_epochs"]).rel_change.first()
    assert (change.xs(2, level="inject_epochs") > change.xs(1, level="inject_epochs")).all()
    assert not table.passes_check.any()  # smoke injections are far below min_forget_es = 0.8: recorded, not raised
    pd.testing.assert_frame_equal(tables[0], tables[1])
    # kept and rendered as docs/results.md renders kept references: one row per fraction and strength
    kept = keep_reference(tmp_path / "out" / "localizer-recovery" / "first", tmp_path / "reference" / "localizer-recovery")
    assert "AUROC against V_tgt" in (kept / "figures.html").read_text() and not (kept / "per_alpha.csv").exists()
    block = results_block(kept)
    rows = [line for line in block.splitlines() if line.startswith("| 10% | 1 |")]
    auroc = table[(table.fraction == 0.1) & (table.inject_epochs == 1) & (table.localizer == "wagle")].auroc.mean()
    assert len(rows) == 1 and rows[0].split("|")[-2].strip().startswith(f"{auroc:.3f} (")  # WAGLE: the last column
    assert "| 30% | 2 |" in block and "Means over 1 target seed" in block
