"""Training loops: full fine-tuning and training restricted to a region.

The controlled setting of Lee et al. (2025, §4) needs three kinds of training:

* full fine-tuning (θp → θr on the retain set; θp → the target model on ``full``);
* injection: θr → θo on the forget set updating only ``V_tgt``, with a retain term
  ``NLL(forget) + λ_retain · NLL(retain)`` (λ_retain = 2);
* unlearning restricted to a region (Oracle ``V_tgt`` or Random ``V_rdm``) with any objective.

All use the same loop (:func:`run_loop`): AdamW (or another registered optimizer), weight decay,
gradient clipping over the trainable entries only, linear decay without warm-up **[choice]**, a
seeded data order, a tqdm progress bar, and a guard that stops on a non-finite loss or gradient
with the step, objective and learning rate in the message.

Restricted training (:func:`train_region`) trains a :class:`~workbench.delta.RegionDelta`, so every
parameter outside the region is bit-identical afterwards. :func:`~workbench.dense_masked.train_dense_masked` is the plain
reference (gradient mask on full down-projection weights + weight decay limited to the mask) that
tests and benchmarks compare it with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from workbench import objectives as obj
from workbench.data.formatting import Encoded, collate
from workbench.delta import RegionDelta
from workbench.likelihood import model_device
from workbench.objectives.nll import NLL
from workbench.precision import FP32Masters, checkpointing, needs_masters
from workbench.progress import progress_bar as tqdm
from workbench.regions import Region, WeightRegion

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": torch.optim.AdamW,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (paper appendix F defaults: AdamW, batch 16, weight decay 0.01, 5 epochs).

    ``schedule="linear"`` decays the learning rate linearly to 0 with no warm-up **[choice]**.
    ``max_grad_norm=None`` disables clipping. ``max_steps`` caps the number of steps (benchmarks).
    ``fp32_master`` trains low-precision (bf16) weights through fp32 master copies
    (:class:`~workbench.precision.FP32Masters`); ``False`` steps them in place, which rounds small
    updates away (kept only to show that it does).
    """

    lr: float
    epochs: int = 5
    batch_size: int = 16
    weight_decay: float = 0.01
    max_grad_norm: float | None = 1.0
    seed: int = 0
    optimizer: str = "adamw"
    schedule: str = "linear"
    max_steps: int | None = None
    fp32_master: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {sorted(OPTIMIZERS)}")
        if self.schedule not in ("linear", "constant"):
            raise ValueError(f"unknown schedule {self.schedule!r}; choose 'linear' or 'constant'")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")

    def as_dict(self) -> dict:
        return asdict(self)


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or gradient."""


def make_optimizer(params: Sequence[torch.Tensor], cfg: TrainConfig) -> torch.optim.Optimizer:
    kwargs = {"lr": cfg.lr}
    if cfg.optimizer in ("adamw", "adam", "sgd"):
        kwargs["weight_decay"] = cfg.weight_decay
    return OPTIMIZERS[cfg.optimizer](params, **kwargs)


def epoch_orders(n: int, cfg: TrainConfig) -> Iterable[list[int]]:
    """Seeded shuffles, one per epoch (independent of the global RNG)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        yield torch.randperm(n, generator=gen).tolist()


def _cycle_batches(items: Sequence[Encoded], cfg: TrainConfig, pad_token_id: int):
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    while True:
        order = torch.randperm(len(items), generator=gen).tolist()
        for start in range(0, len(order), cfg.batch_size):
            yield collate([items[i] for i in order[start : start + cfg.batch_size]], pad_token_id)


CollateFn = Callable[[Sequence, int], dict]


@dataclass(frozen=True)
class TrainSpec:
    """One training job as every trainer takes it (:func:`train_region`,
    :func:`~workbench.dense_masked.train_dense_masked`, :func:`~workbench.distributed.train_distributed`).

    ``data`` (with ``pad_token_id`` for its batches) trains ``objective`` (a registered name, an
    instance, or ``None`` for the answer NLL) under ``cfg``; ``retain`` examples, weighted by
    ``lambda_retain``, add the objective's retain term. ``ctx`` is the objective's context (the
    trainer sets π_ref when it brings none; ``ctx`` itself is never modified); ``collate_fn`` builds
    the batches (default: the objective's own); ``desc`` names the progress bar.
    """

    data: Sequence[Encoded]
    cfg: TrainConfig
    pad_token_id: int
    objective: obj.Objective | str | None = None
    retain: Sequence[Encoded] | None = None
    lambda_retain: float = 0.0
    ctx: obj.ObjectiveContext | None = None
    collate_fn: CollateFn | None = None
    gradient_checkpointing: bool = False
    progress: bool = True
    desc: str | None = None

    def __post_init__(self) -> None:
        if self.lambda_retain and not self.retain:
            raise ValueError("lambda_retain > 0 needs retain examples")

    def make_objective(self) -> obj.Objective:
        return obj.make(self.objective) if isinstance(self.objective, str) else self.objective or NLL()

    def loop_options(self, objective: obj.Objective, desc: str) -> dict:
        """:func:`run_loop`'s keyword arguments for this job (``desc`` unless the job names its own)."""
        return {"retain": self.retain if self.lambda_retain else None, "desc": self.desc or desc,
                "progress": self.progress, "collate_fn": self.collate_fn or objective.collate}


def run_loop(
    params: Sequence[torch.Tensor],
    step_loss: Callable[[dict, dict | None], torch.Tensor],
    data: Sequence[Encoded],
    cfg: TrainConfig,
    pad_token_id: int,
    *,
    retain: Sequence[Encoded] | None = None,
    desc: str = "train",
    before_step: Callable[[torch.optim.Optimizer], None] | None = None,
    after_step: Callable[[], None] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
    collate_fn: CollateFn = collate,
) -> list[dict]:
    """Generic loop over seeded batches of ``data``; returns a per-step history.

    ``collate_fn(items, pad_token_id)`` turns a list of data items into a batch dict (default:
    :func:`~workbench.data.formatting.collate`; objectives with paired data, such as DPO, pass theirs).

    ``step_loss(batch, retain_batch)`` returns the loss; ``retain_batch`` is drawn from ``retain``
    (cycled, seeded) when given. ``before_step`` runs after clipping and before the optimizer step,
    ``after_step`` right after it (fp32 masters are written back there).
    """
    params = list(params)
    if not params:
        raise ValueError(f"{desc}: nothing to train (empty region?)")
    if not data:
        raise ValueError(f"{desc}: no training examples (is the split empty, or its subsample size 0?)")
    optimizer = make_optimizer(params, cfg)
    steps_per_epoch = math.ceil(len(data) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs if cfg.max_steps is None else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    decay = (lambda s: max(0.0, 1.0 - s / total)) if cfg.schedule == "linear" else (lambda s: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, decay)
    retain_iter = _cycle_batches(retain, cfg, pad_token_id) if retain else None
    history: list[dict] = []
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    step = 0
    for order in epoch_orders(len(data), cfg):
        for start in range(0, len(order), cfg.batch_size):
            if step >= total:
                break
            batch = _to(collate_fn([data[i] for i in order[start : start + cfg.batch_size]], pad_token_id), device)
            retain_batch = _to(next(retain_iter), device) if retain_iter else None
            lr = scheduler.get_last_lr()[0]
            loss = step_loss(batch, retain_batch)
            if not torch.isfinite(loss):
                raise DivergedError(f"{desc}: loss is {loss.item()} at step {step} (lr {lr:.3g}); lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = _grad_norm(params, cfg.max_grad_norm)
            if not math.isfinite(norm):
                raise DivergedError(f"{desc}: gradient norm is {norm} at step {step} (lr {lr:.3g}); lower the learning rate")
            if before_step is not None:
                before_step(optimizer)
            optimizer.step()
            if after_step is not None:
                after_step()
            scheduler.step()
            history.append({"step": step, "loss": loss.item(), "lr": lr, "grad_norm": norm})
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            step += 1
    bar.close()
    return history


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def _grad_norm(params: Sequence[torch.Tensor], max_norm: float | None) -> float:
    grads = [p for p in params if p.grad is not None]
    if max_norm is None:
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in grads]))) if grads else 0.0
    return float(torch.nn.utils.clip_grad_norm_(grads, max_norm))


def _objective_loss(model, objective, ctx, lambda_retain):
    def step_loss(batch, retain_batch):
        return obj.total_loss(objective, model, batch, ctx, retain_batch=retain_batch, lambda_retain=lambda_retain)

    return step_loss


def finetune(
    model: nn.Module,
    data: Sequence[Encoded],
    cfg: TrainConfig,
    pad_token_id: int,
    *,
    desc: str = "fine-tune",
    progress: bool = True,
    gradient_checkpointing: bool = False,
) -> list[dict]:
    """Full fine-tuning with the NLL of the answer tokens (learning θr and the target model).

    A bf16 (or fp16) model computes in its own dtype while the optimizer trains fp32 master copies
    (``cfg.fp32_master``, :mod:`workbench.precision`), so updates far below bf16's spacing are kept.
    """
    model.train()
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    masters = FP32Masters(params) if cfg.fp32_master and needs_masters(params) else None
    try:
        with checkpointing(model, gradient_checkpointing):
            history = run_loop(
                masters.params if masters else params,
                _objective_loss(model, NLL(), obj.ObjectiveContext(), 0.0),
                data, cfg, pad_token_id, desc=desc, device=model_device(model), progress=progress,
                after_step=masters.write_back if masters else None,
            )
    finally:
        if masters:
            masters.remove()
        model.eval()
    return history


def train_region(model: nn.Module, region: Region | WeightRegion, spec: TrainSpec) -> tuple[RegionDelta, list[dict]]:
    """Train only ``region``'s entries; the model's own weights are left untouched.

    Returns the trained :class:`RegionDelta` (hooks removed, *not* merged: call
    ``delta.merge()`` for θ_after, or mix with ``delta.mixed(α)``) and the step history.
    The objective's ``π_ref`` is the model with the delta disabled (unless ``spec.ctx`` brings its
    own reference).
    """
    objective = spec.make_objective()
    with frozen_for_training(model):
        delta = RegionDelta(model, region)
        ctx = spec.ctx or obj.ObjectiveContext()
        if ctx.reference is None:
            ctx = dataclasses.replace(ctx, reference=delta.disabled)
        with delta.attached(), checkpointing(model, spec.gradient_checkpointing):
            history = run_loop(
                list(delta.params.values()), _objective_loss(model, objective, ctx, spec.lambda_retain),
                spec.data, spec.cfg, spec.pad_token_id, device=model_device(model),
                **spec.loop_options(objective, f"{objective.name} on {region.size} entries"),
            )
    return delta, history


@contextlib.contextmanager
def frozen_for_training(model: nn.Module):
    """Every parameter frozen and the model in train mode inside; both restored on exit, errors too.

    The restricted trainers (:func:`train_region`, :func:`~workbench.dense_masked.train_dense_masked`)
    unfreeze only what they train, and the caller gets its model back as it gave it.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    for p, _ in flags:
        p.requires_grad_(False)
    model.train()
    try:
        yield model
    finally:
        model.train(was_training)
        for p, flag in flags:
            p.requires_grad_(flag)

