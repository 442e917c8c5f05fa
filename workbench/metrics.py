"""Per-example unlearning metrics as pure tensor functions (SPEC §5).

Every metric of Lee et al. (2025) is built from two things a teacher-forced forward pass gives:
the mean negative log-likelihood of the answer tokens and the argmax prediction at every answer
position.

* **Probability** ``P(y|x) = exp(−mean token NLL)`` over the answer tokens (closing EOS included):
  the geometric-mean per-token probability, so long and short answers are comparable.
* **Truth ratio** ``TR = P_pert / P_para``: how much the model prefers wrong answers of the same form
  (``P_pert`` = geometric mean over the perturbed answers) to a paraphrase of the truth. Retain-side
  sets score ``max(0, 1 − TR)``; Forget Quality compares the forget-set TR distribution with that of
  the retain model θr by a two-sided KS test, reported as ``log10 p``.
* **Option-normalised probability** ``P(a) / (P(a) + Σ_j P(pert_j))`` on real authors / world facts.
* **ROUGE-L recall** of the greedy generation against the answer (rouge-score, stemmer on).
* **Model Utility** = harmonic mean of nine such numbers (0 as soon as one is 0).
* **Extraction Strength** (Carlini et al. 2021; Wang et al. 2025a) ``ES = 1 − k*/|y|``, k* the
  shortest answer prefix after which greedy decoding reproduces the rest. Greedy decoding from
  ``[x, y_<k]`` reproduces ``y_≥k`` iff every teacher-forced argmax from position k on is right, so
  ``k* = 1 + (last position whose argmax is wrong)`` (0 if none): one forward pass, no generation.
  The final EOS is not part of ``|y|``. open-unlearning's loop cannot return k* = |y|, which
  floors ES at ``1/|y|``; ``floor=True`` reproduces that for comparison.

Conventions: ``logits[:, t]`` predicts token ``t+1`` (HF); labels are −100 outside the answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from workbench.likelihood import IGNORE, answer_nll, row_nll  # noqa: F401  (public here too)


# -- from one forward pass ------------------------------------------------------------------------
def extraction_strength_from_predictions(pred: torch.Tensor, targets: torch.Tensor, *, floor: bool = False) -> torch.Tensor:
    """ES from argmax predictions aligned with their targets, ``[batch]``.

    Args:
        pred: ``[batch, pos]`` argmax token at each position (predicting ``targets`` at the same index).
        targets: ``[batch, pos]`` next tokens, −100 outside the answer. The last answer token of
            each row (the EOS) is excluded. A row with no answer token left gives NaN.
    """
    answer = targets != IGNORE
    pos = torch.arange(targets.shape[1], device=targets.device).expand_as(targets)
    last = torch.where(answer, pos, -1).amax(-1)  # index of the final (EOS) label
    first = torch.where(answer, pos, targets.shape[1]).amin(-1)
    scored = answer & (pos < last.unsqueeze(-1))
    n = scored.sum(-1)
    wrong = scored & (pred != targets)
    last_wrong = torch.where(wrong, pos, -1).amax(-1)
    k_star = torch.where(last_wrong >= 0, last_wrong - first + 1, torch.zeros_like(last_wrong))
    if floor:
        k_star = torch.minimum(k_star, n - 1)
    es = 1.0 - k_star.double() / n.double()
    return torch.where(n > 0, es, torch.full_like(es, math.nan)).float()


def extraction_strength(logits: torch.Tensor, labels: torch.Tensor, *, floor: bool = False) -> torch.Tensor:
    """One-pass Extraction Strength per example, ``[batch]``.

    Args:
        logits: ``[batch, pos, vocab]`` (``logits[:, t]`` predicts token ``t+1``).
        labels: ``[batch, pos]``, −100 outside the answer; the final label (EOS) is not scored.
        floor: reproduce open-unlearning's ``ES ≥ 1/|y|`` (it reports ``1/|y|`` when nothing matches).
    """
    return extraction_strength_from_predictions(logits[:, :-1].argmax(-1), labels[:, 1:], floor=floor)


# -- from per-sequence mean NLLs ------------------------------------------------------------------
def probability(avg_nll: torch.Tensor) -> torch.Tensor:
    """``exp(−mean token NLL)``, any shape."""
    return torch.exp(-avg_nll)


def truth_ratio(para_avg_nll: torch.Tensor, pert_avg_nll: torch.Tensor) -> torch.Tensor:
    """``P_pert / P_para`` per example, ``[batch]``.

    Args:
        para_avg_nll: ``[batch]`` mean NLL of the paraphrased answer (or the answer where there is none).
        pert_avg_nll: ``[batch, n_pert]`` mean NLL of each perturbed answer; ``P_pert`` is their
            geometric mean, i.e. ``exp(−mean_j NLL_j)``. Computed in log space (no 1e-10 guard needed).
    """
    return torch.exp(para_avg_nll - pert_avg_nll.mean(-1))


def normalised_probability(avg_nll: torch.Tensor, pert_avg_nll: torch.Tensor) -> torch.Tensor:
    """Option-normalised ``P(a) / (P(a) + Σ_j P(pert_j))``, ``[batch]``; rows of ``pert_avg_nll`` are the options."""
    p = probability(avg_nll)
    return p / (p + probability(pert_avg_nll).sum(-1))


def truth_ratio_score(tr: torch.Tensor | np.ndarray) -> float:
    """Retain-side aggregate ``mean max(0, 1 − TR)`` (higher: the truth is preferred)."""
    tr = torch.from_numpy(np.array(tr, dtype=np.float64))
    return float((1 - tr).clamp_min(0).mean())


def truth_ratio_closeness(tr: torch.Tensor | np.ndarray) -> float:
    """Forget-side aggregate ``mean min(TR, 1/TR)`` (1: indifferent between true and false)."""
    tr = torch.from_numpy(np.array(tr, dtype=np.float64))
    return float(torch.minimum(tr, 1 / tr).mean())


# -- set-level numbers ----------------------------------------------------------------------------
def forget_quality(tr_model: Sequence[float] | np.ndarray, tr_retain: Sequence[float] | np.ndarray) -> float:
    """``log10`` of the two-sided KS p-value between the model's and θr's forget truth ratios.

    The p-value shrinks with the number of examples: always report n next to it.
    """
    from scipy.stats import ks_2samp

    pvalue = ks_2samp(np.asarray(tr_model, dtype=float), np.asarray(tr_retain, dtype=float)).pvalue
    return float(np.log10(pvalue)) if pvalue > 0 else -math.inf


def model_utility(values: Mapping[str, float]) -> float:
    """Harmonic mean of the components; 0 if any is 0, NaN if any is NaN or there are none."""
    x = np.asarray(list(values.values()), dtype=float)
    if x.size == 0 or np.isnan(x).any():
        return math.nan
    if (x <= 0).any():
        return 0.0
    return float(x.size / np.sum(1.0 / x))


_ROUGE = None


def rouge_l_recall(prediction: str, target: str) -> float:
    """ROUGE-L recall of ``prediction`` against ``target`` (rouge-score, ``use_stemmer=True``)."""
    global _ROUGE
    if _ROUGE is None:  # building the scorer loads the stemmer: do it once
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(_ROUGE.score(target, prediction)["rougeL"].recall)
