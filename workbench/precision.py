"""Training a bf16 model without losing its updates: fp32 master weights, and gradient checkpointing.

A bf16 number has 8 significant bits, so near a typical weight ``|w| ≈ 0.02`` the spacing of
representable values is 2⁻¹³ ≈ 1.2·10⁻⁴. AdamW moves each weight by about the learning rate per
step; at the paper's full fine-tuning rates (1e-5 for θr, 9.5e-6 for θ_full) that is less than half
the spacing, so an optimizer stepping the bf16 weights in place rounds almost every update away and
the model silently stays where it started.

:class:`FP32Masters` keeps the standard remedy (Micikevicius et al. 2018, "Mixed precision
training"): the model computes in bf16, while the optimizer owns an fp32 *master* copy of every
parameter. Each gradient is moved into its master's fp32 ``.grad`` the moment autograd finishes it
(a post-accumulate-grad hook, so at most one bf16 gradient exists at a time); the optimizer,
weight decay and clipping act on the masters; after each step the masters are rounded into the bf16
weights. Updates accumulate in fp32, so many sub-spacing steps add up to a visible change, exactly
as in fp32 training. Memory per parameter: bf16 weight 2 B + fp32 master 4 B + fp32 gradient 4 B +
two fp32 AdamW moments 8 B = 18 B (see :func:`workbench.models.estimate_memory`).

Restricted training needs none of this: a :class:`~workbench.delta.RegionDelta` is fp32 already.

:func:`checkpointing` turns on non-reentrant activation checkpointing of every decoder layer for
the duration of a training run: activations are recomputed in the backward pass instead of kept,
which trades about a third more compute for memory. It does not change the result.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn


class FP32Masters:
    """fp32 master copies of low-precision parameters; the optimizer trains :attr:`params`.

    Use :meth:`write_back` after every optimizer step and :meth:`remove` when training ends.
    fp32 parameters are trained directly (their master is the parameter itself).
    """

    def __init__(self, params: Sequence[torch.Tensor]):
        self.pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._handles = []
        for p in params:
            if p.dtype == torch.float32:
                self.pairs.append((p, p))
                continue
            master = p.detach().float().clone().requires_grad_(True)
            self.pairs.append((p, master))
            self._handles.append(p.register_post_accumulate_grad_hook(_move_grad_to(master)))

    @property
    def params(self) -> list[torch.Tensor]:
        return [master for _, master in self.pairs]

    @torch.no_grad()
    def write_back(self) -> None:
        """Round the masters into the model's weights (called after each optimizer step)."""
        for p, master in self.pairs:
            if master is not p:
                p.copy_(master)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _move_grad_to(master: torch.Tensor):
    def hook(p: torch.Tensor) -> None:
        grad = p.grad.float()
        master.grad = grad if master.grad is None else master.grad.add_(grad)
        p.grad = None  # the bf16 gradient is not needed any more: free it now

    return hook


def needs_masters(params: Sequence[torch.Tensor]) -> bool:
    """Whether any parameter is stored in less than fp32 (then updates need fp32 masters)."""
    return any(p.dtype != torch.float32 for p in params)


def enable_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing of every decoder layer (works with frozen inputs,
    and recomputes a region delta's hooks along with the layer)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _is_checkpointing(model: nn.Module) -> bool:
    # transformers 5 renamed gradient → activation checkpointing; 4.x has only the old names.
    name = "is_activation_checkpointing" if hasattr(model, "activation_checkpointing_enable") else "is_gradient_checkpointing"
    return bool(getattr(model, name, False))


def disable_checkpointing(model: nn.Module) -> None:
    if hasattr(model, "activation_checkpointing_disable"):
        model.activation_checkpointing_disable()
    else:
        model.gradient_checkpointing_disable()


@contextlib.contextmanager
def checkpointing(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Activation checkpointing on ``model`` inside the block when ``enabled`` (left as found after)."""
    if not enabled or _is_checkpointing(model):
        yield
        return
    enable_checkpointing(model)
    try:
        yield
    finally:
        disable_checkpointing(model)
