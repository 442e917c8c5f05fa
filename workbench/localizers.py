"""Localizers: which value vectors hold the forget knowledge? (SPEC §4, paper §3)

A localizer scores every MLP value vector ``v_{ℓ,i}`` (column ``i`` of layer ℓ's down-projection)
from the forget set (and, for some, the retain set); the top p% of the scores, ranked globally
across layers, becomes the region that unlearning may update. Lee et al. (2025) ask whether such
regions beat Random regions of the same size. The four localizers, each registered by name:

* ``random`` — uniform scores from a seeded generator (the baseline).
* ``activations`` (Chang et al. 2024) — how strongly the forget answers use a vector: the mean
  ``|a_{ℓ,i}(t)|`` of its memory coefficient over answer tokens, times ``‖v_{ℓ,i}‖``.
* ``memflex`` (Tian et al. 2024) — vectors whose gradient on the forget set (with random answers)
  is large and points away from the retain gradient.
* ``wagle`` (Jia et al. 2024) — a weight's first-order effect on the forget loss corrected by its
  interaction with the retain gradient; ``wagle_weights`` ranks single weights (paper Table 5).

Scorers take ``(model, forget, retain, pad_token_id, **params)`` with :class:`Encoded` items and
return a ``[layer, d_ff]`` tensor (or ``{layer: scores in down_proj.weight's layout}`` for
weight-level); :func:`localize` turns them into a region and records per-layer counts.
:func:`localization_accuracy` measures how well scores recover a known region (the controlled
setting knows ``V_tgt``). Attribution gradients are accumulated in fp32 on down-projections only.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench import architectures as arch
from workbench.data.formatting import Encoded, batches
from workbench.objectives import example_nll, forward_logits
from workbench.regions import Region, WeightRegion, top_fraction, top_fraction_weights

Scores = torch.Tensor | dict[int, torch.Tensor]
Localizer = Callable[..., Scores]
LOCALIZERS: dict[str, Localizer] = {}


def register(name: str) -> Callable[[Localizer], Localizer]:
    """Decorator: make a scorer available by ``name``."""

    def deco(fn: Localizer) -> Localizer:
        LOCALIZERS[name] = fn
        return fn

    return deco


def score(name: str, model: nn.Module, forget: Sequence[Encoded], retain: Sequence[Encoded], pad_token_id: int, **params: Any) -> Scores:
    """Run the registered scorer ``name``; unknown names and parameters get a clear error."""
    try:
        fn = LOCALIZERS[name]
    except KeyError:
        raise ValueError(f"unknown localizer {name!r}; choose one of {sorted(LOCALIZERS)}") from None
    try:
        inspect.signature(fn).bind(model, forget, retain, pad_token_id, **params)
    except TypeError as err:
        raise ValueError(f"bad parameters for localizer {name!r}: {err}") from None
    return fn(model, forget, retain, pad_token_id, **params)


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
    name: str, model: nn.Module, forget: Sequence[Encoded], retain: Sequence[Encoded], pad_token_id: int, fraction: float, **params: Any
) -> Localization:
    """Score with localizer ``name`` and select the top ``fraction`` as a region."""
    scores = score(name, model, forget, retain, pad_token_id, **params)
    return Localization(name, dict(params), scores, to_region(scores, fraction), fraction)


# -- shared machinery ------------------------------------------------------------------------------
def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, batch_size: int) -> Iterator[dict]:
    for batch in batches(items, batch_size, pad_token_id):
        yield {k: v.to(_device(model)) for k, v in batch.items()}


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [arch.down_proj(model, l).weight for l in range(arch.n_layers(model))]


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
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
    weights = _weights(model)
    for p, _ in flags:
        p.requires_grad_(False)
    for w in weights:
        w.requires_grad_(True)
    try:
        with _eval_mode(model):
            yield weights
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def batch_grads(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, batch_size: int) -> Iterator[list[torch.Tensor]]:
    """Per batch, fp32 gradients of ``Σ_x NLL(x)`` (per-example mean over answer tokens) w.r.t.
    every layer's down-projection weight, in the weight's layout. Summing over batches and dividing
    by ``len(items)`` gives the gradient of the mean per-example NLL."""
    with _down_proj_grads_only(model) as weights:
        for batch in _batches(model, items, pad_token_id, batch_size):
            loss = example_nll(forward_logits(model, batch), batch["labels"]).sum()
            yield [g.float() for g in torch.autograd.grad(loss, weights)]


def mean_grads(model: nn.Module, items: Sequence[Encoded], pad_token_id: int, batch_size: int = 8) -> list[torch.Tensor]:
    """Gradient of the mean per-example NLL, per layer, fp32, in the weight's layout."""
    if not items:
        raise ValueError("attribution needs at least one example (got an empty forget or retain set)")
    total = [torch.zeros_like(w, dtype=torch.float32) for w in _weights(model)]
    for grads in batch_grads(model, items, pad_token_id, batch_size):
        for acc, g in zip(total, grads):
            acc += g
    return [g / len(items) for g in total]


def as_vectors(model: nn.Module, tensor: torch.Tensor) -> torch.Tensor:
    """A down-projection-shaped tensor viewed as ``[d_ff, d_model]`` (row i belongs to vector i)."""
    return tensor.T if arch.vector_axis(model) == 1 else tensor


# -- random ---------------------------------------------------------------------------------------
@register("random")
def random_scores(model: nn.Module, forget: Sequence[Encoded], retain: Sequence[Encoded], pad_token_id: int, *, seed: int = 0) -> torch.Tensor:
    """Uniform scores from a seeded generator; the data are ignored."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand(arch.n_layers(model), arch.d_ff(model), generator=gen)


# -- activations ----------------------------------------------------------------------------------
REDUCTIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    # a: [batch, pos, d_ff], mask: [batch, pos, 1] → per example [batch, d_ff]
    "mean_abs": lambda a, m: (a.abs() * m).sum(1) / m.sum(1).clamp_min(1),
    "abs_mean": lambda a, m: ((a * m).sum(1) / m.sum(1).clamp_min(1)).abs(),  # Chang et al.'s code
}

NORMALISERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "zscore": lambda s: (s - s.mean(1, keepdim=True)) / s.std(1, correction=0, keepdim=True).clamp_min(1e-12),
    "none": lambda s: s,
}


def predicting_answer(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is an answer token (Chang et al.'s suffix positions), ``[batch, pos]``."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != -100
    return mask


@contextlib.contextmanager
def pooled_coefficients(model: nn.Module, mask: torch.Tensor, reduce: str) -> Iterator[list[torch.Tensor]]:
    """Collect, per layer, each example's pooled memory coefficients ``[batch, d_ff]`` over the
    positions in ``mask`` ``[batch, pos]``. The coefficients are the down-projection's *input*, read
    by a forward pre-hook (for SwiGLU ``act(gate)·up``, which ``act_fn`` alone lacks); pooling in
    the hook keeps memory at ``[batch, d_ff]`` per layer instead of ``[batch, pos, d_ff]``."""
    pooled: list[torch.Tensor] = []
    reduce_fn, weights = REDUCTIONS[reduce], mask.unsqueeze(-1).float()
    handles = [
        arch.down_proj(model, l).register_forward_pre_hook(lambda m, args: pooled.append(reduce_fn(args[0].detach().float(), weights)))
        for l in range(arch.n_layers(model))
    ]
    try:
        yield pooled
    finally:
        for h in handles:
            h.remove()


@register("activations")
@torch.no_grad()
def activation_scores(
    model: nn.Module,
    forget: Sequence[Encoded],
    retain: Sequence[Encoded],
    pad_token_id: int,
    *,
    reduce: str = "mean_abs",
    normalize: str = "zscore",
    batch_size: int = 8,
) -> torch.Tensor:
    """``mean_x (1/T)Σ_t |a_{ℓ,i}(t)| · ‖v_{ℓ,i}‖`` over the positions that predict answer tokens
    **[choice: Chang et al.'s positions; per-example means averaged over examples]**, then z-scored
    within each layer **[choice]** so that layers rank together. ``reduce="abs_mean"`` takes
    ``|mean_t a|`` as Chang et al.'s code does; ``normalize="none"`` skips the z-score."""
    if reduce not in REDUCTIONS or normalize not in NORMALISERS:
        raise ValueError(f"activations: reduce must be one of {sorted(REDUCTIONS)}, normalize one of {sorted(NORMALISERS)}")
    if not forget:
        raise ValueError("activations needs at least one forget example")
    total = torch.zeros(arch.n_layers(model), arch.d_ff(model))
    with _eval_mode(model):
        for batch in _batches(model, forget, pad_token_id, batch_size):
            with pooled_coefficients(model, predicting_answer(batch["labels"]), reduce) as pooled:
                forward_logits(model, batch)
            total += torch.stack([p.sum(0).cpu() for p in pooled])
    norms = torch.stack([arch.value_vectors(model, l).detach().float().norm(dim=1).cpu() for l in range(arch.n_layers(model))])
    return NORMALISERS[normalize](total / len(forget) * norms)


# -- MemFlex --------------------------------------------------------------------------------------
def randomize_answer(item: Encoded, vocab_size: int, pad_token_id: int, gen: torch.Generator) -> Encoded:
    """Replace every answer token by a uniform random id (never the pad id); the labels follow the
    inputs, so the model both sees and predicts the random answer (as KnowUnDo does)."""
    n = len(item.input_ids) - item.prompt_len
    draw = torch.randint(vocab_size - 1, (n,), generator=gen)
    draw = draw + (draw >= pad_token_id).long()
    return Encoded(item.prompt_ids + tuple(draw.tolist()), item.prompt_len)


def randomized_grads(
    model: nn.Module, items: Sequence[Encoded], pad_token_id: int, repeats: int, gen: torch.Generator, batch_size: int
) -> torch.Tensor:
    """Mean gradient over ``repeats`` random-answer copies of every item, ``[layer, d_ff, d_model]``."""
    vocab = model.get_input_embeddings().num_embeddings
    copies = [randomize_answer(it, vocab, pad_token_id, gen) for it in items for _ in range(repeats)]
    return torch.stack([as_vectors(model, g) for g in mean_grads(model, copies, pad_token_id, batch_size)])


def memflex_rank_score(norm: torch.Tensor, cos: torch.Tensor, mu: float) -> torch.Tensor:
    """Scores whose top-k is MemFlex's rule at any budget: vectors with ``cos < μ`` first (scores in
    [1, 1.5]), ranked by ``‖g_unl‖``; if too few pass, the rest follow by ``‖g_unl‖`` (scores in
    [0, 0.5]). σ is then the norm of the last selected vector, so exactly p% are selected."""
    scaled = norm / (2 * norm.max().clamp_min(1e-30))
    return (cos < mu).float() + scaled


@register("memflex")
def memflex_scores(
    model: nn.Module,
    forget: Sequence[Encoded],
    retain: Sequence[Encoded],
    pad_token_id: int,
    *,
    mu: float = 0.95,
    repeats: int = 3,
    seed: int = 0,
    batch_size: int = 8,
) -> torch.Tensor:
    """MemFlex per value vector: ``g_unl``/``g_ret`` = mean NLL gradients over ``repeats`` copies of
    each forget/retain example with its answer replaced by random tokens (seeded); selected iff
    ``cos(g_unl, g_ret) < μ`` and ``‖g_unl‖ > σ``, σ set by the budget **[choice: rank by ‖g_unl‖
    among vectors with cos < μ, then fill by norm; see :func:`memflex_rank_score`]**. Every answer
    token (the closing EOS included) is replaced **[choice, as SPEC words it; KnowUnDo overwrites
    about half]**, and both splits are corrupted so their common "random answer" direction cancels
    in the cosine. ``‖·‖`` is the L2 norm of the vector's gradient (KnowUnDo: mean |g| of a tensor)."""
    if not retain:
        raise ValueError("memflex needs retain examples (the cosine is taken against the retain gradient)")
    gen = torch.Generator().manual_seed(int(seed))
    g_unl = randomized_grads(model, forget, pad_token_id, repeats, gen, batch_size)
    g_ret = randomized_grads(model, retain, pad_token_id, repeats, gen, batch_size)
    cos = F.cosine_similarity(g_unl, g_ret, dim=-1)
    return memflex_rank_score(g_unl.norm(dim=-1), cos, mu)


# -- WAGLE ----------------------------------------------------------------------------------------
def retain_grad_and_fisher(model: nn.Module, retain: Sequence[Encoded], pad_token_id: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mean retain gradient and empirical Fisher diagonal (mean of squared per-example gradients)."""
    g = [torch.zeros_like(w, dtype=torch.float32) for w in _weights(model)]
    fisher = [torch.zeros_like(w, dtype=torch.float32) for w in _weights(model)]
    for grads in batch_grads(model, retain, pad_token_id, batch_size=1):
        for acc, sq, gx in zip(g, fisher, grads):
            acc += gx
            sq += gx * gx
    return [x / len(retain) for x in g], [x / len(retain) for x in fisher]


def wagle_formula(theta: torch.Tensor, g_f: torch.Tensor, g_r: torch.Tensor, gamma: float) -> torch.Tensor:
    """WAGLE's per-weight attribution ``θ·g_f − (1/γ)·g_r·g_f`` (pure, elementwise)."""
    return theta.float() * g_f - g_r * g_f / gamma


def _wagle_entries(model, forget, retain, pad_token_id, gamma, batch_size) -> list[torch.Tensor]:
    if not retain:
        raise ValueError("wagle needs retain examples (g_r and the Hessian estimate come from them)")
    g_f = mean_grads(model, forget, pad_token_id, batch_size)
    g_r, fisher = retain_grad_and_fisher(model, retain, pad_token_id)
    if gamma is None:
        gamma = float(torch.cat([f.flatten() for f in fisher]).mean())
    return [wagle_formula(w.detach(), gf, gr, gamma) for w, gf, gr in zip(_weights(model), g_f, g_r)]


@register("wagle_weights")
def wagle_weight_scores(
    model: nn.Module,
    forget: Sequence[Encoded],
    retain: Sequence[Encoded],
    pad_token_id: int,
    *,
    gamma: float | None = None,
    absolute: bool = True,
    batch_size: int = 8,
) -> dict[int, torch.Tensor]:
    """Per down-projection weight: ``|θ_j·g_f,j − (1/γ)·g_r,j·g_f,j|`` in the weight's layout.

    ``g_f``/``g_r`` are gradients of the mean per-example NLL on forget/retain. ``γ=None`` uses the
    mean diagonal Hessian of the retain loss, estimated by the mean squared per-example retain
    gradient over all down-projection entries **[choice: empirical Fisher]**; WAGLE's configs use a
    constant (1e-6). ``absolute=True`` ranks by magnitude as WAGLE's ``snip_advanced`` does **[choice]**.
    """
    entries = _wagle_entries(model, forget, retain, pad_token_id, gamma, batch_size)
    return {l: (s.abs() if absolute else s) for l, s in enumerate(entries)}


def vector_level(per_weight: Localizer) -> Localizer:
    """Turn a per-weight scorer into a per-vector one: the mean of a vector's entry scores
    ``[layer, d_ff]`` (same parameters)."""

    @functools.wraps(per_weight)
    def per_vector(model, forget, retain, pad_token_id, **params) -> torch.Tensor:
        scores = per_weight(model, forget, retain, pad_token_id, **params)
        return torch.stack([as_vectors(model, s).mean(dim=1) for s in scores.values()]).cpu()

    per_vector.__doc__ = f"Vector-level {per_weight.__name__}: mean over each value vector's entries."
    return per_vector


# vector score = mean over its entries; with ``absolute`` the entries cannot cancel
wagle_scores = register("wagle")(vector_level(wagle_weight_scores))


# -- how well do scores recover a known region? -----------------------------------------------------
def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (Mann–Whitney U from ranks,
    ties given their average rank): the chance a member outscores a non-member, ties counting ½."""
    scores, labels = scores.detach().double().flatten(), labels.bool().flatten()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if not n_pos or not n_neg:
        raise ValueError("AUROC needs both members and non-members")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of ``values`` (ascending), tied values sharing the mean of their ranks."""
    uniq, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    first = torch.cumsum(counts, 0) - counts + 1
    return (first + (counts - 1) / 2).double()[inverse]


def _flat(scores: Scores, target: Region | WeightRegion) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(scores, torch.Tensor):
        return scores.detach().float().flatten().cpu(), target.mask().flatten()
    layers = sorted(scores)
    return (
        torch.cat([scores[l].detach().float().flatten().cpu() for l in layers]),
        torch.cat([target.masks[l].flatten() for l in layers]),
    )


def localization_accuracy(scores: Scores, target: Region | WeightRegion, k: int | None = None) -> dict[str, float]:
    """How well ``scores`` recover ``target`` (e.g. ``V_tgt`` of the controlled setting).

    Returns precision and recall of the top-``k`` scores (``k`` defaults to ``|target|``, where the
    two coincide), their hit count, the AUROC of the scores against membership, and the base rate
    (what random scores achieve as precision).
    """
    flat, member = _flat(scores, target)
    k = int(member.sum()) if k is None else int(k)
    top = torch.sort(-flat, stable=True).indices[:k]
    hits = int(member[top].sum())
    return {
        "k": k,
        "hits": hits,
        "precision": hits / k if k else 0.0,
        "recall": hits / max(int(member.sum()), 1),
        "auroc": auroc(flat, member),
        "base_rate": float(member.float().mean()),
    }
