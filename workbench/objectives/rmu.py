"""``rmu`` — representation misdirection (Li et al. 2024, WMDP), paper Tables 2 and 4.

Instead of lowering a likelihood, RMU pushes the residual stream after one decoder layer ℓ towards
a fixed random direction scaled by c, scrambling what later layers read. SPEC §3:
``mean_x (1/|x|) Σ_t ‖h_θ^(ℓ)(t) − c·u‖²``, u = U[0,1) entries scaled to unit norm (seeded),
ℓ = 21 of 32 layers (0-based, as WMDP's code) **[choice: ⌊2L/3⌋ for other depths]**, c = 2.

Only region vectors in layers ≤ ℓ can receive a gradient (the loss reads the stream after ℓ, and the
forward stops there): :meth:`RMU.region_report` counts them, SPEC asks for that number next to the
results. The forward is stopped by raising from a hook, which DDP cannot follow, so RMU declares
itself unsupported under data parallelism (``distributed``) and ``workbench.distributed`` refuses it
before any process starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from workbench.likelihood import IGNORE, forward_logits
from workbench.models import architectures as arch
from workbench.objectives.base import Objective, register
from workbench.regions import Region, WeightRegion


class _StopForward(Exception):
    """Raised by RMU's hook once the target layer has run: the deeper layers are not needed."""


def control_vector(d_model: int, seed: int) -> torch.Tensor:
    """RMU's fixed direction ``u``: entries U[0,1) (seeded), scaled to unit norm, ``[d_model]``."""
    u = torch.rand(d_model, generator=torch.Generator().manual_seed(int(seed)))
    return u / u.norm()


def rmu_loss(hidden: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mean_x (1/|x|) Σ_{t∈x} ‖h(t) − target‖²``; hidden ``[batch, pos, d_model]``, mask ``[batch, pos]``."""
    sq = (hidden.float() - target.to(hidden.device)).pow(2).sum(-1) * mask
    return (sq.sum(-1) / mask.sum(-1).clamp_min(1)).mean()


def rmu_layer(n_layers: int, layer: int | None) -> int:
    """The hooked decoder layer (0-based): ``layer`` or ⌊2L/3⌋ **[choice]** (21 of 32), validated."""
    resolved = (2 * n_layers) // 3 if layer is None else int(layer)
    if not 0 <= resolved < n_layers:
        raise ValueError(f"'rmu_layer' = {layer} is outside the model's {n_layers} decoder layers "
                         f"(0..{n_layers - 1}, or None for floor(2L/3))")
    return resolved


def rmu_reachable(region: Region | WeightRegion, layer: int) -> int:
    """How many of the region's vectors (or weights) sit in layers ≤ ``layer``: only these can
    receive an RMU gradient, since the loss reads the residual stream after ``layer``."""
    counts = (
        {l: int(m.sum()) for l, m in region.masks.items()}
        if isinstance(region, WeightRegion)
        else {l: int(i.numel()) for l, i in region.indices.items()}
    )
    return sum(c for l, c in counts.items() if l <= layer)


RMU_TOKENS: dict[str, Callable[[Mapping[str, torch.Tensor]], torch.Tensor]] = {
    "answer": lambda batch: batch["labels"] != IGNORE,
    "all": lambda batch: batch["attention_mask"].bool(),
}


def hidden_after_layer(model: nn.Module, batch: Mapping[str, torch.Tensor], layer: int) -> torch.Tensor:
    """Residual stream after decoder layer ``layer``, ``[batch, pos, d_model]``; the forward stops there."""
    captured: list[torch.Tensor] = []

    def hook(module, args, output):
        captured.append(output[0] if isinstance(output, tuple) else output)
        raise _StopForward

    handle = arch.decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        forward_logits(model, batch)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]


@register
@dataclass
class RMU(Objective):
    """Representation misdirection: ``mean_x (1/|x|) Σ_t ‖h^(ℓ)(t) − c·u‖²``.

    ``tokens="answer"`` **[choice]** averages over the answer tokens' positions (labels ≠ −100, as
    open-unlearning's port); ``"all"`` over every non-pad token. ``u`` is :func:`control_vector` of
    ``seed`` (the run's seed).
    """

    name: ClassVar[str] = "rmu"
    paper: ClassVar[tuple[str, ...]] = ("table2", "table4")
    distributed: ClassVar[str | None] = (
        "RMU stops the forward pass at its layer by raising from a hook, which DDP cannot follow (its "
        "reducer never learns which parameters will get gradients, so they are not all-reduced and the "
        "ranks drift apart silently); train RMU on one GPU")
    layer: int | None = field(default=None, metadata={"help": "RMU steering layer (0-based); None -> floor(2L/3)"})
    c: float = field(default=2.0, metadata={"help": "RMU steering scale c"})
    tokens: str = field(default="answer", metadata={"help": "[choice] positions averaged: 'answer' or 'all'"})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tokens not in RMU_TOKENS:
            raise ValueError(f"unknown rmu tokens {self.tokens!r}; choose one of {sorted(RMU_TOKENS)}")

    def __call__(self, model, batch, ctx):
        layer = rmu_layer(arch.n_layers(model), self.layer)
        hidden = hidden_after_layer(model, batch, layer)
        target = self.c * control_vector(hidden.shape[-1], self.seed)
        return rmu_loss(hidden, RMU_TOKENS[self.tokens](batch), target)

    def check_depth(self, n_layers: int) -> list[str]:
        try:
            rmu_layer(n_layers, self.layer)
        except ValueError as err:
            return [str(err)]
        return []

    def region_report(self, region: Region | WeightRegion, model: nn.Module) -> dict:
        layer = rmu_layer(arch.n_layers(model), self.layer)
        return {"rmu_layer": layer, "reachable": rmu_reachable(region, layer), "size": region.size}
