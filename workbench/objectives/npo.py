"""``npo`` — negative preference optimisation (Zhang et al. 2024), paper Tables 1–6.

A bounded gradient ascent: the sequence log-likelihood of each forget answer is compared with the
frozen reference π_ref (the model at the start of unlearning), and the loss saturates once the
policy is well below it. SPEC §3: ``−(2/β)·mean_x log σ(−β·(log π_θ(y|x) − log π_ref(y|x)))`` with
log π summed over answer tokens, β = 0.5. At θ = π_ref the loss is (2/β)·log 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from workbench.likelihood import forward_logits, sequence_logprob
from workbench.objectives.base import (
    Objective,
    ObjectiveContext,
    reference_scope,
    register,
)


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """``−(2/β)·mean log σ(−β·(log π_θ − log π_ref))`` from sequence log-likelihoods ``[batch]``."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref)).mean()


def policy_and_reference_logprobs(model: nn.Module, batch: Mapping[str, torch.Tensor], ctx: ObjectiveContext, name: str):
    """Sequence log-likelihoods ``[batch]`` under θ (with grad) and under ``π_ref`` (no grad)."""
    logp = sequence_logprob(forward_logits(model, batch), batch["labels"])
    with torch.no_grad(), reference_scope(ctx, name):
        logp_ref = sequence_logprob(forward_logits(model, batch), batch["labels"])
    return logp, logp_ref


@register
@dataclass
class NPO(Objective):
    """Negative preference optimisation against ``π_ref``; log π summed over answer tokens."""

    name: ClassVar[str] = "npo"
    paper: ClassVar[tuple[str, ...]] = ("table1", "table2", "table6")
    needs_reference: ClassVar[bool] = True
    beta: float = field(default=0.5, metadata={"help": "NPO inverse temperature β (SPEC: 0.5)"})

    def __call__(self, model, batch, ctx):
        return npo_loss(*policy_and_reference_logprobs(model, batch, ctx, self.name), self.beta)
