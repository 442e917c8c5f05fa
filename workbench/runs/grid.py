"""Executing notebooks: one papermill run, or a grid of them in parallel.

A **run** is one notebook executed by papermill with one set of parameters into its run folder
``outputs/<notebook>/<run-id>/<notebook>.ipynb`` (see :mod:`workbench.runs`). Parameters travel as
data (papermill's injected-parameters cell), never as spliced code. papermill only *warns* about
parameters a notebook does not declare, so every run is validated first: names against the
notebook's ``parameters`` cell (``papermill.inspect_notebook``) and, when the notebook has a config
dataclass, names, types and values against it (:func:`workbench.runs.config.from_params`).

A **grid** is a YAML file naming a notebook, a base parameter file, fixed overrides and *axes*
(parameter → list of values); every combination of the axes is one run. A grid run's id is a hash
of its resolved parameters, the notebook's code, the source of every workbench module the notebook
imports (directly or through others: :mod:`workbench.runs.deps`), its plug-ins' files and the
versions of the numeric libraries; so re-running a grid skips the runs that are already complete
with identical inputs, re-runs the incomplete or failed ones (a grid killed midway resumes where it
stopped) and re-runs every run whose code changed (a fix in ``metrics.py``). Runs are handed to an
**executor** from :data:`EXECUTORS` (``local``: a process pool, one papermill import per worker,
``OMP_NUM_THREADS`` split between workers); the summaries of all runs are gathered into ``grid_summary.csv``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from workbench.progress import ENV as PROGRESS_ENV
from workbench.runs import claims, config, io
from workbench.runs import rundir as runs
from workbench.runs.deps import code_fingerprint, notebook_code_hash, plugin_fingerprint  # noqa: F401
from workbench.runs.paramfiles import (  # noqa: F401  (grid API)
    load_param_file,
    load_yaml,
    merge_params,
    parse_override,
)

PLOTLY_RENDERER = "plotly_mimetype+notebook"  # renders in JupyterLab *and* in nbconvert HTML
# The kernel writes its own log straight to the terminal: a TCP-transport warning at every start and,
# on Ctrl-C, a zmq traceback as papermill closes the sockets it answers on. Cell errors and a dead kernel
# reach us as papermill exceptions, not through this log.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=CRITICAL"]
GRIDS = "grids"


# -- notebooks --------------------------------------------------------------------------------------
def notebooks_dir() -> Path:
    return Path(os.environ.get("WORKBENCH_NOTEBOOKS") or runs.repo_root() / "notebooks")


def resolve_notebook(name_or_path: str) -> tuple[str, Path]:
    """``(name, path)`` from a notebook name (``oracle-vs-random``) or a path to an ``.ipynb``."""
    path = Path(name_or_path)
    if path.suffix != ".ipynb":
        path = notebooks_dir() / f"{name_or_path}.ipynb"
    if not path.is_file():
        known = sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))
        raise FileNotFoundError(f"notebook {name_or_path!r} not found at {path}; known notebooks: {known}")
    return path.stem, path.resolve()


def notebook_parameters(path: Path) -> dict[str, Any]:
    import papermill as pm

    return pm.inspect_notebook(str(path))


def validate(notebook: str, path: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check ``params`` before anything runs; return the resolved parameters (config defaults filled,
    relative paths made absolute against the caller's working directory: the notebook runs elsewhere)."""
    if notebook in config.CONFIGS:  # the config knows every parameter, plug-ins' included
        return config.from_params(notebook, config.absolute_paths(params)).to_dict()
    declared = notebook_parameters(path)
    unknown = [config.unknown_key_message(k, list(declared)) for k in params if k not in declared]
    if unknown:
        raise config.ConfigError(notebook, unknown)
    return dict(params)


# -- one run --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything a worker process needs to execute one run (picklable)."""

    notebook: str
    path: str
    params: dict[str, Any]
    run_id: str
    outputs: str
    force: bool = False
    threads: int = 1
    progress: bool = False
    pass_run_id: bool = True

    @property
    def run_dir(self) -> Path:
        return runs.outputs_root(self.outputs) / self.notebook / self.run_id

    @property
    def output_notebook(self) -> Path:
        return self.run_dir / f"{self.notebook}.ipynb"


@dataclasses.dataclass
class RunResult:
    run_id: str
    run_dir: str
    state: str  # complete | failed | skipped
    error: str = ""
    cell: int | None = None
    seconds: float = 0.0


@contextlib.contextmanager
def kernel_environment(spec: RunSpec) -> Iterator[None]:
    """Environment the kernel inherits: renderer, thread count, where runs are written."""
    values = {"PLOTLY_RENDERER": PLOTLY_RENDERER, "OMP_NUM_THREADS": str(spec.threads),
              PROGRESS_ENV: "text" if spec.progress else "off",
              "MKL_NUM_THREADS": str(spec.threads), "WORKBENCH_OUTPUTS": str(runs.outputs_root(spec.outputs))}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def execute(spec: RunSpec) -> RunResult:
    """Execute one run with papermill; a failing cell marks the run failed, never raises. Two grids over
    the same runs (a second worker, or one grid started twice) share run ids: a run that the other is
    executing, or finished after this grid planned it, is skipped, never wiped or run twice."""
    with claims.claimed(spec.run_dir) as mine:
        if not mine:
            return RunResult(spec.run_id, str(spec.run_dir), "skipped", error="executing in another process")
        if not spec.force and runs.RunDir(spec.run_dir).is_complete():
            return RunResult(spec.run_id, str(spec.run_dir), "skipped")
        return _execute(spec)


def _execute(spec: RunSpec) -> RunResult:
    import papermill as pm

    start = time.monotonic()
    run = runs.RunDir.prepare(spec.run_dir, force=spec.force)
    params = dict(spec.params) | ({"run_id": spec.run_id} if spec.pass_run_id else {})
    io.write_json(run.path / runs.PARAMS, runs.run_info(spec.notebook, params, run_id=spec.run_id,
                                                        device=None if "device" in params else "n/a",
                                                        threads=spec.threads))
    run.set_status("running", step="papermill")
    try:
        with kernel_environment(spec):
            pm.execute_notebook(spec.path, str(spec.output_notebook), parameters=params, kernel_name="python3",
                                language="python", progress_bar=False, log_output=spec.progress,
                                cwd=str(Path(spec.path).parent), store_widget_state=False,
                                extra_arguments=KERNEL_ARGUMENTS)
    except Exception as exc:  # noqa: BLE001 — every failure is recorded in status.json and reported
        return _failed(run, spec, exc, time.monotonic() - start)
    except KeyboardInterrupt:  # Ctrl-C: the folder says so instead of "running" for ever
        run.fail("interrupted (Ctrl-C)", message="re-run the same command to resume from the cache")
        raise
    if not run.is_complete():
        run.complete()
    return RunResult(spec.run_id, str(run.path), "complete", seconds=time.monotonic() - start)


def _failed(run: runs.RunDir, spec: RunSpec, exc: Exception, seconds: float) -> RunResult:
    cell = getattr(exc, "cell_index", None)
    error = f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
    run.fail(error, step=f"cell {cell}" if cell is not None else None, message=f"executed notebook: {spec.output_notebook}")
    return RunResult(spec.run_id, str(run.path), "failed", error=error, cell=cell, seconds=seconds)


def failure_message(spec: RunSpec, result: RunResult) -> str:
    where = f"cell index {result.cell} of the executed notebook" if result.cell is not None else "outside a cell"
    return f"notebook {spec.notebook!r} failed in {where}: {result.error}\n  executed notebook: {spec.output_notebook}"


# -- executors ------------------------------------------------------------------------------------
Executor = Callable[[Sequence[RunSpec], int], Iterator[RunResult]]
EXECUTORS: dict[str, Executor] = {}


def register_executor(name: str) -> Callable[[Executor], Executor]:
    def wrap(fn: Executor) -> Executor:
        EXECUTORS[name] = fn
        return fn

    return wrap


def _init_worker(threads: int) -> None:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="grid-parent-watch", daemon=True).start()


def _exit_with_parent(parent: int, every: float = 1.0) -> None:
    """End this worker once the grid that started it is gone (a ``kill`` of the grid reaches only the
    grid's own process). Left running, the worker went on executing its run for up to hours beside the
    resumed grid; its kernel ends with it (ipykernel watches ``JPY_PARENT_PID``)."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


@register_executor("local")
def local_executor(specs: Sequence[RunSpec], jobs: int) -> Iterator[RunResult]:
    """A process pool (papermill's ``cwd`` handling is not thread-safe, so no threads)."""
    import multiprocessing

    threads = max(1, min(s.threads for s in specs)) if specs else 1
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(execute, s) for s in specs]
        for future in as_completed(futures):
            yield future.result()


def threads_per_job(jobs: int) -> int:
    """Each job's share of the cores, capped by the caller's ``OMP_NUM_THREADS``: two grids started
    side by side with ``OMP_NUM_THREADS=1`` must not each run two threads on a 2-core machine (that
    over-subscription made every step 2-5x slower)."""
    share = max(1, (os.cpu_count() or 1) // max(1, jobs))
    return min(share, runs.asked_threads() or share)


# -- grids ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Grid:
    """A grid file: ``notebook``, optional ``params`` (file or list of files), ``fixed`` and ``axes``."""

    name: str
    notebook: str
    base: tuple[str, ...]
    fixed: dict[str, Any]
    axes: dict[str, list[Any]]
    folder: Path

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Grid:
        path = Path(path)
        raw = load_param_file(path)
        unknown = set(raw) - {"name", "notebook", "params", "fixed", "axes"}
        if unknown or "notebook" not in raw:
            raise ValueError(f"{path}: a grid needs 'notebook' and may have name, params, fixed, axes; got {sorted(raw)}")
        base = raw.get("params") or []
        axes = raw.get("axes") or {}
        if not all(isinstance(v, list) and v for v in axes.values()):
            raise ValueError(f"{path}: every axis must be a non-empty list of values")
        return cls(raw.get("name") or path.stem, raw["notebook"], tuple([base] if isinstance(base, str) else base),
                   raw.get("fixed") or {}, axes, path.parent.resolve())

    def combinations(self) -> list[dict[str, Any]]:
        keys = list(self.axes)
        return [dict(zip(keys, values)) for values in itertools.product(*self.axes.values())]


def grid_run_id(notebook: str, resolved: Mapping[str, Any], code_hash: str) -> str:
    """Same parameters, code (:func:`code_fingerprint`) and plug-ins → same id → found complete and skipped."""
    inputs = {k: v for k, v in resolved.items() if k != "run_id"}
    return "g-" + io.digest({"notebook": notebook, "params": inputs, "code": code_hash,
                             "plugins": plugin_fingerprint(resolved)})[:16]


def expand(grid: Grid, *, outputs: str, jobs: int, force: bool = False) -> tuple[list[RunSpec], list[dict]]:
    """All runs of ``grid`` (validated before any runs) and each run's axis values."""
    name, path = resolve_notebook(_grid_notebook_path(grid))
    base = merge_params(grid.base, grid.folder) | grid.fixed
    declared = notebook_parameters(path)
    code = code_fingerprint(path)
    specs, axes = [], []
    for combo in grid.combinations():
        resolved = validate(name, path, base | combo)
        run_id = grid_run_id(name, resolved, code)
        specs.append(RunSpec(name, str(path), resolved, run_id, outputs, force=force,
                             threads=threads_per_job(jobs), pass_run_id="run_id" in declared))
        axes.append(combo)
    return specs, axes


def _grid_notebook_path(grid: Grid) -> str:
    candidate = grid.folder / grid.notebook
    return str(candidate) if grid.notebook.endswith(".ipynb") and candidate.is_file() else grid.notebook


def run_grid(grid: Grid, *, outputs: str, jobs: int = 1, executor: str = "local", force: bool = False,
             progress: Callable[[RunResult | int], None] | None = None):
    """Execute the grid's missing runs, then write ``grid_runs.csv`` and ``grid_summary.csv``.

    ``progress`` is called once with the number of runs to execute, then with each run's result."""
    specs, axes = expand(grid, outputs=outputs, jobs=jobs, force=force)
    todo = [s for s in specs if force or not runs.RunDir(s.run_dir).is_complete()]
    results = {s.run_id: RunResult(s.run_id, str(s.run_dir), "skipped") for s in specs if s not in todo}
    if min(jobs, len(todo)) == 1:  # one run at a time: its stages and bars stream to the terminal
        todo = [dataclasses.replace(s, progress=True) for s in todo]
    if progress:
        progress(len(todo))  # how many runs are left to execute
    for result in EXECUTORS[executor](todo, jobs) if todo else ():
        results[result.run_id] = result
        if progress:
            progress(result)
    return write_grid_tables(grid, specs, axes, results, outputs)


def grid_folder(grid: Grid, outputs: str) -> Path:
    return runs.outputs_root(outputs) / GRIDS / grid.name


def write_grid_tables(grid: Grid, specs: list[RunSpec], axes: list[dict], results: dict[str, RunResult], outputs: str):
    import pandas as pd

    rows, summaries = [], []
    for spec, combo in zip(specs, axes):
        labels = {k: _label(v) for k, v in combo.items()}
        rows.append({**labels, **dataclasses.asdict(results[spec.run_id])})
        summary_csv = spec.run_dir / f"{runs.SUMMARY}.csv"
        if summary_csv.is_file():
            summaries.append(pd.read_csv(summary_csv).assign(run_id=spec.run_id, **labels))
    folder = grid_folder(grid, outputs)
    table = pd.DataFrame(rows)
    io.write_csv(folder / "grid_runs.csv", table)
    io.write_csv(folder / "grid_summary.csv", pd.concat(summaries, ignore_index=True) if summaries else pd.DataFrame())
    return table


def _label(value: Any) -> Any:
    return ",".join(map(str, value)) if isinstance(value, list) else value
