"""``wga`` — weighted gradient ascent (Wang et al. 2025b), paper Table 2.

Each token's log-likelihood is weighted by its own probability to the power α, without gradient
through the weight: tokens already forgotten (p → 0) stop pulling, so unlearning does not run away
as plain GA does. SPEC §3: ``mean_t[ sg(p_θ(y_t))^α · log p_θ(y_t) ]``, α = 0.1. (The paper prints
L_WGA with the sign of a learning loss; minimising this form lowers the likelihood.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from workbench.likelihood import forward_logits, token_logprobs
from workbench.objectives.base import Objective, register


def wga_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """``mean_t[ sg(p(y_t))^α · log p(y_t) ]`` over all answer tokens of the batch.

    The weight is detached: the gradient is ``p^α · ∇log p``, not that of ``p^α·log p``.
    """
    logp, mask = token_logprobs(logits, labels)
    weight = logp.detach().mul(alpha).exp()
    return (weight * logp).sum() / mask.sum().clamp_min(1)


@register
@dataclass
class WGA(Objective):
    """Weighted gradient ascent, ``mean_t[sg(p_θ(y_t))^α · log p_θ(y_t)]``."""

    name: ClassVar[str] = "wga"
    paper: ClassVar[tuple[str, ...]] = ("table2",)
    loss_units: ClassVar[str] = "answer_tokens"
    alpha: float = field(default=0.1, metadata={"help": "WGA confidence exponent α (SPEC: 0.1)"})

    def __call__(self, model, batch, ctx):
        return wga_loss(forward_logits(model, batch), batch["labels"], self.alpha)
