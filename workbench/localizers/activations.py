"""``activations`` (Chang et al. 2024) — how strongly the forget answers use each value vector.

SPEC §4: ``(1/T) Σ_t |a_{ℓ,i}(t)| · ‖v_{ℓ,i}‖`` over the answer tokens of each forget example,
averaged over examples, then normalised within each layer **[choice: z-score]** so that layers can
be ranked together. ``a_{ℓ,i}(t)`` is the memory coefficient, the down-projection's *input* (read
by a forward pre-hook; for SwiGLU ``act(gate)·up``, which ``act_fn`` alone lacks). Chang et al.'s
code takes ``|mean_t a|`` instead of ``mean_t |a|``: ``reduce="abs_mean"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from workbench.likelihood import IGNORE, forward_logits
from workbench.localizers.base import Localizer, device_batches, eval_mode, register
from workbench.models import architectures as arch

REDUCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    # a: [batch, pos, d_ff], mask: [batch, pos, 1] → per example [batch, d_ff]
    "mean_abs": lambda a, m: (a.abs() * m).sum(1) / m.sum(1).clamp_min(1),
    "abs_mean": lambda a, m: ((a * m).sum(1) / m.sum(1).clamp_min(1)).abs(),  # Chang et al.'s code
}

NORMALISERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zscore": lambda s: (s - s.mean(1, keepdim=True)) / s.std(1, correction=0, keepdim=True).clamp_min(1e-12),
    "none": lambda s: s,
}


def predicting_answer(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is an answer token (Chang et al.'s suffix positions), ``[batch, pos]``."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


@contextlib.contextmanager
def pooled_coefficients(model: nn.Module, mask: torch.Tensor, reduce: str) -> Iterator[list[torch.Tensor]]:
    """Collect, per layer, each example's pooled memory coefficients ``[batch, d_ff]`` over the
    positions in ``mask`` ``[batch, pos]``. The coefficients are the down-projection's *input*, read
    by a forward pre-hook (for SwiGLU ``act(gate)·up``, which ``act_fn`` alone lacks); pooling in
    the hook keeps memory at ``[batch, d_ff]`` per layer instead of ``[batch, pos, d_ff]``."""
    pooled: list[torch.Tensor] = []
    reduce_fn, weights = REDUCTIONS[reduce], mask.unsqueeze(-1).float()

    def hook(module, args):
        pooled.append(reduce_fn(args[0].detach().float(), weights))

    handles = [arch.down_proj(model, l).register_forward_pre_hook(hook) for l in range(arch.n_layers(model))]
    try:
        yield pooled
    finally:
        for h in handles:
            h.remove()



@register
@dataclass
class Activations(Localizer):
    """``mean_x (1/T)Σ_t |a_{ℓ,i}(t)| · ‖v_{ℓ,i}‖`` over the positions that predict answer tokens
    **[choice: Chang et al.'s positions; per-example means averaged over examples]**, then z-scored
    within each layer **[choice]**."""

    name: ClassVar[str] = "activations"
    title: ClassVar[str] = "Activations"
    color: ClassVar[str] = "#0072B2"
    paper: ClassVar[tuple[str, ...]] = ("table1",)
    reduce: str = field(default="mean_abs", metadata={"help": "'mean_abs' (SPEC) or 'abs_mean' (Chang et al.'s code)"})
    normalize: str = field(default="zscore", metadata={"help": "[choice] per-layer normalisation: 'zscore' or 'none'"})
    batch_size: int = field(default=8, metadata={"help": "examples per forward pass"})

    def __post_init__(self) -> None:
        if self.reduce not in REDUCTIONS or self.normalize not in NORMALISERS:
            raise ValueError(f"activations: reduce must be one of {sorted(REDUCTIONS)}, normalize one of {sorted(NORMALISERS)}")

    @torch.no_grad()
    def scores(self, model, forget, retain, pad_token_id):
        if not forget:
            raise ValueError("activations needs at least one forget example")
        total = torch.zeros(arch.n_layers(model), arch.d_ff(model))
        with eval_mode(model):
            for batch in device_batches(model, forget, pad_token_id, self.batch_size):
                with pooled_coefficients(model, predicting_answer(batch["labels"]), self.reduce) as pooled:
                    forward_logits(model, batch)
                total += torch.stack([p.sum(0).cpu() for p in pooled])
        norms = torch.stack([arch.value_vectors(model, l).detach().float().norm(dim=1).cpu()
                             for l in range(arch.n_layers(model))])
        return NORMALISERS[self.normalize](total / len(forget) * norms)
