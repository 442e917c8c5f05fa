"""Executors beyond the local process pool: the grid's runs as Ray tasks, on one machine or a cluster.

:func:`workbench.runs.grid.run_grid` expands a grid into runs, drops those already complete with
identical inputs, hands the rest to an executor from :data:`workbench.runs.grid.EXECUTORS` and writes
``grid_runs.csv`` / ``grid_summary.csv`` from whatever the executor yields. An executor only
*executes*: ``(specs, jobs) -> iterator of RunResult`` in completion order. Skipping and
aggregation stay in the grid, so every executor resumes and summarises the same way.

The ``ray`` executor submits each run as one Ray task calling :func:`workbench.runs.grid.execute`
(papermill in the worker) with a resource request: ``num_gpus`` per run (Ray sets the worker's
``CUDA_VISIBLE_DEVICES``, which the notebook kernel inherits, so ``device="auto"`` picks the GPU
Ray assigned) and ``num_cpus`` per run. At most ``jobs`` runs are in flight. ``address`` connects to
a running cluster (``"auto"``, or ``ray://head:10001``); without it a local Ray instance is started
and shut down afterwards. On a cluster every node needs the same environment (``pip install -e .``)
and the outputs folder on a shared filesystem, since workers write run folders that the driver
then reads. A task that dies (worker killed, out of memory) is recorded as a failed run.

Options come from :class:`RayOptions`: ``configure_ray(...)`` (what the CLI calls for
``--ray-address`` / ``--gpus-per-run``) or, by default, the environment variables
``WORKBENCH_RAY_ADDRESS``, ``WORKBENCH_RAY_GPUS_PER_RUN`` and ``WORKBENCH_RAY_CPUS_PER_RUN``.
Importing this module registers ``"ray"``; Ray itself is imported only when the executor runs
(``pip install -e .[dist]``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from workbench.runs import grid

ENV_ADDRESS = "WORKBENCH_RAY_ADDRESS"
ENV_GPUS = "WORKBENCH_RAY_GPUS_PER_RUN"
ENV_CPUS = "WORKBENCH_RAY_CPUS_PER_RUN"


@dataclass(frozen=True)
class RayOptions:
    """Where and with which resources Ray runs the grid.

    Attributes:
        address: an existing cluster (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local one.
        num_gpus: GPUs per run (fractions share a GPU between runs; 0 for CPU-only runs).
        num_cpus: CPUs per run.
    """

    address: str | None = None
    num_gpus: float = 0.0
    num_cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.num_gpus < 0 or self.num_cpus <= 0:
            raise ValueError(f"num_gpus must be >= 0 and num_cpus > 0, got {self.num_gpus} and {self.num_cpus}")

    @classmethod
    def from_env(cls) -> RayOptions:
        return cls(
            address=os.environ.get(ENV_ADDRESS) or None,
            num_gpus=float(os.environ.get(ENV_GPUS) or 0.0),
            num_cpus=float(os.environ.get(ENV_CPUS) or 1.0),
        )


@contextlib.contextmanager
def ray_session(options: RayOptions, jobs: int) -> Iterator[object]:
    """Reuse a running Ray, connect to ``options.address``, or start (and later stop) a local one."""
    import ray

    if ray.is_initialized():
        yield ray
        return
    if options.address:
        ray.init(address=options.address, log_to_driver=False)
    else:
        ray.init(num_cpus=max(1, int(jobs * options.num_cpus)), include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _lost(spec: grid.RunSpec, exc: Exception) -> grid.RunResult:
    return grid.RunResult(spec.run_id, str(spec.run_dir), "failed", error=f"ray task lost: {type(exc).__name__}: {exc}")


def ray_executor(specs: Sequence[grid.RunSpec], jobs: int, options: RayOptions | None = None) -> Iterator[grid.RunResult]:
    """Execute ``specs`` as Ray tasks, at most ``jobs`` at a time; yield results as they finish."""
    options = options or RayOptions.from_env()
    with ray_session(options, jobs) as ray:
        task = ray.remote(num_cpus=options.num_cpus, num_gpus=options.num_gpus, max_retries=0)(grid.execute)
        waiting, running = list(specs), {}
        while waiting or running:
            while waiting and len(running) < max(1, jobs):
                spec = waiting.pop(0)
                running[task.remote(spec)] = spec
            done, _ = ray.wait(list(running), num_returns=1)
            spec = running.pop(done[0])
            try:
                yield ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 — a dead worker is one failed run, not a dead grid
                yield _lost(spec, exc)


grid.register_executor("ray")(ray_executor)


def configure_ray(address: str | None = None, num_gpus: float = 0.0, num_cpus: float = 1.0) -> None:
    """Re-register ``"ray"`` with explicit options (the CLI's ``--ray-address``, ``--gpus-per-run``)."""
    options = RayOptions(address=address, num_gpus=num_gpus, num_cpus=num_cpus)
    grid.register_executor("ray")(functools.partial(ray_executor, options=options))
