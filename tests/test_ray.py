"""The ``ray`` grid executor: runs as Ray tasks on a local Ray instance, with the grid's own
skip-completed and aggregation behaviour."""

from pathlib import Path

import pytest

from workbench.runs import grid
from workbench.runs.executors import (
    ENV_ADDRESS,
    ENV_GPUS,
    RayOptions,
    configure_ray,
    ray_executor,
)

FIXTURE = Path(__file__).parent / "fixtures" / "trivial.ipynb"


@pytest.mark.unit
def test_ray_is_registered_and_options_come_from_the_environment(monkeypatch):
    assert grid.EXECUTORS["ray"] is ray_executor
    monkeypatch.setenv(ENV_ADDRESS, "ray://head:10001")
    monkeypatch.setenv(ENV_GPUS, "0.5")
    assert RayOptions.from_env() == RayOptions(address="ray://head:10001", num_gpus=0.5, num_cpus=1.0)
    with pytest.raises(ValueError, match="num_gpus"):
        RayOptions(num_gpus=-1)


@pytest.mark.unit
def test_configure_ray_binds_options(monkeypatch):
    monkeypatch.setitem(grid.EXECUTORS, "ray", ray_executor)
    configure_ray(address="auto", num_gpus=1)
    assert grid.EXECUTORS["ray"].keywords["options"] == RayOptions(address="auto", num_gpus=1.0)


@pytest.fixture
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
@pytest.mark.integration
def test_ray_grid_runs_skips_completed_and_reruns_failed(tmp_path, local_ray):
    if not FIXTURE.is_file():
        pytest.skip(f"{FIXTURE} is absent")
    log = tmp_path / "executions.log"
    (tmp_path / "grid.yaml").write_text(
        f"name: ray-check\nnotebook: {FIXTURE}\nfixed: {{log_file: {log}}}\naxes: {{seed: [1, 2], fail: [false, true]}}\n"
    )
    spec = grid.Grid.from_file(tmp_path / "grid.yaml")
    outputs = str(tmp_path / "outputs")
    table = grid.run_grid(spec, outputs=outputs, jobs=2, executor="ray")
    assert sorted(table["state"]) == ["complete", "complete", "failed", "failed"]
    assert "boom" in " ".join(table.loc[table["state"] == "failed", "error"])
    summary = (grid.grid_folder(spec, outputs) / "grid_summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 2  # header + the two complete runs
    assert len(log.read_text().split()) == 4
    again = grid.run_grid(spec, outputs=outputs, jobs=2, executor="ray")
    assert sorted(again["state"]) == ["failed", "failed", "skipped", "skipped"]
    assert len(log.read_text().split()) == 6  # only the failed runs executed again
