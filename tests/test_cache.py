"""The content-addressed cache: same inputs served, anything changed or corrupted rebuilt."""

from __future__ import annotations

import sys

import pytest
import torch

from workbench.runs import cache

pytestmark = pytest.mark.integration


class Builds:
    """A build function that counts its calls and returns a small state dict."""

    def __init__(self):
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return {"w": torch.full((2, 3), float(self.calls)), "b": torch.arange(3)}


def get(c: cache.Cache, build: Builds, inputs: dict, **kwargs):
    return c.get_or_build("theta_r", inputs, build, cache.save_tensors, cache.load_tensors, **kwargs)


INPUTS = {"model": {"n_layers": 2, "d_model": 16}, "data": "abc123", "train": {"lr": 1e-3, "epochs": 2}, "seed": 0}


def test_same_inputs_served_changed_inputs_rebuilt(tmp_path):
    c, build = cache.Cache(tmp_path), Builds()
    first = get(c, build, INPUTS)
    again = get(c, build, dict(INPUTS))
    assert build.calls == 1 and torch.equal(first["w"], again["w"])
    get(c, build, {**INPUTS, "seed": 1})
    get(c, build, {**INPUTS, "train": {"lr": 2e-3, "epochs": 2}})
    assert build.calls == 3
    assert len(list((tmp_path / "theta_r").iterdir())) == 3


def test_corrupted_entry_is_rebuilt_not_served(tmp_path):
    c, build = cache.Cache(tmp_path), Builds()
    get(c, build, INPUTS)
    entry = c.lookup("theta_r", INPUTS)
    tensors = entry / cache.TENSORS_FILE
    tensors.write_bytes(tensors.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    assert c.lookup("theta_r", INPUTS) is None
    served = get(c, build, INPUTS)
    assert build.calls == 2 and served["w"][0, 0] == 2.0
    assert c.lookup("theta_r", INPUTS) == entry


def test_force_rebuilds(tmp_path):
    c, build = cache.Cache(tmp_path), Builds()
    get(c, build, INPUTS)
    assert get(c, build, INPUTS, force=True)["w"][0, 0] == 2.0
    assert get(c, build, INPUTS)["w"][0, 0] == 2.0 and build.calls == 2


def test_failed_build_leaves_no_entry(tmp_path):
    c = cache.Cache(tmp_path)

    def broken_save(obj, folder):
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed while saving")

    with pytest.raises(RuntimeError):
        c.get_or_build("results", INPUTS, lambda: 1, broken_save, cache.load_json)
    assert c.lookup("results", INPUTS) is None
    assert [p for p in (tmp_path / "results").iterdir() if not p.name.startswith(".")] == []
    assert c.get_or_build("results", INPUTS, lambda: {"aues": 0.5}, cache.save_json, cache.load_json) == {"aues": 0.5}


def test_source_code_is_part_of_the_key(tmp_path, monkeypatch):
    module = tmp_path / "src" / "wb_fake_trainer.py"
    module.parent.mkdir()
    module.write_text("def train(): return 1\n")
    monkeypatch.syspath_prepend(str(module.parent))
    c, build = cache.Cache(tmp_path / "c"), Builds()
    get(c, build, INPUTS, sources=["wb_fake_trainer"])
    get(c, build, INPUTS, sources=["wb_fake_trainer"])
    module.write_text("def train(): return 2  # changed\n")
    get(c, build, INPUTS, sources=["wb_fake_trainer"])
    assert build.calls == 2
    sys.modules.pop("wb_fake_trainer", None)


def test_key_covers_version_and_tensors(monkeypatch):
    key = cache.cache_key("theta_p", INPUTS)
    assert key == cache.cache_key("theta_p", {k: INPUTS[k] for k in reversed(list(INPUTS))})
    assert key != cache.cache_key("theta_o", INPUTS)
    monkeypatch.setattr("workbench.__version__", "9.9")
    assert key != cache.cache_key("theta_p", INPUTS)
    a = cache.fingerprint({"ids": torch.tensor([1, 2, 3])})
    assert a == cache.fingerprint({"ids": torch.tensor([1, 2, 3])})
    assert a != cache.fingerprint({"ids": torch.tensor([1, 2, 4])})


def test_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "env-cache"))
    assert cache.Cache().root == tmp_path / "env-cache"


def test_tied_weights_saved_without_pickle(tmp_path):
    shared = torch.randn(4, 2)
    c = cache.Cache(tmp_path)
    out = c.get_or_build("theta_p", {"x": 1}, lambda: {"embed": shared, "lm_head": shared},
                         cache.save_tensors, cache.load_tensors)
    assert torch.equal(out["embed"], out["lm_head"])
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.pkl"))


def test_an_entry_built_at_two_threads_is_served_to_two_threads_only(tmp_path):
    c, build = cache.Cache(tmp_path), Builds()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        get(c, build, INPUTS)
        torch.set_num_threads(1)
        get(c, build, INPUTS)  # other float reductions: built again, not served
        assert build.calls == 2
        torch.set_num_threads(2)
        get(c, build, INPUTS)
        assert build.calls == 2
    finally:
        torch.set_num_threads(before)


def test_the_key_names_the_device_cpu_and_determinism(monkeypatch):
    from workbench.runs import deps

    key = cache.cache_key("theta_p", INPUTS, device="cpu")
    assert key == cache.Cache(device="cpu").key("theta_p", INPUTS)
    assert key != cache.cache_key("theta_p", INPUTS, device="meta")
    machine = deps.machine("cpu")
    assert {"threads", "cpu_model", "cpu_capability", "blas", "device", "deterministic"} <= set(machine)
    monkeypatch.setattr(deps, "_cpu", lambda: {**machine, "cpu_model": "another CPU"})
    assert key != cache.cache_key("theta_p", INPUTS, device="cpu")
    monkeypatch.undo()
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: True)
    assert key != cache.cache_key("theta_p", INPUTS, device="cpu")


BUILDER = """
import sys, time
from pathlib import Path
from workbench.runs import cache
ready = Path(sys.argv[2] + ".ready")
with open(ready, "a") as f:
    f.write("x")
while len(ready.read_text()) < 2:  # both processes miss the entry at the same moment
    time.sleep(0.01)
def build():
    with open(sys.argv[2], "a") as log:
        log.write("built\\n")
    time.sleep(1.0)
    return {"aues": 0.5}
print(cache.Cache(sys.argv[1]).get_or_build("results", {"x": 1}, build, cache.save_json, cache.load_json))
"""


def test_two_processes_that_miss_one_entry_build_it_once(tmp_path):
    import subprocess

    script, builds = tmp_path / "builder.py", tmp_path / "builds.txt"
    script.write_text(BUILDER)
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "c"), str(builds)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert builds.read_text().count("built") == 1
    assert [o.strip().splitlines()[-1] for o, _ in outs] == ["{'aues': 0.5}"] * 2
    assert not list((tmp_path / "c" / "results").glob(".*.lock"))  # the builder removed its lock file


def test_a_lock_left_by_a_killed_process_blocks_nobody(tmp_path):
    import subprocess

    c = cache.Cache(tmp_path)
    lock = c.entry_path("results", c.key("results", {"x": 1})).with_name(f".{c.key('results', {'x': 1})}.lock")
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
                               "fcntl.flock(f, fcntl.LOCK_EX); f.write('pid 1@elsewhere'); f.flush(); "
                               "print('locked', flush=True); time.sleep(60)", str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    assert lock.exists()  # killed while building: its lock file stays behind
    assert c.get_or_build("results", {"x": 1}, lambda: {"aues": 0.5}, cache.save_json, cache.load_json) == {"aues": 0.5}
