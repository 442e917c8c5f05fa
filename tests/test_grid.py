"""CLI and grid: validation before execution, failing cells, skip-complete, resume after a kill."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from workbench.runs import claims, cli, grid
from workbench.runs import rundir as runs

TRIVIAL = Path(__file__).parent / "fixtures" / "trivial.ipynb"


# -- parameters ----------------------------------------------------------------------------------
@pytest.mark.unit
def test_overrides_are_yaml_scalars(tmp_path):
    (tmp_path / "base.yaml").write_text("seed: 1\nlr_npo: 1e-3\nobjectives: [npo]\n")
    merged = grid.merge_params([str(tmp_path / "base.yaml"), "seed=2", "objectives=[npo, wga]", "check_fs=false", "run_id="])
    assert merged == {"seed": 2, "lr_npo": 1e-3, "objectives": ["npo", "wga"], "check_fs": False, "run_id": None}
    assert grid.parse_override("lr=5e-5") == ("lr", 5e-5)
    with pytest.raises(ValueError, match="key=value"):
        grid.parse_override("seed")


def config_notebook(folder: Path, name: str = "lume") -> Path:
    """A notebook named like a configured one, whose parameters cell declares a few of its fields."""
    nb = nbformat.read(str(TRIVIAL), as_version=4)
    nb.cells[1].source = "forget_ratio = 0.1  # share of people\nseed = 0  # seed\nrun_id = ''  # run id"
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


@pytest.mark.integration
def test_cli_rejects_unknown_parameter_before_executing(tmp_path, capsys):
    code = cli.main(["run", str(TRIVIAL), "-p", "sede=3", "--outputs", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == cli.EXIT_INVALID
    assert "unknown parameter 'sede'; did you mean 'seed'?" in err and "delay" in err
    assert not (tmp_path / "trivial").exists()


@pytest.mark.integration
def test_cli_validates_against_config_dataclass(tmp_path, capsys):
    path = config_notebook(tmp_path)
    assert cli.main(["run", str(path), "-p", "forget_ratio=1.5", "--outputs", str(tmp_path)]) == cli.EXIT_INVALID
    assert "'forget_ratio' must lie in the open interval (0, 1)" in capsys.readouterr().err
    assert grid.validate("lume", path, {"seed": 4})["n_people"] == 60  # resolved with config defaults
    assert not (tmp_path / "lume").exists()


# -- executing ------------------------------------------------------------------------------------
@pytest.mark.notebooks
def test_cli_run_then_refuse_overwrite_then_force(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the kernel's threads, not this process's torch setting
    args = ["run", str(TRIVIAL), "-p", "seed=5", "--run-id", "r1", "--outputs", str(tmp_path)]
    assert cli.main(args) == 0
    run = runs.RunDir(tmp_path / "trivial" / "r1")
    assert run.is_complete() and (run.path / "trivial.ipynb").is_file()
    assert pd.read_csv(run.path / "summary.csv")["seed"].tolist() == [5]
    assert runs.io.read_json(run.path / "params.json")["params"]["seed"] == 5
    assert runs.io.read_json(run.path / "params.json")["threads"] == 3
    assert cli.main(args) == cli.EXIT_INVALID
    assert "complete run" in capsys.readouterr().err
    assert cli.main(args[:-2] + ["--outputs", str(tmp_path), "--force", "-p", "seed=6"]) == 0
    assert pd.read_csv(run.path / "summary.csv")["seed"].tolist() == [6]


@pytest.mark.notebooks
def test_failing_cell_names_notebook_cell_and_output(tmp_path, capsys):
    code = cli.main(["run", str(TRIVIAL), "-p", "fail=true", "--run-id", "bad", "--outputs", str(tmp_path)])
    err = capsys.readouterr().err
    out_nb = tmp_path / "trivial" / "bad" / "trivial.ipynb"
    assert code == cli.EXIT_FAILED
    assert "notebook 'trivial' failed in cell index 4" in err and "boom from the trivial notebook" in err
    assert str(out_nb) in err and out_nb.is_file()
    status = runs.RunDir(out_nb.parent).status()
    assert status["state"] == "failed" and status["step"] == "cell 4"


def write_grid(tmp_path: Path, seeds: list[int], delay: float = 0.0) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"scale": 2.0, "log_file": str(tmp_path / "executions.log")}))
    spec = {"name": "demo-grid", "notebook": str(TRIVIAL), "params": "base.yaml", "fixed": {"delay": delay},
            "axes": {"seed": seeds}}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def executions(tmp_path: Path) -> list[str]:
    log = tmp_path / "executions.log"
    return log.read_text().split() if log.exists() else []


@pytest.mark.notebooks
def test_grid_skips_complete_runs_and_aggregates(tmp_path):
    spec = grid.Grid.from_file(write_grid(tmp_path, [1, 2]))
    outputs = str(tmp_path / "out")
    first = grid.run_grid(spec, outputs=outputs, jobs=2)
    assert sorted(first["state"]) == ["complete", "complete"] and len(executions(tmp_path)) == 2
    summary = pd.read_csv(Path(outputs) / "grids" / "demo-grid" / "grid_summary.csv")
    assert sorted(summary["seed"]) == [1, 2] and set(summary["AUES"]) == {1.0}
    assert set(summary["run_id"]) == set(first["run_id"])
    second = grid.run_grid(spec, outputs=outputs, jobs=2)
    assert list(second["state"]) == ["skipped", "skipped"] and len(executions(tmp_path)) == 2
    assert set(second["run_id"]) == set(first["run_id"])  # ids come from the resolved parameters


@pytest.mark.notebooks
def test_a_run_another_grid_finished_meanwhile_is_skipped(tmp_path):
    """Two grids over the same runs (a second worker, or the same grid started twice) share run ids: a
    run planned while missing but complete by the time its turn comes is skipped. It used to raise
    RunExistsError, which ended the whole grid."""
    (spec,), _ = grid.expand(grid.Grid.from_file(write_grid(tmp_path, [1])), outputs=str(tmp_path / "out"), jobs=1)
    assert grid.execute(spec).state == "complete"
    status = runs.RunDir(spec.run_dir).status()
    assert grid.execute(spec).state == "skipped"  # the second grid's turn
    assert len(executions(tmp_path)) == 1 and runs.RunDir(spec.run_dir).status() == status


@pytest.mark.notebooks
def test_a_run_another_process_is_executing_is_skipped_not_wiped(tmp_path, capsys):
    (spec,), _ = grid.expand(grid.Grid.from_file(write_grid(tmp_path, [1])), outputs=str(tmp_path / "out"), jobs=1)
    marker = Path(spec.run_dir) / "theirs.txt"
    marker.parent.mkdir(parents=True)
    marker.write_text("the other grid's run, half done")
    with claims.claimed(spec.run_dir) as mine:  # as the other grid's worker holds it
        assert mine
        result = grid.execute(spec)
        out = Path(spec.outputs)  # `workbench run` with that run id says so in one line
        assert cli.main(["run", str(TRIVIAL), "-p", "seed=1", "--run-id", spec.run_id, "--outputs", str(out)]) == cli.EXIT_FAILED
        assert "executing in another process; wait for it" in capsys.readouterr().err
    assert result.state == "skipped" and result.error == "executing in another process"
    assert marker.is_file() and executions(tmp_path) == []  # neither wiped nor run twice
    assert grid.execute(spec).state == "complete"  # the claim is gone with its holder


@pytest.mark.notebooks
def test_killed_grid_resumes_with_missing_runs_only(tmp_path):
    grid_file = write_grid(tmp_path, [1, 2, 3], delay=2.0)
    outputs = tmp_path / "out"
    proc = start_grid(grid_file, outputs, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: any(r.is_complete() for r in grid_runs(outputs)), proc, timeout=240)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the grid, its worker and the kernels: all started by this test
        proc.wait()
    done_before = {r.run_id for r in grid_runs(outputs) if r.is_complete()}
    assert 1 <= len(done_before) < 3
    started_before = len(executions(tmp_path))

    spec = grid.Grid.from_file(grid_file)
    table = grid.run_grid(spec, outputs=str(outputs), jobs=1)
    rerun = executions(tmp_path)[started_before:]
    assert set(rerun) == set(table["run_id"]) - done_before and len(rerun) == 3 - len(done_before)
    assert set(table.loc[table["state"] == "skipped", "run_id"]) == done_before
    assert all(r.is_complete() for r in grid_runs(outputs)) and len(grid_runs(outputs)) == 3


@pytest.mark.notebooks
@pytest.mark.parametrize("how", ["kill", "ctrl-c"])
def test_stopping_a_grid_ends_its_worker_and_kernel(tmp_path, how):
    """``kill <grid pid>`` reaches only the grid (the worker watches it); Ctrl-C reaches the grid and its
    worker (one process group), not the kernel (its own session). Neither may leave a run executing."""
    psutil = pytest.importorskip("psutil")
    grid_file = write_grid(tmp_path, [1], delay=300.0)
    proc = start_grid(grid_file, tmp_path / "out", stderr=subprocess.PIPE, text=True)
    children = []
    try:
        wait_for(lambda: executions(tmp_path), proc, timeout=240)  # the kernel is in the sleeping cell
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("ipykernel" in " ".join(c.cmdline()) for c in children)
        if how == "kill":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"left running after the grid was stopped: {[c.cmdline()[:3] for c in alive]}"
        if how == "ctrl-c":
            assert proc.returncode == cli.EXIT_INTERRUPTED and "the same command resumes" in stderr
            assert "Traceback" not in stderr, stderr  # the kernel's own log (a zmq error as it is shut down) stays quiet
            (run,) = grid_runs(tmp_path / "out")
            assert run.status()["state"] == "failed" and "interrupted" in run.status()["error"]
    finally:
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def start_grid(grid_file: Path, outputs: Path, **popen) -> subprocess.Popen:
    """The CLI grid in its own process group (the test can signal all of it), SIGINT handled as in a terminal."""
    cmd = [sys.executable, "-m", "workbench", "grid", str(grid_file), "--jobs", "1", "--outputs", str(outputs)]
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **popen)


def grid_runs(outputs: Path) -> list[runs.RunDir]:
    return [runs.RunDir(p) for p in sorted((outputs / "trivial").glob("g-*"))]


def wait_for(condition, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the grid ended before it could be killed"
        assert time.monotonic() < deadline, "no run completed in time"
        time.sleep(0.2)


@pytest.mark.unit
def test_executor_registry():
    assert "local" in grid.EXECUTORS

    @grid.register_executor("inline-test")
    def inline(specs, jobs):
        return iter(())

    try:
        assert grid.EXECUTORS["inline-test"] is inline
    finally:
        grid.EXECUTORS.pop("inline-test")


@pytest.mark.unit
def test_threads_per_job_is_capped_by_the_callers_omp_num_threads(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [grid.threads_per_job(j) for j in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two grids side by side, one core each
    assert [grid.threads_per_job(j) for j in (1, 2)] == [1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # a cap, not a request for more than the share
    assert grid.threads_per_job(2) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "not-a-number")
    assert grid.threads_per_job(1) == 8
