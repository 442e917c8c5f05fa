"""Atomic writes, run folders that never overwrite complete runs, provenance in params.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import plotly.graph_objects as go
import pytest
from fixtures.fake_runs import fake_per_alpha, write_fake_run

from workbench.runs import io
from workbench.runs import rundir as runs
from workbench.viz import report


# -- atomic writes ----------------------------------------------------------------------------------
@pytest.mark.unit
def test_failed_replace_leaves_nothing(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        io.write_json(tmp_path / "status.json", {"state": "complete"})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_failed_write_keeps_old_content(tmp_path):
    io.write_text(tmp_path / "a.txt", "old")

    def writer(tmp):
        tmp.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        io.write_with(tmp_path / "a.txt", writer)
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


KILLED_WRITER = """
import os, signal, sys
from workbench.runs import io
def writer(tmp):
    tmp.write_bytes(b"x" * 1000)
    os.kill(os.getpid(), signal.SIGKILL)
io.write_with(sys.argv[1], writer)
"""


@pytest.mark.integration
def test_killed_writer_leaves_no_complete_looking_file(tmp_path):
    target = tmp_path / "per_alpha.parquet"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target)])
    assert proc.returncode == -9
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(io.is_temporary(p) for p in leftovers)
    assert io.folder_files(tmp_path) == []


@pytest.mark.unit
def test_manifest_detects_changes(tmp_path):
    io.write_text(tmp_path / "a.txt", "a")
    io.write_text(tmp_path / "sub" / "b.txt", "b")
    assert io.write_manifest(tmp_path).keys() == {"a.txt", "sub/b.txt"}
    assert io.verify_manifest(tmp_path)
    (tmp_path / "a.txt").write_text("A")
    assert not io.verify_manifest(tmp_path)
    io.write_manifest(tmp_path)
    io.write_text(tmp_path / "extra.txt", "new file")
    assert not io.verify_manifest(tmp_path)


@pytest.mark.unit
def test_canonical_digest_ignores_key_order():
    assert io.digest({"a": 1, "b": [1.0, "x"]}) == io.digest({"b": [1.0, "x"], "a": 1})
    assert io.digest({"a": 0.1}) != io.digest({"a": 0.10000001})


# -- run folders ---------------------------------------------------------------------------------------
@pytest.mark.integration
def test_params_json_contents(tmp_path):
    import torch

    run = runs.RunDir.create("oracle-vs-random", {"seed": 3, "device": "cpu"}, run_id="r1", outputs=tmp_path)
    assert run.path == tmp_path / "oracle-vs-random" / "r1"
    info = json.loads((run.path / "params.json").read_text())
    assert info["params"] == {"seed": 3, "device": "cpu", "run_id": "r1"}
    assert info["notebook"] == "oracle-vs-random" and info["device"] == "cpu"
    assert set(info["versions"]) >= {"python", "torch", "transformers", "tokenizers", "numpy", "scipy", "rouge-score",
                                     "safetensors", "accelerate", "papermill", "plotly", "workbench"}
    assert info["versions"]["workbench"] == "0.1.0"
    assert len(info["git"]["commit"]) == 40 and isinstance(info["git"]["dirty"], bool)
    assert info["started"] and info["python"]
    assert info["threads"] == torch.get_num_threads()  # float reductions, so trained weights, depend on it
    # ... and so do the CPU model and the kernels torch picks for it (an AMD EPYC moved AUES by 0.21 from a Xeon's)
    assert info["cpu_model"] and info["cpu_model"] != "unknown"
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["blas"] in torch.__config__.show()
    assert run.status()["state"] == "running"


MACHINE_PATHS = ("/work", "/root", "/home", "/tmp", "/Users", "C:\\", "C:/")


def _strings(value):
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


@pytest.mark.integration
def test_params_json_records_no_folder_of_the_machine(tmp_path, monkeypatch):
    beside = runs.repo_root().parent / "shared" / "data" / "tofu"
    monkeypatch.setattr(sys, "executable", str(runs.repo_root() / ".venv" / "bin" / "python"))
    info = runs.run_info("oracle-vs-random", {"data_dir": str(beside), "device": "cpu"}, run_id="r1")
    assert info["python"] == ".venv/bin/python" and info["params"]["data_dir"] == "../shared/data/tofu"
    info = runs.run_info("oracle-vs-random", {"data_dir": str(tmp_path / "tofu"), "device": "cpu"}, run_id="r1")
    assert info["params"]["data_dir"] == "<outside the repository>/tofu"
    assert runs.run_info("oracle-vs-random", {"data_dir": "", "device": "cpu"}, run_id="r1")["params"]["data_dir"] == ""


@pytest.mark.unit
def test_kept_references_name_no_folder_of_the_machine_they_ran_on():
    kept = sorted((runs.repo_root() / "outputs" / "reference").rglob("params.json"))
    assert kept
    for path in kept:
        found = [s for s in _strings(json.loads(path.read_text())) if any(m in s for m in MACHINE_PATHS)]
        assert not found, f"{path.relative_to(runs.repo_root())} records machine paths {found}"


@pytest.mark.unit
def test_threads_before_torch_is_imported_are_the_kernels_setting(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert runs.compute_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert runs.compute_threads() == (os.cpu_count() or 1)


@pytest.mark.integration
def test_params_json_from_config(tmp_path):
    from workbench.runs import config

    cfg = config.from_params("lume", {"seed": 5, "run_id": "mine", "device": "cpu"})
    run = runs.RunDir.for_config(cfg, outputs=tmp_path)
    assert run.path == tmp_path / "lume" / "mine"
    assert runs.io.read_json(run.path / "params.json")["params"] == cfg.to_dict()


@pytest.mark.integration
def test_complete_runs_are_never_overwritten(tmp_path):
    run = write_fake_run(tmp_path, run_id="done")
    assert run.is_complete()
    with pytest.raises(runs.RunExistsError):
        runs.RunDir.create("oracle-vs-random", {}, run_id="done", outputs=tmp_path, device="cpu")
    with pytest.raises(runs.RunExistsError):
        runs.RunDir.prepare(run.path)
    fresh = runs.RunDir.create("oracle-vs-random", {}, outputs=tmp_path, device="cpu")
    assert fresh.run_id != "done" and run.is_complete()
    forced = runs.RunDir.create("oracle-vs-random", {}, run_id="done", outputs=tmp_path, device="cpu", force=True)
    assert not forced.is_complete() and not (forced.path / "per_alpha.parquet").exists()


@pytest.mark.integration
def test_incomplete_run_is_reused_and_tampering_breaks_completeness(tmp_path):
    run = runs.RunDir.create("oracle-vs-random", {}, run_id="r", outputs=tmp_path, device="cpu")
    io.write_text(run.path / "oracle-vs-random.ipynb", "{}")  # the CLI's executed notebook
    again = runs.RunDir.create("oracle-vs-random", {}, run_id="r", outputs=tmp_path, device="cpu")
    assert (again.path / "oracle-vs-random.ipynb").exists()
    again.save_table(pd.DataFrame({"x": [1]}), "per_alpha")
    again.complete()
    (again.path / "oracle-vs-random.ipynb").write_text('{"rewritten": 1}')  # excluded from the manifest
    assert again.is_complete()
    (again.path / "per_alpha.parquet").write_bytes(b"corrupt")
    assert not again.is_complete()


@pytest.mark.integration
def test_tracking_records_failure_with_step(tmp_path):
    run = runs.RunDir.create("lume", {}, run_id="x", outputs=tmp_path, device="cpu")
    with pytest.raises(ValueError), run.tracking():
        run.step("unlearn", "npo seed 7")
        raise ValueError("diverged")
    status = run.status()
    assert status == {**status, "state": "failed", "error": "ValueError: diverged", "step": "unlearn"}
    with run.tracking():
        pass
    assert run.is_complete()


@pytest.mark.integration
def test_tables_and_figures(tmp_path):
    run = runs.RunDir.create("lume", {}, run_id="x", outputs=tmp_path, device="cpu")
    run.save_table(fake_per_alpha(), runs.PER_ALPHA)
    run.save_table(pd.DataFrame({"AUES": [0.5]}), runs.SUMMARY)
    assert {p.name for p in run.path.iterdir()} >= {"per_alpha.parquet", "summary.parquet", "summary.csv"}
    assert not (run.path / "per_alpha.csv").exists()
    html = report.save_figures(run, [go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))], "curve").read_text()
    assert "<script src=\"https://cdn" not in html and len(html) > 1_000_000  # plotly.js inline: opens offline
    pd.testing.assert_frame_equal(run.table(runs.PER_ALPHA), fake_per_alpha())


@pytest.mark.integration
def test_load_runs_reads_folders_of_runs(tmp_path):
    write_fake_run(tmp_path, run_id="a", seeds=(1,))
    write_fake_run(tmp_path, run_id="b", seeds=(2,))
    both = runs.load_runs(tmp_path / "oracle-vs-random")
    assert set(both["run_id"]) == {"a", "b"} and set(both["seed"]) == {1, 2}
    one = runs.load_runs([tmp_path / "oracle-vs-random" / "a"])
    assert set(one["seed"]) == {1}
    with pytest.raises(FileNotFoundError):
        runs.load_runs(tmp_path / "nothing")


# -- python -m workbench status ------------------------------------------------------------------------
def _status_run(outputs, run_id: str, objective: str) -> runs.RunDir:
    return runs.RunDir.create("oracle-vs-random", {"objectives": [objective], "seed": 1}, run_id=run_id,
                              outputs=outputs)


def test_status_tells_a_live_run_from_one_whose_process_ended(tmp_path, capsys):
    import workbench as wb
    from workbench.runs import claims, cli, listing

    out = tmp_path / "out"
    done = _status_run(out, "r1-done", "npo")
    (done.path / "per_alpha.csv").write_text("alpha,fs\n1,0.9\n")
    done.complete()
    changed = _status_run(out, "r2-changed", "npo")
    (changed.path / "per_alpha.csv").write_text("alpha,fs\n1,0.9\n")
    changed.complete()
    (changed.path / "per_alpha.csv").write_text("alpha,fs\n1,0.1\n")  # edited after its checksum was kept
    failed = _status_run(out, "r3-failed", "wga")
    failed.fail("ValueError: forget ES 0.14 < 0.8", step="controlled setting")
    info = json.loads((failed.path / "params.json").read_text()) | {"started": "2026-01-01T00:00:00+00:00"}
    (failed.path / "params.json").write_text(json.dumps(info))
    status = failed.status() | {"updated": "2026-01-01T01:30:00+00:00"}
    (failed.path / "status.json").write_text(json.dumps(status))  # it failed 90 minutes after it started
    live, dead = _status_run(out, "r4-live", "wga"), _status_run(out, "r5-dead", "dpo")
    holder = subprocess.Popen(  # a process that claims r5 and dies, as a killed grid does
        [sys.executable, "-c", "import sys, time; from workbench.runs import claims\n"
         f"with claims.claimed({str(dead.path)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held" and claims.held(dead.path)
    finally:
        holder.kill()
        holder.wait()
    with claims.claimed(live.path) as mine:
        assert mine
        assert cli.main(["status", "--outputs", str(out)]) == 0
        text = capsys.readouterr().out
        table = wb.run_states(out)  # what `workbench status` prints, as a table for a notebook
    assert wb.run_states is listing.run_states
    states = {line.split()[0]: line.split()[1] for line in text.splitlines() if line.startswith("  r")}
    assert states == {"r1-done": "complete", "r2-changed": "changed", "r3-failed": "failed", "r4-live": "running",
                      "r5-dead": "stopped"} == dict(zip(table["run_id"], table["state"]))
    assert "oracle-vs-random: 5 runs" in text and "ValueError: forget ES 0.14 < 0.8" in text
    minutes = dict(zip(table["run_id"], table["minutes"]))
    assert minutes["r3-failed"] == 90 and "2026-01-01 00:00   90 min" in text and 0 <= minutes["r4-live"] < 5
    assert 'objectives=["wga"]' in text and "seed=" not in text  # only what tells the runs apart
    assert "no `workbench run` or `grid` process holds it" in text
    assert not claims.held(live.path) and not claims.held(dead.path)
    assert not (out / "oracle-vs-random" / ".r1-done.lock").exists()  # reading creates no claims


def test_status_without_runs_or_without_an_outputs_folder_says_so(tmp_path, capsys):
    from workbench.runs import cli

    assert cli.main(["status", "no-such-notebook", "--outputs", str(tmp_path)]) == cli.EXIT_INVALID
    assert "no run folders at" in capsys.readouterr().err
    assert cli.main(["status", "--outputs", str(tmp_path / "nowhere")]) == cli.EXIT_INVALID
    assert "no outputs folder at" in capsys.readouterr().err
    assert cli.main(["status", "--outputs", str(tmp_path)]) == 0 and capsys.readouterr().out.strip() == "no runs"
