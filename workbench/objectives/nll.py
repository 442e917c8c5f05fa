"""``nll`` — the learning loss: mean over answer tokens of −log p_θ(y_t) (also the default retain term).

Not an unlearning objective (``forget = False``): the workbench uses it to fine-tune θp into θr or
θ_full and to inject the forget set into the target region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from workbench.likelihood import forward_logits, mean_nll
from workbench.objectives.base import Objective, register


@register
@dataclass
class NLL(Objective):
    """Learning loss: mean over the batch's answer tokens of −log p_θ(y_t)."""

    name: ClassVar[str] = "nll"
    forget: ClassVar[bool] = False
    loss_units: ClassVar[str] = "answer_tokens"

    def __call__(self, model, batch, ctx):
        return mean_nll(forward_logits(model, batch), batch["labels"])
