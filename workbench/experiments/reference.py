"""Forget Quality's reference: θr's truth ratios on the forget set.

Forget Quality (Maini et al., 2024) is the KS test of a model's per-example forget truth ratios
against those of θr, the model trained without the forget set (:mod:`workbench.aggregates`). θr's
side is computed here, once per evaluation config: the forget split only, in the config's prompt
format and batching, without generation (a truth ratio compares answer likelihoods; nothing is
generated for it). The experiments' sessions (:func:`workbench.experiments.session.open_session`,
cached) and :func:`workbench.experiments.pair.evaluate_pair` (θr loaded, scored, released) both
take it from :func:`reference_truth_ratios`.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from torch import nn

from workbench.data.schema import UnlearningData
from workbench.evaluation import EvalConfig, Evaluator


def reference_config(cfg: EvalConfig) -> EvalConfig:
    """What θr's truth ratios are computed with: ``cfg`` on the forget split only, without generation."""
    return replace(cfg, generate=False, splits=("forget",))


def reference_truth_ratios(model: nn.Module, tokenizer, data: UnlearningData, cfg: EvalConfig) -> np.ndarray:
    """θr's (``model``'s) per-example forget truth ratios, ``[n_forget]`` in ``data.forget``'s order."""
    per_example = Evaluator(tokenizer, data, reference_config(cfg)).evaluate(model).per_example
    return per_example["truth_ratio"].to_numpy(dtype=float)
