"""``wagle`` (Jia et al. 2024) — a weight's first-order effect on the forget loss, corrected by retain.

SPEC §4: per weight j, ``θ_j·g_f,j − (1/γ)·g_r,j·g_f,j`` with ``g_f``, ``g_r`` the gradients of the
mean per-example NLL on forget and retain data and γ the mean diagonal Hessian over the retain set
**[choice: estimated by the mean squared per-example retain gradient (empirical Fisher)]**; WAGLE's
configs use a constant (1e-6), pass ``gamma``. ``absolute=True`` ranks by magnitude as WAGLE's
``snip_advanced`` does **[choice]**. ``wagle`` scores value vectors by the mean of their entries'
scores (with ``absolute`` the entries cannot cancel); ``wagle_weights`` ranks single weights
(paper Table 5: the top 80% of individual down-projection weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from workbench.data.formatting import Encoded
from workbench.localizers.base import (
    Localizer,
    as_vectors,
    batch_grads,
    down_proj_weights,
    mean_grads,
    register,
)


def retain_grad_and_fisher(model: nn.Module, retain: Sequence[Encoded],
                           pad_token_id: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean retain gradient and empirical Fisher diagonal (mean of squared per-example gradients)."""
    g = [torch.zeros_like(w, dtype=torch.float32) for w in down_proj_weights(model)]
    fisher = [torch.zeros_like(w, dtype=torch.float32) for w in down_proj_weights(model)]
    for grads in batch_grads(model, retain, pad_token_id, batch_size=1):
        for acc, sq, gx in zip(g, fisher, grads):
            acc += gx
            sq += gx * gx
    return [x / len(retain) for x in g], [x / len(retain) for x in fisher]


def wagle_formula(theta: torch.Tensor, g_f: torch.Tensor, g_r: torch.Tensor, gamma: float) -> torch.Tensor:
    """WAGLE's per-weight attribution ``θ·g_f − (1/γ)·g_r·g_f`` (pure, elementwise)."""
    return theta.float() * g_f - g_r * g_f / gamma



def wagle_entries(model, forget, retain, pad_token_id, gamma: float | None, batch_size: int) -> list[torch.Tensor]:
    """Per layer, WAGLE's signed per-weight attribution in the weight's layout."""
    if not retain:
        raise ValueError("wagle needs retain examples (g_r and the Hessian estimate come from them)")
    g_f = mean_grads(model, forget, pad_token_id, batch_size)
    g_r, fisher = retain_grad_and_fisher(model, retain, pad_token_id)
    if gamma is None:
        gamma = float(torch.cat([f.flatten() for f in fisher]).mean())
    return [wagle_formula(w.detach(), gf, gr, gamma) for w, gf, gr in zip(down_proj_weights(model), g_f, g_r)]


@register
@dataclass
class WagleWeights(Localizer):
    """Per down-projection weight: ``|θ_j·g_f,j − (1/γ)·g_r,j·g_f,j|`` in the weight's layout."""

    name: ClassVar[str] = "wagle_weights"
    title: ClassVar[str] = "WAGLE (weights)"
    color: ClassVar[str] = "#E69F00"
    level: ClassVar[str] = "weight"
    paper: ClassVar[tuple[str, ...]] = ("table5",)
    gamma: float | None = field(default=None,
                                metadata={"help": "WAGLE's γ; None -> [choice] mean empirical Fisher of the retain set"})
    absolute: bool = field(default=True, metadata={"help": "[choice] rank by |score| (WAGLE's snip_advanced)"})
    batch_size: int = field(default=8, metadata={"help": "examples per backward pass"})

    def scores(self, model, forget, retain, pad_token_id):
        entries = wagle_entries(model, forget, retain, pad_token_id, self.gamma, self.batch_size)
        return {l: (s.abs() if self.absolute else s) for l, s in enumerate(entries)}


@register
@dataclass
class Wagle(WagleWeights):
    """Per value vector: the mean of its entries' WAGLE scores ``[layer, d_ff]``."""

    name: ClassVar[str] = "wagle"
    title: ClassVar[str] = "WAGLE"
    color: ClassVar[str] = "#CC79A7"
    level: ClassVar[str] = "vector"
    paper: ClassVar[tuple[str, ...]] = ("table1", "table3", "table4")

    def scores(self, model, forget, retain, pad_token_id):
        per_weight = super().scores(model, forget, retain, pad_token_id)
        return torch.stack([as_vectors(model, s).mean(dim=1) for s in per_weight.values()]).cpu()
