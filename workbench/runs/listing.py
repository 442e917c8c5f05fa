"""What the run folders under ``outputs/`` say: state, step, and the parameters that tell runs apart.

``python -m workbench status [notebook …]`` prints it, oldest run first. A status file that says
``running`` while no ``workbench run`` or ``grid`` process holds the run's claim (:mod:`claims`) is
reported as ``stopped``: its process ended (killed, or a session stopped) before it could say so, and
the same command resumes it from the cache. A notebook executing in JupyterLab holds no claim, so it
reads ``stopped`` while it runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from workbench.runs import claims, io
from workbench.runs import rundir as runs

STOPPED = "stopped"
STOPPED_NOTE = ("stopped: status.json says running, but no `workbench run` or `grid` process holds it (its process "
                "ended first; the same command resumes it from the cache; a notebook run from JupyterLab holds no "
                "claim and reads stopped too)")
NOT_SHOWN = {"run_id"}  # differs between every pair of runs: the folder name says it
FIRST = ("model", "data", "objectives", "region_seeds", "localizers")  # what a reader looks for first


def run_states(outputs: str | os.PathLike | None = None, notebooks: list[str] | None = None):
    """One row per run folder under ``outputs/<notebook>/``: notebook, run_id, state, step,
    started, updated, minutes (a finished run's wall time; a running one's so far),
    error, and ``params`` (the run's parameters, a dict)."""
    import pandas as pd

    root = runs.outputs_root(outputs)
    if not root.is_dir():
        raise FileNotFoundError(f"no outputs folder at {root}: runs are written under --outputs, $WORKBENCH_OUTPUTS "
                                "or <repo>/outputs")
    folders = [root / name for name in notebooks] if notebooks else sorted(p for p in root.iterdir() if p.is_dir())
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing:
        raise FileNotFoundError(f"no run folders at {', '.join(missing)}; `python -m workbench list` names the notebooks")
    rows = []
    for folder in folders:
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not (path / runs.STATUS).is_file():
                continue  # trash, claims, grid tables, kept references (they carry no status)
            run = runs.RunDir(path)
            status, info = run.status(), _read(path / runs.PARAMS)
            state = status.get("state", "missing")
            if state == "complete" and not run.is_complete():
                state = "changed"  # status says complete, but a file no longer matches its checksum
            elif state == "running" and not claims.held(path):
                state = STOPPED
            rows.append({"notebook": folder.name, "run_id": path.name, "state": state, "step": status.get("step") or "",
                         "started": info.get("started", ""), "updated": status.get("updated", ""),
                         "error": status.get("error", ""), "params": info.get("params", {})})
    table = pd.DataFrame(rows, columns=["notebook", "run_id", "state", "step", "started", "updated", "error", "params"])
    until = pd.to_datetime(table["updated"], errors="coerce", utc=True)
    until[table["state"] == "running"] = pd.Timestamp.now(tz="UTC")  # its status changes only between steps
    elapsed = until - pd.to_datetime(table["started"], errors="coerce", utc=True)
    table.insert(6, "minutes", elapsed.dt.total_seconds() / 60)
    return table.sort_values(["notebook", "started"], kind="stable", ignore_index=True)


def _read(path: Path) -> dict:
    try:
        return io.read_json(path)
    except (OSError, ValueError):  # a run whose params.json is missing or half-written still gets its line
        return {}


def varying(params: list[dict]) -> list[str]:
    """Parameter names whose values are not the same in every run: :data:`FIRST`, then the others in
    the order the runs have them."""
    keys = list(dict.fromkeys([*FIRST, *(k for p in params for k in p)]))
    same = {k for k in keys if len({json.dumps(p.get(k), sort_keys=True) for p in params}) == 1}
    return [k for k in keys if k not in same and k not in NOT_SHOWN]


def describe(table, *, width: int = 70) -> str:
    """The table as text: per notebook a count of states, then one line per run (state, start, minutes,
    last step) with the parameters that tell it apart from the notebook's other runs (``key=value``, cut
    at ``width`` characters)."""
    lines = []
    for notebook, group in table.groupby("notebook", sort=False):
        counts = ", ".join(f"{n} {state}" for state, n in group["state"].value_counts().items())
        lines.append(f"{notebook}: {len(group)} run{'s' * (len(group) > 1)} ({counts})")
        keys = varying(list(group["params"]))
        for row in group.itertuples():
            shown = " ".join(f"{k}={_short(row.params.get(k))}" for k in keys)
            shown = shown if len(shown) <= width else shown[: width - 1] + "…"
            when = f"{row.started[:16].replace('T', ' ')} {row.minutes:4.0f} min" if row.minutes == row.minutes else ""
            lines.append(f"  {row.run_id:<26} {row.state:<8} {when:<25} {row.step:<20} {shown}".rstrip())
            if row.error:
                lines.append(f"    {row.error[:200]}")
    if (table["state"] == STOPPED).any():
        lines.append(STOPPED_NOTE)
    return "\n".join(lines) if lines else "no runs"


def _short(value) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text.replace(" ", "")
