"""``ga`` — gradient ascent: minimise the mean answer-token log-likelihood of the forget set.

The simplest forget objective and the one every other bounds or reweights: minimising
``mean_t log p_θ(y_t)`` pushes the likelihood of the forget answers down without limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from workbench.likelihood import forward_logits, mean_nll
from workbench.objectives.base import Objective, register


def ga_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over all answer tokens of the batch of log p(y_t) (minimising it is gradient ascent)."""
    return -mean_nll(logits, labels)


@register
@dataclass
class GA(Objective):
    """Gradient ascent: mean over answer tokens of log p_θ(y_t)."""

    name: ClassVar[str] = "ga"
    loss_units: ClassVar[str] = "answer_tokens"

    def __call__(self, model, batch, ctx):
        return ga_loss(forward_logits(model, batch), batch["labels"])
