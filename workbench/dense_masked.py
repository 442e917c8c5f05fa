"""The reference that restricted training is checked against: dense masked training.

:func:`train_dense_masked` trains the full down-projection weights with a gradient mask and applies
weight decay by hand to the masked entries only (AdamW's own decoupled decay would move the frozen
ones). It is what SPEC §2 says restricted training must equal to float tolerance, and what
:func:`workbench.training.train_region` avoids: its gradients and optimizer state are full-size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from workbench import objectives as obj
from workbench.data.formatting import Encoded, collate
from workbench.likelihood import model_device
from workbench.models import architectures as arch
from workbench.objectives.nll import NLL
from workbench.regions import Region, WeightRegion
from workbench.training import CollateFn, TrainConfig, _objective_loss, frozen_for_training, run_loop


def train_dense_masked(
    model: nn.Module,
    region: Region | WeightRegion,
    data: Sequence[Encoded],
    cfg: TrainConfig,
    pad_token_id: int,
    *,
    objective: obj.Objective | str | None = None,
    retain: Sequence[Encoded] | None = None,
    lambda_retain: float = 0.0,
    ctx: obj.ObjectiveContext | None = None,
    progress: bool = False,
    collate_fn: CollateFn = collate,
) -> list[dict]:
    """Reference implementation: train full down-projection weights with a gradient mask.

    Weight decay is applied by hand to the masked entries only (AdamW's own decay would move the
    frozen ones), so with Adam-type optimizers the entries outside the mask stay exactly fixed.
    Gradients and optimizer state are full-size: this is what :func:`train_region` avoids.
    """
    objective = obj.make(objective) if isinstance(objective, str) else objective or NLL()
    weights = [arch.down_proj(model, l).weight for l in range(arch.n_layers(model))]
    masks = [_weight_mask(model, region, l) for l in range(arch.n_layers(model))]
    masked_cfg = TrainConfig(**{**cfg.as_dict(), "weight_decay": 0.0})

    def decay_masked(optimizer: torch.optim.Optimizer) -> None:
        lr = optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.sub_(lr * cfg.weight_decay * w * m.to(w.dtype))

    if ctx is None:
        ctx = obj.ObjectiveContext()
    with frozen_for_training(model):
        handles = []
        for w, m in zip(weights, masks):
            w.requires_grad_(True)
            handles.append(w.register_hook(lambda g, m=m: g * m.to(g.dtype)))
        try:
            return run_loop(
                weights, _objective_loss(model, objective, ctx, lambda_retain), data, masked_cfg, pad_token_id,
                retain=retain if lambda_retain else None, desc="dense masked",
                before_step=decay_masked if cfg.weight_decay else None, device=model_device(model), progress=progress,
                collate_fn=collate_fn,
            )
        finally:
            for handle in handles:
                handle.remove()


def _weight_mask(model: nn.Module, region: Region | WeightRegion, layer: int) -> torch.Tensor:
    weight = arch.down_proj(model, layer).weight
    if isinstance(region, WeightRegion):
        return region.masks.get(layer, torch.zeros_like(weight, dtype=torch.bool)).to(weight.device)
    mask = torch.zeros_like(weight, dtype=torch.bool)
    idx = region.layer(layer).to(weight.device)
    if arch.vector_axis(model) == 1:
        mask[:, idx] = True
    else:
        mask[idx] = True
    return mask

