"""Training on several processes (GPUs) with HF accelerate: full fine-tuning and restricted training.

Data parallelism runs one copy of the training step per process (*rank*). Every rank walks the
same seeded sequence of **global** batches (the order of :func:`workbench.training.run_loop`) and
takes its own contiguous share of each batch's rows (:func:`shard_rows`); the gradients are then
averaged over ranks (DDP's all-reduce, or FSDP's reduce-scatter). A loss that is a *mean* over
units (answer tokens for NLL, examples for NPO) must be re-weighted so that the average over ranks
equals the single-process loss of the global batch: rank r multiplies its local mean by
``world · n_r / N`` (``n_r`` units on the rank, ``N`` in the global batch, :func:`shard_weight`).
Then two processes compute the same update as one process on the same global batch, up to float
rounding, for any sequence lengths.

Two ways to split the work across GPUs (paper setting: 8B models on two 80 GB GPUs):

* **Full fine-tuning** (θp → θr, the target model) trains every weight; with AdamW in bf16 that is
  8 bytes per parameter before activations (≈ 60 GiB of state for 8B, see
  :func:`workbench.models.estimate_memory`), so shard it with **FSDP** (version 2) over the GPUs.
* **Restricted training** (injection, unlearning) trains only a
  :class:`~workbench.delta.RegionDelta` (fp32, a few % of the model) on a frozen bf16 model, which
  fits one 80 GB GPU. Several GPUs run plain **DDP**: :class:`RestrictedModule` wraps the frozen
  model and the delta in a module whose only parameters are the delta's, so DDP broadcasts and
  all-reduces just those (the frozen model is kept out of ``parameters()``, and every rank must load
  the same weights: :func:`check_same_weights`).

Launch with the accelerate configs in ``scripts/accelerate/`` (``scripts/train_distributed.sh``
wraps these; nothing here picks a device)::

    # 2 GPUs, restricted training with DDP, bf16 autocast, bf16 frozen weights, fp32 delta
    accelerate launch --config_file scripts/accelerate/ddp_2gpu.yaml -m workbench.distributed \
        --mode restricted --model meta-llama/Llama-3.1-8B-Instruct --dtype bfloat16 \
        --data forget.jsonl --gradient-checkpointing --out outputs/delta
    # 2 GPUs, full fine-tuning sharded with FSDP2 (one unit per decoder layer, activation
    # checkpointing from the config, fp32 sharded master weights, bf16 compute)
    accelerate launch --config_file scripts/accelerate/fsdp2_2gpu.yaml -m workbench.distributed \
        --mode full --model meta-llama/Llama-3.1-8B-Instruct --dtype float32 --data full.jsonl --out outputs/target
    # CPU stand-in used by the tests (gloo): the only launch that really starts 2 ranks on CPU
    ACCELERATE_USE_CPU=true OMP_NUM_THREADS=1 accelerate launch --multi_gpu --num_processes 2 \
        -m workbench.distributed --mode restricted --out /tmp/run

On CPU, accelerate silently falls back in other launches (``--cpu`` runs one process, FSDP flags
are ignored), so :func:`train_distributed` records ``distributed_type`` and ``num_processes`` and
the tests assert them. Gradient checkpointing (``--gradient-checkpointing``) uses the non-reentrant
torch checkpoint, which also recomputes the delta's hooks and needs no input gradients.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn

from workbench import objectives as obj
from workbench.delta import RegionDelta
from workbench.likelihood import IGNORE
from workbench.precision import enable_checkpointing
from workbench.regions import Region, WeightRegion
from workbench.training import TrainSpec, run_loop


# -- sharding a global batch ----------------------------------------------------------------------
def answer_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    """Number of predicted answer tokens (what :func:`workbench.objectives.mean_nll` divides by)."""
    return int((batch["labels"][:, 1:] != IGNORE).sum())


def input_tokens(batch: Mapping[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum())


def examples(batch: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


# How to count the units an objective's loss is a mean over (``Objective.loss_units``).
UNIT_COUNTS: dict[str, Callable[[Mapping[str, torch.Tensor]], int]] = {
    "answer_tokens": answer_tokens,
    "input_tokens": input_tokens,
    "examples": examples,
}


def shard_rows(batch: Mapping[str, torch.Tensor], rank: int, world: int,
               rows: Callable[[int, int, int], torch.Tensor] = obj.Objective.rank_rows) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s share of the rows of every tensor in ``batch`` (dim 0 = batch), chosen by ``rows``
    (an objective whose rows belong together, such as DPO's win/lose pairs, keeps them on one rank)."""
    n = examples(batch)
    if n < world:
        raise ValueError(f"a global batch of {n} rows cannot feed {world} processes; raise batch_size")
    index = rows(n, rank, world)
    return {k: v.index_select(0, index.to(v.device)) for k, v in batch.items()}


def shard_weight(local: Mapping, full: Mapping, world: int, units: Callable[[Mapping], int]) -> float:
    """``world · n_local / n_global``: makes the rank-average of local means the global mean."""
    total = units(full)
    return world * units(local) / total if total else 0.0


# -- what DDP wraps -------------------------------------------------------------------------------
class RestrictedModule(nn.Module):
    """A frozen model plus its :class:`RegionDelta`; ``parameters()`` are the delta's only.

    ``forward`` runs the model, whose down-projection hooks read the delta. The model is held in a
    list so that DDP neither broadcasts nor all-reduces its (frozen, multi-GB) weights.
    """

    def __init__(self, model: nn.Module, delta: RegionDelta):
        super().__init__()
        self.delta = delta
        self._model = [model]

    def forward(self, *args, **kwargs):
        return self._model[0](*args, **kwargs)


class ModelView:
    """What objectives see: calls go through the wrapped (DDP/FSDP) module so that gradients are
    synchronised; attributes (``config``, decoder layers for hooks) come from the plain HF model."""

    def __init__(self, wrapped: nn.Module, model: nn.Module):
        self._wrapped, self._model = wrapped, model

    def __call__(self, *args, **kwargs):
        return self._wrapped(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def check_same_weights(accelerator, model: nn.Module) -> None:
    """Fail early when ranks hold different frozen weights (DDP only syncs the trainable ones)."""
    local = torch.stack([p.detach().float().sum() for p in model.parameters()]).to(accelerator.device)
    lo, hi = _min_max(accelerator, local)
    if not torch.equal(lo, hi):
        raise RuntimeError("ranks loaded different model weights; load the same checkpoint (or seed) on every rank")


def _min_max(accelerator, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gathered = accelerator.gather(values.unsqueeze(0))
    return gathered.min(0).values, gathered.max(0).values


# -- the training step ----------------------------------------------------------------------------
def _all_finite(accelerator, loss: torch.Tensor) -> bool:
    # Every rank must agree, or one rank stops while the others wait in the all-reduce forever.
    flag = torch.tensor([float(torch.isfinite(loss.detach()).all())], device=accelerator.device)
    return bool(_min_max(accelerator, flag)[0].item())


def sharded_step_loss(
    accelerator,
    view: ModelView,
    objective: obj.Objective,
    ctx: obj.ObjectiveContext,
    lambda_retain: float,
) -> Callable[[dict, dict | None], torch.Tensor]:
    """``step_loss`` for :func:`run_loop`: this rank's weighted share of the global batch's loss."""
    rank, world = accelerator.process_index, accelerator.num_processes
    units = UNIT_COUNTS[objective.loss_units]
    retain_loss = objective.retain_loss

    def step_loss(batch: dict, retain_batch: dict | None) -> torch.Tensor:
        local = shard_rows(batch, rank, world, objective.rank_rows)
        loss = objective(view, local, ctx) * shard_weight(local, batch, world, units)
        if lambda_retain:
            r_local = shard_rows(retain_batch, rank, world)
            r_weight = shard_weight(r_local, retain_batch, world, UNIT_COUNTS[objective.retain_units])
            loss = loss + lambda_retain * r_weight * retain_loss(view, r_local, ctx)
        return loss if _all_finite(accelerator, loss) else torch.full_like(loss, float("nan"))

    return step_loss


def distributed_refusal(objective: obj.Objective, *, restricted: bool) -> str | None:
    """Why ``objective`` cannot train on several processes here, or ``None`` when it can.

    Read from what the objective declares (``distributed``, ``needs_reference``,
    ``needs_reference_model``), so the launcher can refuse before any process starts.
    """
    if objective.distributed is not None:
        return f"objective {objective.name!r} cannot be trained distributed: {objective.distributed}"
    if objective.needs_reference_model:
        return (f"objective {objective.name!r} compares with a separate frozen model (θr), which "
                "workbench.distributed does not load; train it on one GPU with the notebook")
    if objective.needs_reference and not restricted:
        return (f"objective {objective.name!r} needs π_ref, the model with its region delta disabled; "
                "full fine-tuning has no delta (use --mode restricted)")
    return None


def _check_launchable(objective: obj.Objective, model: nn.Module, region) -> None:
    if refusal := distributed_refusal(objective, restricted=region is not None):
        raise ValueError(refusal)
    if region is None and any(p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("full fine-tuning on several processes needs fp32 weights (--dtype float32): the "
                         "launch's mixed precision computes in bf16 and the fp32 weights are the master copy")


def _prepare(accelerator, model: nn.Module, region: Region | WeightRegion | None):
    """Wrap for the launch's distributed mode; returns (wrapped, trainable params, delta or None)."""
    check_same_weights(accelerator, model)
    if region is None:
        for p in model.parameters():
            p.requires_grad_(True)
        if getattr(accelerator, "is_fsdp2", False):
            # accelerate prepares an FSDP2 model only together with an optimizer; this stateless one
            # is dropped, and run_loop builds AdamW over the sharded parameters (unverified on GPUs).
            wrapped, _ = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
        else:
            wrapped = accelerator.prepare(model)
        return wrapped, [p for p in wrapped.parameters() if p.requires_grad], None
    for p in model.parameters():
        p.requires_grad_(False)
    delta = RegionDelta(model, region)
    with warnings.catch_warnings():  # accelerate passes `broadcast_buffers`, which torch now renames
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*", category=FutureWarning)
        wrapped = accelerator.prepare(RestrictedModule(model, delta))
    return wrapped, list(delta.params.values()), delta


def train_distributed(accelerator, model: nn.Module, spec: TrainSpec, *, region: Region | WeightRegion | None = None
                      ) -> tuple[nn.Module | RegionDelta, list[dict]]:
    """Train on every process of ``accelerator``: all weights (``region=None``) or only ``region``.

    ``model`` must already sit on ``accelerator.device`` with identical weights on every rank.
    ``spec.cfg.batch_size`` is the **global** batch (split over the ranks); the progress bar shows on
    the main process only. Returns the trained model (unwrapped; under FSDP its parameters stay
    sharded, gather them with ``accelerator.get_state_dict``) or the :class:`RegionDelta` (hooks
    removed, not merged), and the history of :func:`run_loop` with ``loss`` replaced by the loss of
    the global batch.
    """
    objective = spec.make_objective()
    _check_launchable(objective, model, region)
    if spec.gradient_checkpointing:
        enable_checkpointing(model)
    wrapped, params, delta = _prepare(accelerator, model, region)
    view = ModelView(wrapped, model)
    ctx = spec.ctx or obj.ObjectiveContext()
    if delta is not None and ctx.reference is None:
        ctx = dataclasses.replace(ctx, reference=delta.disabled)
    options = spec.loop_options(objective, f"{objective.name} on rank {accelerator.process_index}")
    model.train()
    try:
        if delta is not None:
            delta.attach()
        history = run_loop(
            params, sharded_step_loss(accelerator, view, objective, ctx, spec.lambda_retain), spec.data, spec.cfg,
            spec.pad_token_id, device=accelerator.device,
            **{**options, "progress": spec.progress and accelerator.is_main_process},
        )
    finally:
        if delta is not None:
            delta.detach_hooks()
        model.eval()
    return (delta if delta is not None else accelerator.unwrap_model(wrapped)), _global_history(accelerator, history)


def _global_history(accelerator, history: list[dict]) -> list[dict]:
    if not history:
        return history
    local = torch.tensor([h["loss"] for h in history], dtype=torch.float64, device=accelerator.device)
    mean = accelerator.gather(local.unsqueeze(0)).mean(0).tolist()
    return [{**h, "loss": m} for h, m in zip(history, mean)]


def make_accelerator(**kwargs):
    """An ``Accelerator`` for :func:`train_distributed`. DDP buffer broadcasting is off: the delta's
    frozen ``P0`` copies are buffers and would otherwise be re-sent before every forward."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    return Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)], **kwargs)
