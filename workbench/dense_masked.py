"""The reference that restricted training is checked against: dense masked training.

:func:`train_dense_masked` trains the full down-projection weights with a gradient mask and applies
weight decay by hand to the masked entries only (AdamW's own decoupled decay would move the frozen
ones). It is what SPEC §2 says restricted training must equal to float tolerance, and what
:func:`workbench.training.train_region` avoids: its gradients and optimizer state are full-size.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench import objectives as obj
from workbench.likelihood import model_device
from workbench.models import architectures as arch
from workbench.precision import checkpointing
from workbench.regions import Region, WeightRegion
from workbench.training import TrainConfig, TrainSpec, _objective_loss, frozen_for_training, run_loop


def train_dense_masked(model: nn.Module, region: Region | WeightRegion, spec: TrainSpec) -> list[dict]:
    """Reference implementation: train full down-projection weights with a gradient mask.

    Weight decay is applied by hand to the masked entries only (AdamW's own decay would move the
    frozen ones), so with Adam-type optimizers the entries outside the mask stay exactly fixed.
    Gradients and optimizer state are full-size: this is what :func:`train_region` avoids.
    """
    objective, cfg = spec.make_objective(), spec.cfg
    weights = [arch.down_proj(model, l).weight for l in range(arch.n_layers(model))]
    masks = [_weight_mask(model, region, l) for l in range(arch.n_layers(model))]
    masked_cfg = TrainConfig(**{**cfg.as_dict(), "weight_decay": 0.0})

    def decay_masked(optimizer: torch.optim.Optimizer) -> None:
        lr = optimizer.param_groups[0]["lr"]
        with torch.no_grad():
            for w, m in zip(weights, masks):
                w.sub_(lr * cfg.weight_decay * w * m.to(w.dtype))

    ctx = spec.ctx or obj.ObjectiveContext()
    with frozen_for_training(model), checkpointing(model, spec.gradient_checkpointing):
        handles = []
        for w, m in zip(weights, masks):
            w.requires_grad_(True)
            handles.append(w.register_hook(lambda g, m=m: g * m.to(g.dtype)))
        try:
            return run_loop(
                weights, _objective_loss(model, objective, ctx, spec.lambda_retain), spec.data, masked_cfg,
                spec.pad_token_id, before_step=decay_masked if cfg.weight_decay else None, device=model_device(model),
                **spec.loop_options(objective, "dense masked"),
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

