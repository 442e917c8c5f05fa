"""The CLI as a new user meets it: from the repository root, with the README's commands.

A run with a *relative* ``data_dir`` on real LUME data (the README's real-data command failed this
way while every test passed), its progress on the terminal, and the bad inputs that used to reach
the notebook (a YAML syntax error, a model folder that does not exist) refused in one line each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytestmark = pytest.mark.notebooks


def workbench_cli(*args: str, cwd: Path = ROOT, env: dict | None = None, timeout: int = 900):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_real_data_with_a_relative_data_dir_from_the_repository_root(shared_data, tmp_path):
    relative = os.path.relpath(shared_data / "lume", ROOT)
    done = workbench_cli("run", "lume", "-p", "params/lume/smoke.yaml", "-p", "data=lume", "-p", f"data_dir={relative}",
                         "--run-id", "relative", "--outputs", str(tmp_path), env={"WORKBENCH_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    params = json.loads((tmp_path / "lume" / "relative" / "params.json").read_text())["params"]
    # the kernel ran elsewhere and found the data (the run completed); params.json names the folder relative to the
    # repository, free of this machine's paths (kept results are compared across machines)
    assert (ROOT / params["data_dir"]).resolve() == (shared_data / "lume").resolve()
    assert not Path(params["data_dir"]).is_absolute()
    # progress reaches the terminal: stage names and text progress bars
    assert "[workbench] controlled setting" in done.stderr
    assert "region seeds" in done.stderr and "%|" in done.stderr


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 1\nobjectives: [npo, wga\nn_alpha: 3\n")
    done = workbench_cli("run", "lume", "-p", str(bad), "--outputs", str(tmp_path), timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:3:") and "not valid YAML" in lines[0], done.stderr
    assert not (tmp_path / "lume").exists()


def test_a_model_folder_that_does_not_exist_is_refused_before_any_work(tmp_path):
    done = workbench_cli("run", "lume", "-p", "model=./no-such-model", "--outputs", str(tmp_path), timeout=120)
    assert done.returncode == 2 and "'model' = './no-such-model': no such folder, and not a hub id" in done.stderr
    assert "Repo id" not in done.stderr and not (tmp_path / "lume").exists()


def test_a_grid_run_one_at_a_time_streams_its_progress(tmp_path):
    """A campaign grid runs for hours: when one run executes at a time (here one run left, with the
    default --jobs), its stages and bars reach the terminal (they used to show nothing but the grid's
    own 'runs: 0run' for an hour), and the grid's bar knows how many runs are left."""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(f"notebook: lume\nparams: {ROOT / 'params/lume/smoke.yaml'}\nfixed:\n  region_seeds: [19]\n")
    done = workbench_cli("grid", str(grid_file), "--outputs", str(tmp_path / "out"),
                         env={"WORKBENCH_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[workbench] controlled setting" in done.stderr and "region seeds" in done.stderr
    assert "runs: 100%" in done.stderr and "1/1" in done.stderr


def test_run_without_a_parameter_file_starts_from_params_default_yaml(monkeypatch, capsys):
    """``workbench run oracle-vs-random`` alone used to run the notebook's smoke-sized parameter cell,
    which stops at the injection check; with no -p file it now starts from params/<nb>/default.yaml
    (what `make demo` runs), as `workbench evaluate` did, and says so. A -p file replaces it."""
    import yaml

    from workbench.runs import cli

    seen: list[dict] = []
    monkeypatch.setattr(cli, "_run", lambda name, path, params, args: seen.append(params) or 0)
    folder = ROOT / "params" / "oracle-vs-random"
    assert cli.main(["run", "oracle-vs-random", "-p", "region_seeds=[7]"]) == 0
    assert seen[-1] == yaml.safe_load((folder / "default.yaml").read_text()) | {"region_seeds": [7]}
    assert "parameters: params/oracle-vs-random/default.yaml (no -p file given)" in capsys.readouterr().err
    assert cli.main(["run", "oracle-vs-random", "-p", str(folder / "smoke.yaml")]) == 0
    assert seen[-1] == yaml.safe_load((folder / "smoke.yaml").read_text())
    assert "no -p file given" not in capsys.readouterr().err


def _fake_checkpoint(folder: Path, files: dict[str, str]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return str(folder)


def _evaluate(tmp_path: Path, capsys, *args: str) -> tuple[int, str]:
    """``python -m workbench evaluate`` through the CLI's main function, outputs under ``tmp_path/out``."""
    from workbench.runs import cli

    before = _fake_checkpoint(tmp_path / "before", {"config.json": "{}", "model.safetensors": ""})
    after = _fake_checkpoint(tmp_path / "after", {"config.json": "{}", "model.safetensors": ""})
    argv = ["evaluate", "--before", before, "--after", after, "--outputs", str(tmp_path / "out"), *args]
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _fake_tofu(folder: Path, without: str = "") -> Path:
    """A folder with TOFU's file names (empty: the validation checks that they exist, the loader reads them)."""
    folder.mkdir()
    for split in ("full", "forget10_perturbed", "retain90", "retain_perturbed", "real_authors_perturbed",
                  "world_facts_perturbed", "idontknow"):
        if split != without:
            (folder / f"{split}.jsonl").write_text("")
    return folder


def test_evaluate_refuses_a_wrong_tofu_folder_before_the_kernel_starts(tmp_path, capsys):
    """A wrong data_dir used to reach the notebook and fail there (25 s later, with a half-made run
    folder); it is refused by the validation, naming the folder and the fix, and nothing is written."""
    missing = tmp_path / "no-such-tofu"
    code, err = _evaluate(tmp_path, capsys, "-p", f"data_dir={missing}")
    assert code == 2 and f"'data_dir' = '{missing}': no such folder" in err and "-p data_dir=<folder>" in err, err
    assert not (tmp_path / "out").exists()
    partial = _fake_tofu(tmp_path / "partial-tofu", without="retain_perturbed")
    code, err = _evaluate(tmp_path, capsys, "-p", f"data_dir={partial}")
    assert code == 2 and f"'data_dir' = '{partial}' lacks retain_perturbed.jsonl" in err, err
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_checkpoint_folders_without_weights_and_foreign_adapters(tmp_path, capsys):
    tofu = f"data_dir={_fake_tofu(tmp_path / 'tofu')}"
    empty = _fake_checkpoint(tmp_path / "empty", {"config.json": "{}"})
    code, err = _evaluate(tmp_path, capsys, "--after", empty, "-p", tofu)
    assert code == 2 and f"'after' = '{empty}': the folder holds no model weights" in err, err
    adapter = _fake_checkpoint(tmp_path / "lora", {"adapter_config.json": json.dumps({"base_model_name_or_path": "org/base"})})
    code, err = _evaluate(tmp_path, capsys, "--after", adapter, "-p", tofu)
    assert code == 2 and "PEFT adapter of 'org/base'" in err and "--before org/base" in err, err
    code, err = _evaluate(tmp_path, capsys, "--retain-model", adapter, "-p", tofu)
    assert code == 2 and f"'retain_model' = '{adapter}' is a PEFT adapter folder" in err, err
    assert not (tmp_path / "out").exists()
