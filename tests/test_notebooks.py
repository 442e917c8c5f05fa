"""The four notebooks run under papermill with their smoke parameters and write sane files.

Asserted on the files a run writes (never on cell output text): the α grid is complete, the
numbers are finite where they are defined, and the summary and paper-shaped tables have the rows
the experiment implies.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench.runs import grid

pytestmark = pytest.mark.notebooks

NOTEBOOKS = ["oracle-vs-random", "l2-mlp-supervision", "lume", "revisit-localizers"]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """Execute every notebook once with params/<nb>/smoke.yaml into a temporary outputs folder."""
    outputs = tmp_path_factory.mktemp("outputs")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE", str(cache))
    results = {}
    for nb in NOTEBOOKS:
        name, path = grid.resolve_notebook(nb)
        params = grid.validate(name, path, grid.merge_params([f"params/{nb}/smoke.yaml"], path.parents[1]))
        spec = grid.RunSpec(notebook=name, path=str(path), params=params, run_id="smoke", outputs=str(outputs), threads=1)
        results[nb] = grid.execute(spec)
    mp.undo()
    return results


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_smoke_run_writes_documented_files(smoke_runs, nb):
    result = smoke_runs[nb]
    assert result.state == "complete", result.error
    run = result.run_dir
    for name in ("params.json", "status.json", "per_alpha.parquet", "per_example.parquet", "summary.csv",
                 "tests.csv", "table.csv", "regions.csv", "figures.html", f"{nb}.ipynb"):
        assert (pd.io.common.Path(run) / name).exists(), name
    params = json.load(open(f"{run}/params.json"))
    assert params["params"]["run_id"] == "smoke" and "torch" in json.dumps(params)
    assert json.load(open(f"{run}/status.json"))["state"] == "complete"


@pytest.mark.parametrize("nb", NOTEBOOKS)
def test_smoke_tables_are_sane(smoke_runs, nb):
    run = smoke_runs[nb].run_dir
    per_alpha = pd.read_parquet(f"{run}/per_alpha.parquet")
    n_alpha = 3  # smoke.yaml
    for _, g in per_alpha.groupby(["objective", "scenario", "seed"]):
        assert sorted(g.alpha) == pytest.approx(list(np.linspace(0, 1, n_alpha)))
        assert np.isfinite(g[["FS", "RS"]]).all().all()
        assert g.FS.between(0, 1).all() and g.RS.between(0, 1).all()
    summary = pd.read_csv(f"{run}/summary.csv")
    assert len(summary) == per_alpha.groupby(["objective", "scenario", "seed"]).ngroups
    assert summary.AUES.between(0, 1).all()
    if nb != "lume":  # FQ and MU are undefined outside TOFU-shaped data
        assert np.isfinite(per_alpha[["MU", "FQ"]]).all().all()
        assert (per_alpha.FQ <= 0).all()
    table = pd.read_csv(f"{run}/table.csv")
    expected = {"oracle-vs-random": 2, "l2-mlp-supervision": 1, "lume": 1, "revisit-localizers": 2}[nb]
    assert len(table) == expected
    tests = pd.read_csv(f"{run}/tests.csv")
    assert tests.p_AUES.between(0, 1).all()
    # Every Oracle–Random pair shares its starting model; MU95 carries its reached count.
    assert (tests.start.str.startswith("θo seed") | (tests.start == "θ_full")).all()
    if nb != "lume":
        assert table["MU95 reached"].str.fullmatch(r"\d+/\d+").all()
    if nb in ("oracle-vs-random", "lume"):  # random_per_seed = 2: one Random–Random pair per θo
        pairs = pd.read_csv(f"{run}/random_pairs.csv")
        assert len(pairs) == len(table) and (pairs.seed_1 // 1000 == 7).all()
        assert tests.p_AUES_rr.isin([0.0, 1.0]).all() and table["R–R pairs"].eq(1).all()


def test_executed_notebook_and_repository_copies(smoke_runs):
    """The committed notebooks carry no outputs; the executed copies under outputs/ do."""
    import nbformat

    for nb in NOTEBOOKS:
        src = nbformat.read(f"notebooks/{nb}.ipynb", as_version=4)
        assert not any(c.get("outputs") for c in src.cells if c.cell_type == "code")
        tags = [c for c in src.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tags) == 1
        ran = nbformat.read(f"{smoke_runs[nb].run_dir}/{nb}.ipynb", as_version=4)
        assert any(c.get("outputs") for c in ran.cells if c.cell_type == "code")


def test_parameters_cell_matches_config_defaults_and_default_yaml():
    """The notebook's parameters cell declares the config dataclass's fields, with the values of
    params/<nb>/default.yaml where it sets one and the dataclass's otherwise: *Run All* in JupyterLab
    runs what `make demo` runs (the bare defaults stop at the injection check)."""
    import papermill as pm

    from workbench.runs import config

    for nb in NOTEBOOKS:
        declared = pm.inspect_notebook(f"notebooks/{nb}.ipynb")
        assert set(declared) == set(config.field_names(nb)), nb
        demo = grid.load_yaml(open(f"params/{nb}/default.yaml").read())
        expected = config.config_class(nb)().to_dict() | demo
        for name, info in declared.items():
            assert eval(info["default"]) == expected[name], (nb, name)  # noqa: S307 — literal from our own notebook


@pytest.mark.parametrize("path", sorted(p for p in __import__("glob").glob("params/*/*.yaml") if "/campaign/" not in p))
def test_every_parameter_file_validates(path):
    """Paper-scale and local-data files are not run here, so at least their parameters must be valid. A rehearsal
    overlay (params/rehearsal/<notebook>.yaml) is validated on top of the file it follows."""
    from workbench.runs import config

    folder, name = path.split("/")[1], Path(path).stem
    if folder == "rehearsal":
        base = "default" if name == "evaluate-checkpoints" else "paper-llama"
        params = grid.load_yaml(open(f"params/{name}/{base}.yaml").read()) | grid.load_yaml(open(path).read())
        config.from_params(name, params)
    else:
        config.from_params(folder, grid.load_yaml(open(path).read()))


@pytest.mark.parametrize("path", sorted(__import__("glob").glob("params/campaign/*.yaml")))
def test_every_campaign_grid_expands_to_valid_runs(path, tmp_path):
    """The real-data campaign's grids (issue 16): every run of every grid validates before any work."""
    specs, _ = grid.expand(grid.Grid.from_file(path), outputs=str(tmp_path), jobs=1)
    assert specs and all(spec.run_id.startswith("g-") for spec in specs)
