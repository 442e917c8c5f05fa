"""How well do a localizer's scores recover a known region? (beyond the paper)

In the controlled setting the target region ``V_tgt`` is known, so each localizer, run on θo, can be
scored against it: precision and recall of its top-|V_tgt| set and the AUROC of its scores against
membership (chance: precision = p, AUROC = 0.5).
"""

from __future__ import annotations

import torch

from workbench.localizers.base import Scores
from workbench.regions import Region, WeightRegion


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (Mann–Whitney U from ranks,
    ties given their average rank): the chance a member outscores a non-member, ties counting ½."""
    scores, labels = scores.detach().double().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        raise ValueError("AUROC needs both members and non-members")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values`` (ascending), tied values sharing the mean of their ranks."""
    uniq, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1
    return (first + (counts - 1) / 2).double()[inverse]


def _flat(scores: Scores, target: Region | WeightRegion) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(scores, torch.Tensor):
        return scores.detach().float().flatten().cpu(), target.mask().flatten()
    layers = sorted(scores)
    return (
        torch.cat([scores[l].detach().float().flatten().cpu() for l in layers]),
        torch.cat([target.masks[l].flatten() for l in layers]),
    )


def localization_accuracy(scores: Scores, target: Region | WeightRegion, k: int | None = None) -> dict[str, float]:
    """How well ``scores`` recover ``target`` (e.g. ``V_tgt`` of the controlled setting).

    Returns precision and recall of the top-``k`` scores (``k`` defaults to ``|target|``, where the
    two coincide), their hit count, the AUROC of the scores against membership, and the base rate
    (what random scores achieve as precision).
    """
    flat, member = _flat(scores, target)
    k = int(member.sum()) if k is None else int(k)
    top = torch.sort(-flat, stable=True).indices[:k]
    hits = int(member[top].sum())
    return {
        "k": k,
        "hits": hits,
        "precision": hits / k if k else 0.0,
        "recall": hits / max(int(member.sum()), 1),
        "auroc": auroc(flat, member),
        "base_rate": float(member.float().mean()),
    }
