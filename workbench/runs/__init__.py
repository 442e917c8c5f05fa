"""Infrastructure for running experiments: run folders, the cache, configs, grids and the CLI.

* :mod:`~workbench.runs.io` — atomic writes and checksum manifests;
* :mod:`~workbench.runs.cache` — the content-addressed cache of trained models and sweeps;
* :mod:`~workbench.runs.params`, :mod:`~workbench.runs.config` — validated notebook parameters;
* :mod:`~workbench.runs.rundir` — ``outputs/<notebook>/<run-id>/`` folders with provenance;
* :mod:`~workbench.runs.grid`, :mod:`~workbench.runs.executors`, :mod:`~workbench.runs.cli` —
  papermill execution, resumable grids (local processes or Ray) and ``python -m workbench``.
"""

from workbench.runs.rundir import (
                                   GROUP,
                                   RunDir,
                                   RunExistsError,
                                   find_runs,
                                   load_runs,
                                   outputs_root,
                                   repo_root,
                                   run_info,
)

__all__ = ["GROUP", "RunDir", "RunExistsError", "find_runs", "load_runs", "outputs_root", "repo_root", "run_info"]
