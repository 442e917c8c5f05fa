"""What a localizer is, the registry, and the gradient machinery the attribution methods share.

A localizer scores every MLP value vector ``v_{ℓ,i}`` (column ``i`` of layer ℓ's down-projection)
from the forget set (and, for some, the retain set); the top p% of the scores, ranked globally
across layers, becomes the region that unlearning may update (SPEC §4, paper §3). Lee et al.
(2025) ask whether such regions beat Random regions of the same size.

Each method lives in its own file of this package as a dataclass registered with :func:`register`;
its fields are its hyper-parameters (notebooks expose them as ``<name>_<field>``, e.g.
``memflex_mu``; a field named ``seed`` receives the run's seed) and its class declares ``level``
(``"vector"``: scores ``[layer, d_ff]``; ``"weight"``: ``{layer: scores in down_proj.weight's
layout}``), ``default_lr`` (the ``lr_<name>`` parameter: unlearning rate in its regions) and
``paper`` (the paper's tables that use it by default), and ``title`` and ``color`` for figures.
:func:`localize` turns scores into a region and records per-layer counts. Attribution gradients are
accumulated in fp32 on down-projections only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.data.formatting import Encoded, batches
from workbench.likelihood import answer_nll, forward_logits, model_device
from workbench.models import architectures as arch
from workbench.regions import Region, WeightRegion, top_fraction, top_fraction_weights
from workbench.registry import Registry

Scores = torch.Tensor | dict[int, torch.Tensor]


class Localizer:
    """Base class: ``scores(model, forget, retain, pad_token_id)`` with hyper-parameters as fields."""

    name: ClassVar[str] = ""
    level: ClassVar[str] = "vector"
    default_lr: ClassVar[float] = 1e-3
    paper: ClassVar[tuple[str, ...]] = ()
    # How figures show its regions: one colour per method in every figure ('' -> a stable fallback).
    title: ClassVar[str] = ""
    color: ClassVar[str] = ""

    def scores(self, model: nn.Module, forget: Sequence[Encoded], retain: Sequence[Encoded], pad_token_id: int) -> Scores:
        raise NotImplementedError


LOCALIZERS = Registry("localizer")
register = LOCALIZERS.register
localizer_class = LOCALIZERS.get_class
make = LOCALIZERS.make


def score(name: str, model: nn.Module, forget: Sequence[Encoded], retain: Sequence[Encoded], pad_token_id: int,
          **params: Any) -> Scores:
    """Scores of the registered localizer ``name``; unknown names and parameters get a clear error."""
    return make(name, **params).scores(model, forget, retain, pad_token_id)


def to_region(scores: Scores, fraction: float) -> Region | WeightRegion:
    """Top ``fraction`` of the scores, ranked globally: a :class:`Region` from a ``[layer, d_ff]``
    tensor, a :class:`WeightRegion` from per-layer weight scores."""
    return top_fraction(scores, fraction) if isinstance(scores, torch.Tensor) else top_fraction_weights(scores, fraction)


@dataclass(frozen=True)
class Localization:
    """A localizer's scores and the region they select, with what is recorded next to results."""

    method: str
    params: dict[str, Any]
    scores: Scores
    region: Region | WeightRegion
    fraction: float

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "params": self.params,
            "fraction": self.fraction,
            "size": self.region.size,
            "per_layer_counts": self.region.per_layer_counts(),
        }


def localize(
    name: str, model: nn.Module, forget: Sequence[Encoded], retain: Sequence[Encoded], pad_token_id: int, fraction: float,
    **params: Any,
) -> Localization:
    """Score with localizer ``name`` and select the top ``fraction`` as a region."""
    scores = score(name, model, forget, retain, pad_token_id, **params)
    return Localization(name, dict(params), scores, to_region(scores, fraction), fraction)


# -- shared machinery ------------------------------------------------------------------------------
def device_batches(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, batch_size: int) -> Iterator[dict]:
    for batch in batches(items, batch_size, pad_token_id):
        yield {k: v.to(model_device(model)) for k, v in batch.items()}


def down_proj_weights(model: nn.Module) -> list[torch.Tensor]:
    return [arch.down_proj(model, l).weight for l in range(arch.n_layers(model))]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Attribution runs without dropout; the caller's train/eval mode comes back afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _down_proj_grads_only(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Eval mode with gradients on down-projection weights only (the rest need none); flags restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    weights = down_proj_weights(model)
    for p, _ in flags:
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    try:
        with eval_mode(model):
            yield weights
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def batch_grads(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, batch_size: int) -> Iterator[list[torch.Tensor]]:
    """Per batch, fp32 gradients of ``Σ_x NLL(x)`` (per-example mean over answer tokens) w.r.t.
    every layer's down-projection weight, in the weight's layout. Summing over batches and dividing
    by ``len(items)`` gives the gradient of the mean per-example NLL."""
    with _down_proj_grads_only(model) as weights:
        for batch in device_batches(model, items, pad_token_id, batch_size):
            loss = answer_nll(forward_logits(model, batch), batch["labels"]).sum()
            yield [g.float() for g in torch.autograd.grad(loss, weights)]


def mean_grads(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, batch_size: int = 8) -> list[torch.Tensor]:
    """Gradient of the mean per-example NLL, per layer, fp32, in the weight's layout."""
    if not items:
        raise ValueError("attribution needs at least one example (got an empty forget or retain set)")
    total = [torch.zeros_like(w, dtype=torch.float32) for w in down_proj_weights(model)]
    for grads in batch_grads(model, items, pad_token_id, batch_size):
        for acc, g in zip(total, grads):
            acc += g
    return [g / len(items) for g in total]


def as_vectors(model: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A down-projection-shaped tensor viewed as ``[d_ff, d_model]`` (row i belongs to vector i)."""
    return tensor.T if arch.vector_axis(model) == 1 else tensor
