"""Unlearning (and learning) objectives, registered by name (SPEC §3).

Every objective is a small class registered with :func:`register`; notebooks and parameter files
name them as strings (``"npo"``, ``"wga"``…). An objective maps a model and a batch of its own
split to a scalar *loss to minimise*. Log-likelihoods are over answer tokens only (labels −100
elsewhere). The total loss adds an optional retain term, ``λ_retain · NLL(retain)``
(:func:`total_loss`); the paper uses λ_retain = 0 while unlearning and 2 while injecting.

Objectives that compare with a frozen reference ``π_ref`` (NPO, DPO) get it from an
:class:`ObjectiveContext`: with region-restricted training the reference is the same model with
its region delta disabled, so no second copy of the model is kept.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ObjectiveContext:
    """What an objective may need besides the model and the batch.

    Attributes:
        reference: a context-manager factory under which the model computes ``π_ref`` (e.g.
            ``RegionDelta.disabled``); ``None`` when the objective needs no reference.
        reference_model: a separate frozen model (θr for ``l2_mlp``), or ``None``.
        refusals: encoded refusal answers are part of DPO batches; kept here for builders.
        extra: objective-specific state (e.g. RMU's control vector).
    """

    reference: Callable[[], contextlib.AbstractContextManager] | None = None
    reference_model: nn.Module | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Objective:
    """Base class: a callable ``(model, batch, ctx) -> loss`` with its hyperparameters as fields."""

    name: ClassVar[str] = ""
    needs_reference: ClassVar[bool] = False
    needs_reference_model: ClassVar[bool] = False

    def __call__(self, model: nn.Module, batch: Mapping[str, torch.Tensor], ctx: ObjectiveContext) -> torch.Tensor:
        raise NotImplementedError


OBJECTIVES: dict[str, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    """Class decorator: make an objective available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} needs a `name`")
    OBJECTIVES[cls.name] = cls
    return cls


def make(name: str, **params: Any) -> Objective:
    """Instantiate a registered objective; unknown names and parameters get a clear error."""
    try:
        cls = OBJECTIVES[name]
    except KeyError:
        raise ValueError(f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)}") from None
    try:
        return cls(**params)
    except TypeError as err:
        raise ValueError(f"bad parameters for objective {name!r}: {err}") from None


# -- log-likelihood helpers (pure tensor functions) ---------------------------------------------
def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every next token and the answer mask.

    Args:
        logits: ``[batch, pos, vocab]``; ``logits[:, t]`` predicts token ``t+1`` (HF convention).
        labels: ``[batch, pos]``, −100 outside the answer.

    Returns:
        ``(logp [batch, pos-1], mask [batch, pos-1])`` aligned with ``labels[:, 1:]``.
    """
    shifted = labels[:, 1:]
    mask = shifted != -100
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    gathered = logp.gather(-1, shifted.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return gathered * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log π(y|x)`` summed over answer tokens, ``[batch]``."""
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over *all answer tokens of the batch* of −log p(y_t) (the HF causal-LM loss)."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum() / mask.sum().clamp_min(1)


def forward_logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@register
@dataclass
class NLL(Objective):
    """Learning loss: mean over answer tokens of −log p_θ(y_t) (also the retain term)."""

    name: ClassVar[str] = "nll"

    def __call__(self, model, batch, ctx):
        return mean_nll(forward_logits(model, batch), batch["labels"])


def total_loss(
    objective: Objective,
    model: nn.Module,
    forget_batch: Mapping[str, torch.Tensor],
    ctx: ObjectiveContext,
    *,
    retain_batch: Mapping[str, torch.Tensor] | None = None,
    lambda_retain: float = 0.0,
) -> torch.Tensor:
    """``objective(forget) + λ_retain · NLL(retain)``; the retain term is skipped when λ_retain = 0."""
    loss = objective(model, forget_batch, ctx)
    if lambda_retain:
        if retain_batch is None:
            raise ValueError("lambda_retain > 0 needs a retain batch")
        loss = loss + lambda_retain * mean_nll(forward_logits(model, retain_batch), retain_batch["labels"])
    return loss
