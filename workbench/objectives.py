"""Unlearning (and learning) objectives, registered by name (SPEC §3).

Every objective is a small class registered with :func:`register`; notebooks and parameter files
name them as strings (``"npo"``, ``"wga"``…). An objective maps a model and a batch of its own
split to a scalar *loss to minimise*. Log-likelihoods are over answer tokens only (labels −100
elsewhere). The total loss adds an optional retain term, ``λ_retain · retain_loss(retain)``
(:func:`total_loss`); the retain term is the NLL except where an objective defines its own
(``l2_mlp``: the same L2 term on retain inputs, the paper's α); the paper uses λ_retain = 0 while
unlearning and 2 while injecting.

The forget objectives, each lowering the likelihood of the forget answers in its own way:

* ``ga``  — gradient ascent: minimise the mean answer-token log-likelihood.
* ``wga`` — weighted GA (Wang et al. 2025b): each token's log-likelihood weighted by its own
  probability to the power α, without gradient through the weight (already-forgotten tokens stop
  pulling).
* ``npo`` — negative preference optimisation (Zhang et al. 2024): a bounded GA that compares the
  sequence log-likelihood with the frozen reference ``π_ref``.
* ``dpo`` — DPO towards a refusal: prefer "I don't know" over the true answer, relative to ``π_ref``.
* ``rmu`` — representation misdirection (Li et al. 2024): push the residual stream after one
  layer towards a fixed random direction ``c·u``.
* ``l2_mlp`` — match every layer's MLP output to a retain-only model θr (paper §4, Figure 1).

Objectives that compare with a frozen reference ``π_ref`` (NPO, DPO) get it from an
:class:`ObjectiveContext`: with region-restricted training the reference is the same model with
its region delta disabled, so no second copy of the model is kept. Every loss is also a pure tensor
function (``ga_loss``, ``npo_loss``…) that the tests check by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from workbench import architectures as arch
from workbench.data.formatting import PreferencePair, encode
from workbench.data.schema import QA
from workbench.regions import Region, WeightRegion


@dataclass
class ObjectiveContext:
    """What an objective may need besides the model and the batch.

    Attributes:
        reference: a context-manager factory under which the model computes ``π_ref`` (e.g.
            ``RegionDelta.disabled``); ``None`` when the objective needs no reference.
        reference_model: a separate frozen model (θr for ``l2_mlp``), or ``None``.
        extra: objective-specific state.
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

    def retain_loss(self, model: nn.Module, batch: Mapping[str, torch.Tensor], ctx: ObjectiveContext) -> torch.Tensor:
        """The retain term that :func:`total_loss` weights by ``λ_retain``: NLL unless overridden."""
        return mean_nll(forward_logits(model, batch), batch["labels"])


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


def example_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-example mean over its answer tokens of −log p(y_t), ``[batch]`` (attribution pools these)."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum(-1) / mask.sum(-1).clamp_min(1)


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
    """``objective(forget) + λ_retain · objective.retain_loss(retain)`` (the NLL for most objectives);
    the retain term is skipped when λ_retain = 0."""
    loss = objective(model, forget_batch, ctx)
    if lambda_retain:
        if retain_batch is None:
            raise ValueError("lambda_retain > 0 needs a retain batch")
        loss = loss + lambda_retain * objective.retain_loss(model, retain_batch, ctx)
    return loss


# -- likelihood-based forget objectives -----------------------------------------------------------
def ga_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over all answer tokens of the batch of log p(y_t) (minimising it is gradient ascent)."""
    return -mean_nll(logits, labels)


def wga_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: float) -> torch.Tensor:
    """``mean_t[ sg(p(y_t))^α · log p(y_t) ]`` over all answer tokens of the batch.

    The weight is detached: the gradient is ``p^α · ∇log p``, not that of ``p^α·log p``.
    """
    logp, mask = token_logprobs(logits, labels)
    weight = logp.detach().mul(alpha).exp()
    return (weight * logp).sum() / mask.sum().clamp_min(1)


def npo_loss(logp: torch.Tensor, logp_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """``−(2/β)·mean log σ(−β·(log π_θ − log π_ref))`` from sequence log-likelihoods ``[batch]``."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - logp_ref)).mean()


def dpo_loss(win: torch.Tensor, win_ref: torch.Tensor, lose: torch.Tensor, lose_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """``−(2/β)·mean log σ(β·[Δ(y_win) − Δ(y_lose)])``, ``Δ = log π_θ − log π_ref``, all ``[batch]``."""
    return -(2.0 / beta) * F.logsigmoid(beta * ((win - win_ref) - (lose - lose_ref))).mean()


def _reference(ctx: ObjectiveContext, name: str) -> contextlib.AbstractContextManager:
    if ctx.reference is None:
        raise ValueError(
            f"objective {name!r} compares with a frozen reference π_ref: set ctx.reference "
            "(train_region sets it to RegionDelta.disabled)"
        )
    return ctx.reference()


def policy_and_reference_logprobs(model: nn.Module, batch: Mapping[str, torch.Tensor], ctx: ObjectiveContext, name: str):
    """Sequence log-likelihoods ``[batch]`` under θ (with grad) and under ``π_ref`` (no grad)."""
    logp = sequence_logprob(forward_logits(model, batch), batch["labels"])
    with torch.no_grad(), _reference(ctx, name):
        logp_ref = sequence_logprob(forward_logits(model, batch), batch["labels"])
    return logp, logp_ref


@register
@dataclass
class GA(Objective):
    """Gradient ascent: mean over answer tokens of log p_θ(y_t)."""

    name: ClassVar[str] = "ga"

    def __call__(self, model, batch, ctx):
        return ga_loss(forward_logits(model, batch), batch["labels"])


@register
@dataclass
class WGA(Objective):
    """Weighted gradient ascent, ``mean_t[sg(p_θ(y_t))^α · log p_θ(y_t)]`` (α = 0.1, SPEC §3)."""

    name: ClassVar[str] = "wga"
    alpha: float = 0.1

    def __call__(self, model, batch, ctx):
        return wga_loss(forward_logits(model, batch), batch["labels"], self.alpha)


@register
@dataclass
class NPO(Objective):
    """Negative preference optimisation against ``π_ref`` (β = 0.5); log π summed over answer tokens."""

    name: ClassVar[str] = "npo"
    needs_reference: ClassVar[bool] = True
    beta: float = 0.5

    def __call__(self, model, batch, ctx):
        return npo_loss(*policy_and_reference_logprobs(model, batch, ctx, self.name), self.beta)


@register
@dataclass
class DPO(Objective):
    """DPO preferring a refusal (win) over the true answer (lose) against ``π_ref`` (β = 0.5).

    Batches come from :func:`workbench.data.formatting.collate_pairs` (pass it as ``collate_fn``);
    build the items with :func:`dpo_pairs`.
    """

    name: ClassVar[str] = "dpo"
    needs_reference: ClassVar[bool] = True
    beta: float = 0.5

    def __call__(self, model, batch, ctx):
        if "preferred" not in batch:
            raise ValueError("dpo needs paired batches: build items with dpo_pairs and pass collate_fn=collate_pairs")
        logp, logp_ref = policy_and_reference_logprobs(model, batch, ctx, self.name)
        win, lose = batch["preferred"], ~batch["preferred"]
        return dpo_loss(logp[win], logp_ref[win], logp[lose], logp_ref[lose], self.beta)


def dpo_pairs(
    tokenizer, examples: Sequence[QA], refusals: Sequence[str], *, seed: int = 0, max_length: int = 512
) -> list[PreferencePair]:
    """One :class:`PreferencePair` per example: a refusal drawn uniformly (seeded) as the win, the
    true answer as the lose, both after the example's own prompt."""
    if not refusals:
        raise ValueError("dpo needs at least one refusal string (UnlearningData.refusals)")
    gen = torch.Generator().manual_seed(int(seed))
    picks = torch.randint(len(refusals), (len(examples),), generator=gen).tolist()
    return [
        PreferencePair(
            win=encode(tokenizer, ex.question, refusals[k], max_length=max_length),
            lose=encode(tokenizer, ex.question, ex.answer, max_length=max_length),
        )
        for ex, k in zip(examples, picks)
    ]


# -- representation-level objectives --------------------------------------------------------------
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
        raise ValueError(f"rmu layer {resolved} is outside the model's decoder layers 0..{n_layers - 1}")
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
    "answer": lambda batch: batch["labels"] != -100,
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
    """Representation misdirection: ``mean_x (1/|x|) Σ_t ‖h^(ℓ)(t) − c·u‖²`` (c = 2).

    ``layer`` is the 0-based decoder layer whose output is read (``None``: ⌊2L/3⌋ **[choice]**);
    only region vectors in layers ≤ ℓ get a gradient (:func:`rmu_reachable`). ``tokens="answer"``
    **[choice]** averages over the answer tokens' positions (labels ≠ −100, as open-unlearning's
    port); ``"all"`` over every non-pad token. ``u`` is :func:`control_vector` of ``seed``.
    """

    name: ClassVar[str] = "rmu"
    layer: int | None = None
    c: float = 2.0
    seed: int = 0
    tokens: str = "answer"

    def __post_init__(self) -> None:
        if self.tokens not in RMU_TOKENS:
            raise ValueError(f"unknown rmu tokens {self.tokens!r}; choose one of {sorted(RMU_TOKENS)}")

    def __call__(self, model, batch, ctx):
        layer = rmu_layer(arch.n_layers(model), self.layer)
        hidden = hidden_after_layer(model, batch, layer)
        target = self.c * control_vector(hidden.shape[-1], self.seed)
        return rmu_loss(hidden, RMU_TOKENS[self.tokens](batch), target)


@contextlib.contextmanager
def mlp_outputs(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect every layer's MLP output ``[batch, pos, d_model]`` during the forwards in the block."""
    outputs: list[torch.Tensor] = []
    handles = [
        arch.mlp_module(model, l).register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
        for l in range(arch.n_layers(model))
    ]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def l2_mlp_loss(outputs: Sequence[torch.Tensor], ref_outputs: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """``Σ_ℓ mean_t ‖M_ℓ(t) − M^ref_ℓ(t)‖²`` over the tokens where ``mask`` ``[batch, pos]`` is true."""
    mask = mask.bool()
    return sum((o.float() - r.float().to(o.device)).pow(2).sum(-1)[mask].mean() for o, r in zip(outputs, ref_outputs))


@register
@dataclass
class L2MLP(Objective):
    """Match every layer's MLP output to the frozen θr (``ctx.reference_model``): paper Figure 1.

    The mean runs over all non-pad tokens (prompt and answer) **[choice]**. The paper's α = 2, the
    same term on retain inputs, is this objective's :meth:`retain_loss`: train with
    ``retain=…, lambda_retain=2``.
    """

    name: ClassVar[str] = "l2_mlp"
    needs_reference_model: ClassVar[bool] = True

    def __call__(self, model, batch, ctx):
        if ctx.reference_model is None:
            raise ValueError("l2_mlp needs ctx.reference_model (the frozen retain model θr)")
        with torch.no_grad(), mlp_outputs(ctx.reference_model) as ref:
            forward_logits(ctx.reference_model, batch)
        with mlp_outputs(model) as out:
            forward_logits(model, batch)
        return l2_mlp_loss(out, ref, batch["attention_mask"])

    def retain_loss(self, model, batch, ctx):
        return self(model, batch, ctx)
