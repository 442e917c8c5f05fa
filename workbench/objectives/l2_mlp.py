"""``l2_mlp`` — supervise every layer's MLP output towards θr (paper §4, Figure 1).

If knowledge lives in a region, making the model's MLP outputs on forget inputs equal those of the
retain model θr should be possible by updating that region; the paper finds Random regions do it
"to a degree comparable to" the Oracle region. SPEC: ``Σ_ℓ mean_t ‖MLP_ℓ(x;θ) − MLP_ℓ(x;θr)‖²``.
The paper's "α = 2" is the same term on retain inputs (:meth:`L2MLP.retain_loss`) **[choice]**:
train with ``retain=…, lambda_retain=2``. The mean runs over all non-pad tokens (prompt and
answer), pooled across the batch **[choice]**.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from workbench.likelihood import forward_logits
from workbench.models import architectures as arch
from workbench.objectives.base import Objective, register


@contextlib.contextmanager
def mlp_outputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect every layer's MLP output ``[batch, pos, d_model]`` during the forwards in the block."""
    outputs: list[torch.Tensor] = []

    def hook(module, args, out):
        outputs.append(out[0] if isinstance(out, tuple) else out)

    handles = [arch.mlp_module(model, l).register_forward_hook(hook) for l in range(arch.n_layers(model))]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def l2_mlp_loss(outputs: Sequence[torch.Tensor], ref_outputs: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """``Σ_ℓ mean_t ‖M_ℓ(t) − M^ref_ℓ(t)‖²`` over the tokens where ``mask`` ``[batch, pos]`` is true."""
    mask = mask.bool()
    return sum((o.float() - r.float().to(o.device)).pow(2).sum(-1)[mask].mean() for o, r in zip(outputs, ref_outputs))


@register
@dataclass
class L2MLP(Objective):
    """Match every layer's MLP output to the frozen θr (``ctx.reference_model``)."""

    name: ClassVar[str] = "l2_mlp"
    default_lr: ClassVar[float] = 3e-3
    paper: ClassVar[tuple[str, ...]] = ("figure1",)
    loss_units: ClassVar[str] = "input_tokens"
    retain_units: ClassVar[str] = "input_tokens"
    needs_reference_model: ClassVar[bool] = True

    def __call__(self, model, batch, ctx):
        if ctx.reference_model is None:
            raise ValueError("l2_mlp needs ctx.reference_model (the frozen retain model θr)")
        with torch.no_grad(), mlp_outputs(ctx.reference_model) as ref:
            forward_logits(ctx.reference_model, batch)
        with mlp_outputs(model) as out:
            forward_logits(model, batch)
        return l2_mlp_loss(out, ref, batch["attention_mask"])

    def retain_loss(self, model, batch, ctx):
        return self(model, batch, ctx)
