"""What an unlearning objective is, and the registry that makes one available by name (SPEC §3).

An objective maps a model and a batch of its own training items to a scalar *loss to minimise*.
Each method lives in its own file of this package (``ga.py``, ``npo.py``…, open-unlearning's
``trainer/unlearn/<method>.py`` layout) as a dataclass registered with :func:`register`, and it
declares on its class everything the rest of the workbench needs to know about it, so that no
other module names it:

* its **hyper-parameters**: the dataclass fields, with defaults (SPEC's) and ``help`` metadata;
  notebooks expose each as a parameter ``<name>_<field>`` (``npo_beta``, ``rmu_layer``), generated
  from the registry. A field named ``seed`` is not a parameter: it receives the run's ``seed``.
* the **data it trains on** and how to batch it (:meth:`Objective.train_items`, ``collate``):
  DPO trains on refusal/answer pairs, the others on the forget items;
* its **loss units** (``"answer_tokens"``, ``"input_tokens"``, ``"examples"``: what the loss is a mean
  over) for exact batch sharding across ranks;
* whether it can be trained data-parallel (``distributed``: ``None``, or the reason it cannot) and
  how a global batch is split over processes (:meth:`Objective.rank_rows`);
* whether it needs a frozen **reference**: ``needs_reference`` (π_ref, the same model with its
  region delta disabled, set by the training loop) or ``needs_reference_model`` (a separate frozen
  model, θr for ``l2_mlp``);
* checks against the model's depth before training (:meth:`Objective.check_depth`) and per-region facts worth a table
  (:meth:`Objective.region_report`, e.g. RMU's reachable vectors);
* ``default_lr`` (the ``lr_<name>`` parameter's default) and ``paper``: the experiments of the paper
  that use it by default (``"table2"``…), from which notebooks take their default lists.

The total loss adds an optional retain term, ``λ_retain · retain_loss(retain)`` (:func:`total_loss`);
the paper uses λ_retain = 0 while unlearning and 2 while injecting.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.data.formatting import Encoded, collate
from workbench.data.schema import UnlearningData
from workbench.likelihood import forward_logits, mean_nll
from workbench.regions import Region, WeightRegion
from workbench.registry import Registry


@dataclass(frozen=True)
class ObjectiveContext:
    """What an objective may need besides the model and the batch (never mutated by training).

    Attributes:
        reference: a context-manager factory under which the model computes ``π_ref`` (e.g.
            ``RegionDelta.disabled``); ``None`` when the objective needs no reference.
        reference_model: a separate frozen model (θr for ``l2_mlp``), or ``None``.
        extra: objective-specific state.
    """

    reference: Callable[[], contextlib.AbstractContextManager] | None = None
    reference_model: nn.Module | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Objective:
    """Base class: a callable ``(model, batch, ctx) -> loss`` with its hyper-parameters as fields."""

    name: ClassVar[str] = ""
    default_lr: ClassVar[float] = 1e-3
    paper: ClassVar[tuple[str, ...]] = ()
    forget: ClassVar[bool] = True  # False for learning losses (nll): not offered for unlearning
    loss_units: ClassVar[str] = "examples"
    retain_units: ClassVar[str] = "answer_tokens"  # what retain_loss is a mean over (NLL: answer tokens)
    needs_reference: ClassVar[bool] = False
    needs_reference_model: ClassVar[bool] = False
    collate: ClassVar[Callable[[Sequence[Any], int], dict[str, torch.Tensor]]] = staticmethod(collate)
    # None: data-parallel training (workbench.distributed) reproduces one process; else why it cannot.
    distributed: ClassVar[str | None] = None

    @staticmethod
    def rank_rows(n_rows: int, rank: int, world: int) -> torch.Tensor:
        """Which rows of a collated global batch process ``rank`` of ``world`` computes: a contiguous
        share. An objective whose rows belong together (DPO's win/lose pairs) keeps them together."""
        return torch.tensor_split(torch.arange(n_rows), world)[rank]

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], ctx: ObjectiveContext) -> torch.Tensor:
        raise NotImplementedError

    def retain_loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], ctx: ObjectiveContext) -> torch.Tensor:
        """The retain term that :func:`total_loss` weights by ``λ_retain``: NLL unless overridden."""
        return mean_nll(forward_logits(model, batch), batch["labels"])

    def train_items(self, tokenizer, data: UnlearningData, forget: Sequence[Encoded], *, seed: int) -> Sequence[Any]:
        """The items this objective trains on (batched by ``collate``): the encoded forget set."""
        return forget

    def check_depth(self, n_layers: int) -> list[str]:
        """Problems with these hyper-parameters for a model of ``n_layers`` decoder layers, found
        before any training (the tiny model's depth is known from the parameters alone)."""
        return []

    def region_report(self, region: Region | WeightRegion, model: nn.Module) -> dict[str, Any]:
        """Facts about ``region`` that matter for this objective (a row of a table), or ``{}``."""
        return {}


OBJECTIVES = Registry("objective")
register = OBJECTIVES.register
objective_class = OBJECTIVES.get_class
make = OBJECTIVES.make


def total_loss(
    objective: Objective,
    model: nn.Module,
    forget_batch: Mapping[str, torch.Tensor],
    ctx: ObjectiveContext,
    *,
    retain_batch: Mapping[str, torch.Tensor] | None = None,
    lambda_retain: float = 0.0,
) -> torch.Tensor:
    """``objective(forget) + λ_retain · objective.retain_loss(retain)``; no retain term at λ_retain = 0."""
    loss = objective(model, forget_batch, ctx)
    if lambda_retain:
        if retain_batch is None:
            raise ValueError("lambda_retain > 0 needs a retain batch")
        loss = loss + lambda_retain * objective.retain_loss(model, retain_batch, ctx)
    return loss


def reference_scope(ctx: ObjectiveContext, name: str) -> contextlib.AbstractContextManager:
    """The context in which the model computes π_ref; a clear error when the caller set none."""
    if ctx.reference is None:
        raise ValueError(
            f"objective {name!r} compares with a frozen reference π_ref: set ctx.reference "
            "(train_region sets it to RegionDelta.disabled)"
        )
    return ctx.reference()
