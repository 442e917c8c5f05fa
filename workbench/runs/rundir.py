"""Run folders: every result traceable to what made it.

Each execution of a notebook writes into ``outputs/<notebook>/<run-id>/``:

* ``params.json`` — the resolved parameters, package versions, git commit (+ dirty flag), device,
  CPU and threads, Python and start time, all built by :func:`workbench.runs.provenance.run_info`
  so that no notebook assembles its own;
* ``status.json`` — ``running``, ``complete`` or ``failed`` (with error, step and message), rewritten
  atomically at every change so that a crash leaves the last true state;
* tables (``<name>.parquet``, plus ``<name>.csv`` for summaries), figures (standalone HTML with
  plotly.js inline, so they open offline) and the executed notebook.

A run is **complete** only when ``status.json`` says so *and* its ``manifest.json`` (sha256 of every
file but the status and the executed notebook, which papermill rewrites after the last cell) matches
the disk. Complete runs are never overwritten silently: a new run gets a new id, and reusing an id
raises :class:`RunExistsError` unless ``force`` is given.

The tables shared with plots, widgets and the grid have a fixed schema (the contract with the
pipelines): :data:`PER_ALPHA_COLUMNS` for the tidy per-α table ``per_alpha`` and
:data:`SUMMARY_COLUMNS` for ``summary``. :func:`load_runs` reads them back from run folders and
from kept references (``outputs/reference/<notebook>/``, CSV) alike, adding ``run_id`` so that
runs stay apart (:func:`sweep_keys`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from workbench.progress import announce
from workbench.runs import io
from workbench.runs.provenance import (  # noqa: F401  (provenance is read here by its old names too)
    OUTSIDE,
    VERSIONED_PACKAGES,
    asked_threads,
    compute_threads,
    cpu_info,
    git_state,
    now_iso,
    package_versions,
    portable_path,
    repo_root,
    resolved_device,
    run_info,
)

PARAMS = "params.json"
STATUS = "status.json"
PER_ALPHA = "per_alpha"
SUMMARY = "summary"
# One sweep (curve) of a run. ``start`` names the model it was unlearned from (θo of a target seed,
# or θ_full): sweeps are only ever paired with sweeps of the same start.
GROUP = ["objective", "start", "scenario", "seed"]
PER_ALPHA_COLUMNS = ["notebook", *GROUP, "alpha", "FS", "RS", "MU", "FQ"]
SUMMARY_COLUMNS = [*GROUP, "AUES", "MU95", "MU95_reached"]
# The status changes after the manifest is written; the executed notebook is saved by papermill
# after the last cell has run, so neither can be checksummed from inside the run.
NOT_IN_MANIFEST = (STATUS, "*.ipynb")


class RunExistsError(FileExistsError):
    """A complete run already holds this run id."""


def outputs_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$WORKBENCH_OUTPUTS``, else ``<repo>/outputs`` (read at call time)."""
    return Path(root or os.environ.get("WORKBENCH_OUTPUTS") or repo_root() / "outputs")


def new_run_id() -> str:
    """Time-ordered and unique: ``YYYYmmdd-HHMMSS-<4 random bytes>``."""
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


# -- the run folder -----------------------------------------------------------------------------------
class RunDir:
    """``outputs/<notebook>/<run-id>/`` with atomic writers and a status that tells the truth."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @property
    def notebook(self) -> str:
        return self.path.parent.name

    @property
    def run_id(self) -> str:
        return self.path.name

    # construction
    @classmethod
    def create(cls, notebook: str, params: Any, *, run_id: str = "", outputs: str | os.PathLike | None = None,
               force: bool = False, device: str | None = None) -> RunDir:
        """Open the run folder for writing: params.json written, status ``running``.

        ``run_id`` empty → a new id. An existing *complete* run raises :class:`RunExistsError` unless
        ``force`` (then it is emptied first); an incomplete one (e.g. prepared by the CLI, whose
        executed notebook is already being written into it) is reused as it is.
        """
        run = cls(outputs_root(outputs) / notebook / (run_id or new_run_id()))
        if run.is_complete():
            if not force:
                raise RunExistsError(f"{run.path} holds a complete run; choose another run_id or pass force=True")
            run.clear()
        run.path.mkdir(parents=True, exist_ok=True)
        io.write_json(run.path / PARAMS, run_info(notebook, params, run_id=run.run_id, device=device))
        run.set_status("running", step="start")
        return run

    @classmethod
    def for_config(cls, cfg: Any, **kwargs: Any) -> RunDir:
        """The run folder of a notebook config (its ``run_id`` field chooses the folder)."""
        return cls.create(cfg.notebook, cfg, run_id=cfg.run_id, **kwargs)

    @classmethod
    def prepare(cls, path: str | os.PathLike, *, force: bool = False) -> RunDir:
        """Empty folder for a fresh execution (CLI, grid): complete → error unless ``force``; else wiped."""
        run = cls(path)
        if run.is_complete() and not force:
            raise RunExistsError(f"{run.path} holds a complete run; use --force or another --run-id")
        run.clear()
        run.path.mkdir(parents=True)
        return run

    def clear(self) -> None:
        # Rename first so that a reader never sees a half-deleted run under the real name.
        if self.path.exists():
            trash = self.path.with_name(f".{self.path.name}{io.TMP_MARK}deleted-{secrets.token_hex(4)}")
            os.replace(self.path, trash)
            shutil.rmtree(trash, ignore_errors=True)

    # status
    def status(self) -> dict[str, Any]:
        try:
            return io.read_json(self.path / STATUS)
        except (OSError, ValueError):
            return {"state": "missing"}

    def set_status(self, state: str, **fields: Any) -> None:
        io.write_json(self.path / STATUS, {"state": state, "updated": now_iso(), **fields})

    def step(self, step: str, message: str = "") -> None:
        """Record progress, so that a crash says where it happened (and say it on the CLI's terminal)."""
        announce(f"{step}{': ' + message if message else ''}")
        self.set_status("running", step=step, message=message)

    def complete(self) -> None:
        io.write_manifest(self.path, exclude=NOT_IN_MANIFEST)
        self.set_status("complete", step=self.status().get("step"))

    def fail(self, error: str, *, step: str | None = None, message: str = "") -> None:
        self.set_status("failed", error=error, step=step or self.status().get("step"), message=message)

    def is_complete(self) -> bool:
        return self.status().get("state") == "complete" and io.verify_manifest(self.path, exclude=NOT_IN_MANIFEST)

    @contextlib.contextmanager
    def tracking(self) -> Iterator[RunDir]:
        """``with run.tracking():`` marks the run complete on success and failed on an exception."""
        try:
            yield self
        except BaseException as exc:
            self.fail(f"{type(exc).__name__}: {exc}")
            raise
        self.complete()

    # results
    def save_table(self, df, name: str, *, csv: bool | None = None) -> Path:
        """``<name>.parquet``; also ``<name>.csv`` when ``csv`` or (by default) for summary tables."""
        path = io.write_parquet(self.path / f"{name}.parquet", df)
        if csv if csv is not None else "summary" in name:
            io.write_csv(self.path / f"{name}.csv", df)
        return path

    def table(self, name: str):
        """``<name>.parquet``, or ``<name>.csv`` where only that was kept (``outputs/reference``)."""
        import pandas as pd

        parquet = self.path / f"{name}.parquet"
        return pd.read_parquet(parquet) if parquet.is_file() else pd.read_csv(self.path / f"{name}.csv")

    def save_json(self, obj: Any, name: str) -> Path:
        return io.write_json(self.path / f"{name}.json", obj)

    def save_html(self, html: str, name: str) -> Path:
        return io.write_html(self.path / f"{name}.html", html)


# -- reading runs back ----------------------------------------------------------------------------------
def _holds(path: Path, table: str) -> bool:
    return (path / f"{table}.parquet").is_file() or (path / f"{table}.csv").is_file()


def find_runs(paths: str | os.PathLike | Iterable[str | os.PathLike], table: str = PER_ALPHA) -> list[RunDir]:
    """Folders holding ``<table>.parquet`` (a run) or ``<table>.csv`` (a kept reference): each path is
    such a folder or a folder of them."""
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    runs = []
    for path in map(Path, paths):
        if _holds(path, table):
            runs.append(RunDir(path))
        elif path.is_dir():
            runs += [RunDir(p) for p in sorted(path.iterdir()) if p.is_dir() and _holds(p, table)]
    return runs


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike], *, table: str = PER_ALPHA,
              complete_only: bool = False):
    """Concatenate the saved ``table`` of one or several runs or kept references (nothing is
    recomputed), with a ``run_id`` column (the folder's name) that keeps them apart.

    ``complete_only`` skips runs whose status and checksums do not say complete (kept references
    carry no status and are skipped too).
    """
    import pandas as pd

    runs = [r for r in find_runs(paths, table) if r.is_complete() or not complete_only]
    if not runs:
        raise FileNotFoundError(f"no {table}.parquet or {table}.csv under {paths}")
    return pd.concat([with_start(r.table(table)).assign(run_id=r.run_id) for r in runs], ignore_index=True)


def with_start(df):
    """``df`` with a ``start`` column: tables written before it existed paired Oracle and Random by
    seed, so each seed becomes its own start (``"seed 7"``)."""
    if "start" in df.columns or "seed" not in df.columns:
        return df
    df = df.copy()
    df.insert(int(df.columns.get_loc("seed")), "start", [f"seed {s}" for s in df["seed"]])
    return df


def sweep_keys(df) -> list[str]:
    """Columns that identify one sweep: :data:`GROUP`, preceded by ``run_id`` when runs were loaded
    together (two runs with the same objective, scenario and seed are two curves, not one)."""
    return (["run_id"] if "run_id" in df.columns else []) + GROUP


def check_columns(df, required: list[str], name: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{name} table lacks columns {missing}; expected at least {required}")

