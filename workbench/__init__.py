"""loc-unlearn workbench: localized knowledge unlearning, reproduced and examined.

Reproduces Lee et al. (2025), "Does Localization Inform Unlearning? A Rigorous Examination of
Local Parameter Attribution for Knowledge Unlearning in Language Models". The science sits at the
top of the package, in the order data flows through an experiment; infrastructure one level down:

    data, models  →  regions, delta, likelihood  →  objectives/, localizers/  →  training
    →  metrics, evaluation, mixing  →  curves, stats  →  runs/ (io, cache, config, run folders)
    →  experiments/  →  viz/ (plots, widgets, reports)  →  runs/ (CLI, grids)  →  notebooks

The names below are the notebook user's API (``import workbench as wb``); they load lazily, so
``python -m workbench list`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, tuple[str, str]] = {
    # data and models
    "load_data": ("workbench.data", "load_data"),
    "load_model": ("workbench.models", "load_model"),
    "load_pretrained": ("workbench.models", "load_pretrained"),
    "load_smollm2": ("workbench.models.smollm", "load_smollm2"),
    "build_tiny": ("workbench.models", "build_tiny"),
    "estimate_memory": ("workbench.models", "estimate_memory"),
    # regions, training, methods
    "Region": ("workbench.regions", "Region"),
    "random_region": ("workbench.regions", "random_region"),
    "TrainConfig": ("workbench.training", "TrainConfig"),
    "TrainSpec": ("workbench.training", "TrainSpec"),
    "train_region": ("workbench.training", "train_region"),
    "finetune": ("workbench.training", "finetune"),
    "register_objective": ("workbench.objectives", "register"),
    "register_localizer": ("workbench.localizers", "register"),
    "Objective": ("workbench.objectives", "Objective"),
    "Localizer": ("workbench.localizers", "Localizer"),
    "localize": ("workbench.localizers", "localize"),
    # evaluation and summaries
    "EvalConfig": ("workbench.evaluation", "EvalConfig"),
    "Evaluator": ("workbench.evaluation", "Evaluator"),
    "mixing_sweep": ("workbench.mixing", "mixing_sweep"),
    "evaluate_pair": ("workbench.experiments.pair", "evaluate_pair"),
    "aues": ("workbench.curves", "aues"),
    "mu95": ("workbench.curves", "mu95"),
    "summarise": ("workbench.experiments.tables", "summarise"),
    "result_tables": ("workbench.experiments.tables", "result_tables"),
    # runs and experiments
    "load_config": ("workbench.runs.config", "load"),
    "RunDir": ("workbench.runs.rundir", "RunDir"),
    "load_runs": ("workbench.runs.rundir", "load_runs"),
    "run_states": ("workbench.runs.listing", "run_states"),
    "open_session": ("workbench.experiments.session", "open_session"),
    "export_model": ("workbench.experiments.export", "export_model"),
    # figures
    "fs_rs_figure": ("workbench.viz.plots", "fs_rs_figure"),
    "mu_fq_figure": ("workbench.viz.plots", "mu_fq_figure"),
    "headline_figure": ("workbench.viz.headline", "headline_figure"),
    "CurveExplorer": ("workbench.viz.widgets", "CurveExplorer"),
}
_SUBPACKAGES = {"data", "models", "objectives", "localizers", "experiments", "runs", "viz", "curves", "stats",
                "metrics", "evaluation", "mixing", "regions", "delta", "training", "likelihood", "distributed"}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API) | _SUBPACKAGES)
