"""Provenance: what a run records about how it was made (``params.json``, :func:`run_info`).

The resolved parameters, the versions of the libraries that decide the numbers, the git commit and
whether the checkout differed from it, the device, the CPU threads, the CPU model with torch's CPU
kernels and BLAS (they set the order of float reductions, hence the last bits of trained weights),
the interpreter and the start time. Paths are recorded relative to the repository
(:func:`portable_path`), so that kept results name no folder of the machine that made them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

VERSIONED_PACKAGES = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers", "numpy": "numpy",
                      "scipy": "scipy", "rouge-score": "rouge-score", "safetensors": "safetensors",
                      "accelerate": "accelerate", "papermill": "papermill", "plotly": "plotly",
                      "workbench": "loc-unlearn-workbench"}


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# -- provenance ----------------------------------------------------------------------------------------
def installed_version(dist: str) -> str | None:
    """The installed version of distribution ``dist`` (package metadata, nothing imported), or None."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    return {"python": platform.python_version()} | {key: installed_version(d) for key, d in VERSIONED_PACKAGES.items()}


def git_state(repo: Path | None = None) -> dict[str, Any]:
    """Commit of the checkout and whether tracked files differ from it (untracked files do not count)."""
    repo = repo or repo_root()
    try:
        commit = _git(repo, "rev-parse", "HEAD")
        dirty = bool(_git(repo, "status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def _git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30)
    return out.stdout.strip()


def resolved_device(device: str) -> str:
    from workbench.models import (
        resolve_device,  # torch is imported only when a run starts
    )

    return str(resolve_device(device))


def compute_threads() -> int:
    """The CPU threads torch computes with. The order of float reductions, hence the last bits of every
    trained weight, depends on it: tiny-model AUES moved by up to 0.07 between 1 and 2 threads (the slow
    regression test re-runs a kept reference with the threads its params.json records)."""
    torch = sys.modules.get("torch")  # imported only when a run starts; until then the kernel's setting
    if torch is not None:
        return torch.get_num_threads()
    return asked_threads() or os.cpu_count() or 1


def cpu_info() -> dict[str, str]:
    """The CPU model (``/proc/cpuinfo``'s model name, else ``platform.processor()``) and the kernels torch
    dispatches to on it (``cpu_capability``: e.g. AVX2, AVX512) with its BLAS. Like the thread count, they set
    the order of float reductions: the same tiny-model sweep moved AUES by up to 0.21 between an Intel Xeon
    and an AMD EPYC, so a kept result is compared exactly only with runs on the same CPU model."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    info = {"cpu_model": model or platform.processor() or platform.machine()}
    torch = sys.modules.get("torch")
    if torch is None:
        with contextlib.suppress(ImportError):
            import torch
    if torch is not None:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
        info["blas"] = blas.group(1) if blas else "unknown"
    return info


def asked_threads() -> int | None:
    """``OMP_NUM_THREADS`` when set to a positive whole number, else None."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(asked) if asked.isdigit() and int(asked) > 0 else None


OUTSIDE = "<outside the repository>"


def portable_path(path: str) -> str:
    """``path`` as a kept result records it, free of the machine it ran on: relative to the repository
    when inside it or in a folder beside it (``.venv/bin/python``, ``../shared/data/tofu``), else the
    named placeholder ``<outside the repository>/<its name>``; ``""`` and relative paths as given."""
    if not path or not os.path.isabs(path):
        return path
    relative = Path(os.path.relpath(path, repo_root()))
    ups = sum(1 for part in relative.parts if part == "..")
    if ups <= 1 and (len(relative.parts) > ups or relative == Path(".")):
        return relative.as_posix()
    return f"{OUTSIDE}/{Path(path).name}"


def run_info(notebook: str, params: Any, *, run_id: str, device: str | None = None,
             threads: int | None = None) -> dict[str, Any]:
    """The content of ``params.json``: the one place where provenance is assembled. ``threads``: those
    the run's kernel is given, when the caller (the CLI, a grid) writes it before the kernel starts.
    ``data_dir`` and the interpreter are recorded by :func:`portable_path` (kept results name no
    folder of the machine that made them)."""
    values = params.to_dict() if hasattr(params, "to_dict") else dict(params)
    values["run_id"] = run_id
    if values.get("data_dir"):
        values["data_dir"] = portable_path(str(values["data_dir"]))
    return {
        "notebook": notebook,
        "run_id": run_id,
        "params": values,
        "versions": package_versions(),
        "git": git_state(),
        "device": device or resolved_device(values.get("device", "auto")),
        "threads": threads or compute_threads(),
        **cpu_info(),
        "python": portable_path(sys.executable),
        "platform": platform.platform(),
        "started": now_iso(),
    }
