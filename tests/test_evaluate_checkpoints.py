"""The fifth notebook, evaluate-checkpoints, from the command line a user types and under papermill.

Two tiny checkpoints are written as model folders (θ_before, and θ_after with every tensor moved);
``python -m workbench evaluate --before … --after …`` runs the notebook with its smoke parameters
into a run folder like the other notebooks'. Asserted on the files it writes.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_cli import workbench_cli
from test_evaluation import build_trained, perturbed_copy

from workbench.models import save_model_folder

pytestmark = pytest.mark.notebooks
NB = "evaluate-checkpoints"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tok, model, _ = build_trained()
    root = tmp_path_factory.mktemp("checkpoints")
    save_model_folder(model, tok, root / "before")
    after = perturbed_copy(model, seed=1)
    save_model_folder(after, tok, root / "npo-like")
    return root


def test_cli_evaluate_writes_a_run_folder_with_figures(checkpoints, tmp_path):
    done = workbench_cli("evaluate", "--before", str(checkpoints / "before"), "--after", str(checkpoints / "npo-like"),
                         "--after", str(checkpoints / "before"), "--label", "noisy", "--label", "unchanged",
                         "--retain-model", str(checkpoints / "before"), "-p", "params/evaluate-checkpoints/smoke.yaml",
                         "--run-id", "smoke", "--outputs", str(tmp_path), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / NB / "smoke"
    for name in ("params.json", "status.json", "per_alpha.parquet", "per_example.parquet", "summary.csv", "ends.csv",
                 "notes.json", "figures.html", f"{NB}.ipynb"):
        assert (run / name).exists(), name
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    params = json.loads((run / "params.json").read_text())["params"]
    assert params["before"] == str(checkpoints / "before") and params["labels"] == ["noisy", "unchanged"]
    per_alpha = pd.read_parquet(run / "per_alpha.parquet")
    assert sorted(per_alpha.alpha.unique()) == [0.0, 0.5, 1.0] and set(per_alpha.scenario) == {"noisy", "unchanged"}
    unchanged = per_alpha[per_alpha.scenario == "unchanged"]
    assert unchanged.FS.nunique() == 1 and unchanged.FQ.abs().max() < 1e-9  # θ_after = θ_before = θr: a point, FQ = log10 1
    summary = pd.read_csv(run / "summary.csv")
    assert summary.AUES.between(0, 1).all() and summary.MU95.notna().all()
    html = (run / "figures.html").read_text()
    assert "RS vs FS, one curve per method" in html and "MU vs FQ, one curve per method" in html


def test_cli_evaluate_needs_before_and_after(tmp_path):
    done = workbench_cli("evaluate", "--before", "x/y", "--outputs", str(tmp_path), timeout=120)
    assert done.returncode == 2 and "--after" in done.stderr and not (tmp_path / NB).exists()
    done = workbench_cli("evaluate", "--before", "./no-such-model", "--after", "a/b", "--outputs", str(tmp_path), timeout=120)
    assert done.returncode == 2 and "'before' = './no-such-model': no such folder" in done.stderr


def test_parameters_cell_matches_the_config_and_the_notebook_is_stripped():
    import nbformat
    import papermill as pm

    from workbench.runs import config

    declared = pm.inspect_notebook(f"notebooks/{NB}.ipynb")
    assert set(declared) == set(config.field_names(NB))
    cfg = config.config_class(NB)()
    for name, info in declared.items():
        assert eval(info["default"]) == getattr(cfg, name), name  # noqa: S307 — literal from our own notebook
    src = nbformat.read(f"notebooks/{NB}.ipynb", as_version=4)
    assert not any(c.get("outputs") for c in src.cells if c.cell_type == "code")
