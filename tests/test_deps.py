"""No stale result by construction: cache keys and grid run ids cover every workbench module a result
depends on (found from the import graph), the library versions, and change when a metric changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest
import yaml

from workbench.experiments.chain import EVAL_SOURCES, TRAINING_SOURCES
from workbench.runs import cache, deps, grid

ROOT = Path(__file__).resolve().parents[1]
TRIVIAL = Path(__file__).parent / "fixtures" / "trivial.ipynb"


@pytest.mark.unit
def test_closure_follows_imports_lazy_ones_and_registries():
    metric = deps.closure(["workbench.metrics"])
    assert "workbench.likelihood" in metric and "workbench.evaluation" not in metric
    chain = deps.closure(TRAINING_SOURCES)
    assert {"workbench.training", "workbench.precision", "workbench.objectives.npo"} <= set(chain)  # registry files
    assert "workbench.metrics" not in chain  # a metric fix does not retrain θr
    assert "workbench.models.smollm" in deps.closure(["workbench.experiments.chain"])  # imported inside a function
    session = deps.closure(EVAL_SOURCES)
    assert {"workbench.metrics", "workbench.mixing", "workbench.evaluation"} <= set(session)


@pytest.mark.unit
def test_cache_keys_cover_library_versions(monkeypatch):
    key = cache.cache_key("theta_r", {"x": 1}, TRAINING_SOURCES)
    now = deps.environment()
    monkeypatch.setattr(deps, "environment", lambda: {**now, "scipy": "0.0"})
    assert cache.cache_key("theta_r", {"x": 1}, TRAINING_SOURCES) != key
    assert set(deps.VERSIONED) >= {"torch", "transformers", "tokenizers", "numpy", "scipy", "rouge-score"}


BUILD_THETA_R = textwrap.dedent('''
    import json, sys, types
    def loaded():
        return sorted(m for m in sys.modules if m == "workbench" or m.startswith("workbench."))
    from workbench.data import config_data
    from workbench.experiments import chain
    from workbench.models import resolve_device
    from workbench.runs.cache import Cache
    cfg = types.SimpleNamespace(**json.loads(sys.argv[1]), data_path=lambda: "")
    data = config_data(cfg)
    chain.chain_model(cfg, data, Cache(), resolve_device("cpu"), which="retain", force=False, progress=False)
    chain_modules = loaded()
    import workbench as wb
    from workbench.runs import config
    session = wb.open_session(config.from_params("oracle-vs-random", json.loads(sys.argv[1])), progress=False)
    wb.experiments.summarise(wb.experiments.oracle_vs_random(session).per_alpha)
    print(json.dumps({"chain": chain_modules, "run": loaded()}))
''')


@pytest.mark.integration
def test_a_run_imports_no_module_its_keys_miss(tmp_path):
    """What building θr imports is covered by θr's key; what the whole run imports by the run id."""
    from workbench.runs import config

    params = yaml.safe_load((ROOT / "params/oracle-vs-random/smoke.yaml").read_text()) | {
        "objectives": ["npo"], "localizers": [], "device": "cpu"}
    cfg = config.from_params("oracle-vs-random", params).to_dict()  # a plain dict: the child imports no config
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", BUILD_THETA_R, json.dumps(cfg)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(loaded["chain"]) - set(deps.closure(TRAINING_SOURCES)) == set()
    assert "workbench.metrics" not in loaded["chain"]  # so the metric is rightly not in θr's key
    notebook = ROOT / "notebooks" / "oracle-vs-random.ipynb"
    assert set(loaded["run"]) - set(deps.closure(deps.notebook_imports(notebook))) == set()


def _notebook_using_metrics(folder: Path) -> Path:
    nb = nbformat.read(str(TRIVIAL), as_version=4)
    for cell in nb.cells:
        cell.source = cell.source.replace("'trivial'", "'metric_user'")
    nb.cells.insert(2, nbformat.v4.new_code_cell("from workbench import metrics  # the results depend on a metric"))
    path = folder / "metric_user.ipynb"
    nbformat.write(nb, str(path))
    return path


def _grid(folder: Path, notebook: Path) -> grid.Grid:
    path = folder / f"{notebook.stem}.yaml"
    path.write_text(yaml.safe_dump({"name": notebook.stem, "notebook": str(notebook), "axes": {"seed": [1]},
                                    "fixed": {"log_file": str(folder / f"{notebook.stem}.log")}}))
    return grid.Grid.from_file(path)


@pytest.mark.notebooks
def test_grid_reruns_the_runs_a_changed_metric_touches(tmp_path, monkeypatch):
    outputs = str(tmp_path / "out")
    grids = [_grid(tmp_path, _notebook_using_metrics(tmp_path)), _grid(tmp_path, TRIVIAL)]
    assert all(set(grid.run_grid(g, outputs=outputs, jobs=1)["state"]) == {"complete"} for g in grids)
    assert all(set(grid.run_grid(g, outputs=outputs, jobs=1)["state"]) == {"skipped"} for g in grids)
    changed = tmp_path / "metrics.py"  # a test-local edit of the metric's source
    changed.write_text((ROOT / "workbench" / "metrics.py").read_text() + "\n# a fix\n")
    original = deps.module_file
    monkeypatch.setattr(deps, "module_file", lambda name: changed if name == "workbench.metrics" else original(name))
    assert set(grid.run_grid(grids[0], outputs=outputs, jobs=1)["state"]) == {"complete"}  # re-run
    assert set(grid.run_grid(grids[1], outputs=outputs, jobs=1)["state"]) == {"skipped"}  # untouched
    assert len((tmp_path / "metric_user.log").read_text().split()) == 2


@pytest.mark.integration
def test_cache_hits_check_size_and_mtime_and_verify_hashes_everything(tmp_path, monkeypatch):
    c, calls = cache.Cache(tmp_path), []
    build = lambda: calls.append(1) or {"w": __import__("torch").ones(3)}  # noqa: E731
    c.get_or_build("theta_p", {"a": 1}, build, cache.save_tensors, cache.load_tensors)
    hashed = []
    monkeypatch.setattr(cache.io, "sha256_file", lambda p, **k: hashed.append(Path(p).name) or "x")
    assert c.lookup("theta_p", {"a": 1}) is not None and hashed == []  # a hit reads no file
    assert cache.Cache(tmp_path, verify=True).lookup("theta_p", {"a": 1}) is None  # full check: "x" ≠ sha256
    assert hashed
    monkeypatch.undo()
    entry = c.lookup("theta_p", {"a": 1})
    tensors = entry / cache.TENSORS_FILE
    os.utime(tensors, ns=(0, 0))  # touched (copied without times): hashed again, still valid
    assert c.lookup("theta_p", {"a": 1}) is not None
    tensors.write_bytes(tensors.read_bytes()[:-1] + b"\0")
    os.utime(tensors, ns=(0, 0))
    assert c.lookup("theta_p", {"a": 1}) is None  # corrupted: not served
