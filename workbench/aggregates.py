"""From a per-example table to the numbers an evaluation reports (SPEC §5).

Per split: the means of ES, probability, option-normalised probability and ROUGE-L recall, and the
two truth-ratio aggregates (``tr_score`` = mean max(0, 1 − TR), retain side; ``tr_closeness`` =
mean min(TR, 1/TR), forget side, which open-unlearning reports as ``forget_truth_ratio``). Then:
FS = 1 − mean ES(forget), RS = mean ES(retain_eval), MU = harmonic mean of nine components
({probability, ROUGE-L, truth-ratio score} × {retain_eval, real_authors, world_facts}, the
probability option-normalised on real authors / world facts) and FQ = log10 of the KS p-value of
the forget truth ratios against θr's (NaN without them; ``n_fq`` and ``n_fq_reference`` say how
many entered). Every key is present for every data set: NaN where undefined (e.g. LUME).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench import metrics as m
from workbench.data.schema import EVAL_SPLITS

MU_SPLITS = ("retain_eval", "real_authors", "world_facts")
NORMALISED_PROB_SPLITS = ("real_authors", "world_facts")  # option-normalised probability in MU


def _nanmean(col: str):
    return lambda g: float(np.nanmean(g[col])) if g[col].notna().any() else math.nan


SPLIT_AGGREGATES = {
    "es": _nanmean("es"),
    "prob": _nanmean("prob"),
    "prob_norm": _nanmean("prob_norm"),
    "rougeL": _nanmean("rougeL_recall"),
    # NaN truth ratios (no perturbed answers) make the split's TR aggregates NaN, not a partial mean.
    "tr_score": lambda g: m.truth_ratio_score(g["truth_ratio"].to_numpy(dtype=float)),
    "tr_closeness": lambda g: m.truth_ratio_closeness(g["truth_ratio"].to_numpy(dtype=float)),
}


def summarise(per_example: pd.DataFrame, reference_forget_tr: Sequence[float] | np.ndarray | None = None) -> dict[str, float]:
    """Aggregates of a per-example table (columns of :class:`workbench.evaluation.Evaluator`'s)."""
    out: dict[str, float] = {}
    by_split = {s: g for s, g in per_example.groupby("split")} if len(per_example) else {}
    for s in EVAL_SPLITS:
        g = by_split.get(s)
        out[f"n_{s}"] = 0 if g is None else len(g)
        for col, agg in SPLIT_AGGREGATES.items():
            out[f"{s}_{col}"] = math.nan if g is None else agg(g)
    out["FS"] = 1 - out["forget_es"]
    out["RS"] = out["retain_eval_es"]
    components = mu_components(out)
    out.update(components)
    out["MU"] = m.model_utility(components)
    out.update(forget_quality(by_split.get("forget"), reference_forget_tr))
    return out


def mu_components(summary: dict[str, float]) -> dict[str, float]:
    """The nine MU inputs from a summary's per-split aggregates (``mu_{prob,rougeL,tr}_{split}``)."""
    out = {}
    for s in MU_SPLITS:
        out[f"mu_prob_{s}"] = summary[f"{s}_prob_norm" if s in NORMALISED_PROB_SPLITS else f"{s}_prob"]
        out[f"mu_rougeL_{s}"] = summary[f"{s}_rougeL"]
        out[f"mu_tr_{s}"] = summary[f"{s}_tr_score"]
    return out


def forget_quality(forget: pd.DataFrame | None, reference: Sequence[float] | np.ndarray | None) -> dict[str, float]:
    """``FQ`` (log10 KS p against ``reference``, θr's forget truth ratios) with both sample sizes."""
    tr = np.array([]) if forget is None else forget["truth_ratio"].to_numpy(dtype=float)
    tr = tr[np.isfinite(tr)]
    ref = None if reference is None else np.asarray(reference, dtype=float)
    n_ref = 0 if ref is None else int(np.isfinite(ref).sum())
    fq = m.forget_quality(tr, ref[np.isfinite(ref)]) if len(tr) and n_ref else math.nan
    return {"FQ": fq, "n_fq": len(tr), "n_fq_reference": n_ref}
