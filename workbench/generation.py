"""Greedy decoding that reuses work: one pass over each prompt, and drafts verified in one forward.

An evaluation scores several answers to one question and generates one answer to it, and a mixing
sweep repeats that at 21 neighbouring models θ(α). Two facts let it skip most of that work (in fp32
without changing a result; in bf16, see *Exactness*):

* **A prompt is a shared prefix.** The keys and values that a causal LM computes for the prompt (its
  KV cache) do not depend on what follows. :func:`prefill` runs a batch of prefixes once, and
  :func:`extend` continues any token sequences from any of its rows: the answer, the paraphrase and
  the perturbed answers of a question, and the draft of its generation; :func:`continue_prefix`
  extends each row by its own tail (the rest of a generation prompt that shares only a prefix
  with the sequences scored).
* **A greedy generation can be checked in one forward.** A sequence is the greedy generation iff
  each of its tokens is the argmax after the tokens before it. One teacher-forced forward over
  prompt + draft gives all these argmaxes at once: the draft is the greedy output up to its first
  disagreement with them, the argmax there is the next greedy token, and KV-cached decoding goes on
  from that point (speculative decoding, Leviathan et al. 2023, with the generation at the
  neighbouring α as the draft). A draft accepted through its EOS needs no decoding at all.
  :mod:`workbench.decoding` schedules this for many prompts; without drafts it is plain greedy decoding.

Layout of a batch: prompts are left-padded (all end in the same column) and everything after them
is right-padded. Each row carries its own position ids and a 2-D mask over the cache columns, so
the columns of a rejected draft stay in the cache, masked, while decoding writes new ones after them
(until :mod:`workbench.decoding` packs the attended columns): no row is recomputed.

Exactness: the result is plain greedy decoding as long as a forward over a draft and one-token
decoding steps pick the same argmax. They do the same arithmetic with different matmul shapes (and,
after packing or a refill, the cache columns in another order), so
their logits may differ in the last bits, and only a near-tie between the two best tokens can then
flip a choice. In fp32 we measured none (every α equal to transformers' ``generate`` on tiny models
and SmolLM2). In bf16 the last bits are coarse and near ties common: 27% of SmolLM2's bf16
generations differed from plain greedy, and which ones depends on the drafts and the batch, so two
bf16 sweeps of one model can disagree. Sweeps meant to be compared are evaluated in fp32 (the
``eval_dtype`` parameter; the paper parameter files set it); ``benchmarks/sweep.py`` counts flips.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer: keys, values [batch, kv_heads, pos, head_dim]


@dataclass
class Prefix:
    """The KV cache of a left-padded batch of prompts and the logits after each prompt."""

    layers: Layers
    mask: torch.Tensor  # [batch, pos], 1 on prompt tokens
    lengths: torch.Tensor  # [batch] prompt lengths: the position id of the first token after the prompt
    next_logits: torch.Tensor  # [batch, vocab] prediction of the first token after the prompt


@dataclass
class Generation:
    """Greedy generations of a batch and what producing them took."""

    tokens: list[list[int]]  # per row; ends with the EOS id where the generation stopped there
    draft_tokens: int  # draft tokens offered
    accepted: int  # draft tokens accepted as greedy output
    decode_steps: int  # one-token forwards run (each over all rows still decoding)


# -- transformers API, stable across 4.45 – 5.x ---------------------------------------------------
@functools.cache
def _cache_argument(model_class: type) -> str:
    """transformers 5 renamed ``past_key_values`` to ``cache``."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _new_cache(layers: Layers):
    from transformers import DynamicCache

    cache = DynamicCache()
    for i, (keys, values) in enumerate(layers):
        cache.update(keys, values, i)
    return cache


def _cache_layers(cache) -> Layers:
    if hasattr(cache, "layers"):  # transformers ≥ 5
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache, keep: int) -> torch.Tensor:
    """Logits ``[batch, pos, vocab]`` of the last ``keep`` positions (0: all); ``cache`` grows in place."""
    kwargs = {_cache_argument(type(model)): cache}
    return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=keep, **kwargs).logits


# -- prefixes and continuations -------------------------------------------------------------------
PREFILL_SLACK = 1.1  # **[choice]**: a prefill group pads its prompts by at most 10%


@torch.inference_mode()
def prefill(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, slack: float = PREFILL_SLACK) -> Prefix:
    """Run left-padded prompts ``[batch, pos]`` once; their cache serves every continuation.

    Prompts of similar length run together (:func:`draft_groups`: each group's padding within
    ``slack`` × its tokens), so the forward computes few padding tokens; their caches are put back
    into one left-padded batch.
    """
    lengths = attention_mask.sum(-1)
    groups = draft_groups(lengths.tolist(), slack)
    if len(groups) == 1:
        return _prefill(model, input_ids, attention_mask)
    width = input_ids.shape[1]
    layers, next_logits = None, None
    for group in groups:
        rows = torch.tensor(group, device=input_ids.device)
        n = int(lengths[rows].max())
        part = _prefill(model, input_ids[rows, width - n :], attention_mask[rows, width - n :])
        if layers is None:
            layers = [tuple(t.new_zeros(len(lengths), t.shape[1], width, t.shape[3]) for t in kv) for kv in part.layers]
            next_logits = part.next_logits.new_zeros(len(lengths), part.next_logits.shape[1])
        for (keys, values), (k, v) in zip(layers, part.layers):
            keys[rows, :, width - n :], values[rows, :, width - n :] = k, v
        next_logits[rows] = part.next_logits
    return Prefix(layers, attention_mask, lengths, next_logits)


def _prefill(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Prefix:
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)  # as transformers' generate
    cache = _new_cache([])
    logits = _forward(model, input_ids, attention_mask, positions, cache, keep=1)
    return Prefix(_cache_layers(cache), attention_mask, attention_mask.sum(-1), logits[:, -1])


@torch.inference_mode()
def extend(model: nn.Module, prefix: Prefix, rows: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor):
    """Continue right-padded ``tokens`` ``[n, pos]`` (mask ``[n, pos]``) after prefix rows ``rows`` ``[n]``.

    Returns ``(logits [n, pos, vocab], cache, full_mask [n, prefix_pos + pos])``; ``logits[:, t]``
    predicts the token after ``tokens[:, t]``. The prefix itself is left untouched.
    """
    cache = _new_cache([(keys[rows], values[rows]) for keys, values in prefix.layers])
    full_mask = torch.cat([prefix.mask[rows], mask], dim=1)
    positions = prefix.lengths[rows, None] + torch.arange(tokens.shape[1], device=tokens.device)
    return _forward(model, tokens, full_mask, positions, cache, keep=0), cache, full_mask


@torch.inference_mode()
def continue_prefix(model: nn.Module, prefix: Prefix, tails: Sequence[Sequence[int]], pad: int = 0) -> Prefix:
    """The prefix with row ``i`` continued by ``tails[i]`` (any length, empty too), as one new prefix.

    Lets sequences that share only part of a prompt (a jointly tokenised prompt and answer, whose
    boundary token differs) share that part: each row's tail is fed after it, right-padded and
    masked, and the new ``next_logits`` are those after each row's own last token.
    """
    if not any(tails):
        return prefix
    device = prefix.mask.device
    tokens, mask = right_pad(tails, pad, device)
    logits, cache, full_mask = extend(model, prefix, torch.arange(len(tails), device=device), tokens, mask)
    n_tail = mask.sum(-1)
    last = logits[torch.arange(len(tails), device=device), (n_tail - 1).clamp_min(0)]
    next_logits = torch.where(n_tail[:, None] > 0, last, prefix.next_logits)
    return Prefix(_cache_layers(cache), full_mask, prefix.lengths + n_tail, next_logits)


def select(prefix: Prefix, rows: torch.Tensor) -> Prefix:
    """Prefix rows ``rows`` as a prefix of their own (a copy)."""
    return Prefix([(k[rows], v[rows]) for k, v in prefix.layers], prefix.mask[rows], prefix.lengths[rows],
                  prefix.next_logits[rows])


def right_pad(rows: Sequence[Sequence[int]], pad: int, device: torch.device, width: int | None = None):
    """``(tokens [n, width], mask [n, width])`` with each row's tokens first."""
    width = max((len(r) for r in rows), default=0) if width is None else width
    tokens = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return tokens.to(device), mask.to(device)


# -- greedy decoding with drafts ------------------------------------------------------------------
def accept(draft: Sequence[int], greedy: Sequence[int], eos: Sequence[int], max_new_tokens: int) -> tuple[list[int], int, bool]:
    """Greedy output known from one draft check: ``(tokens, n_accepted, complete)``.

    ``greedy[j]`` is the model's argmax after the prompt and ``draft[:j]``. The draft is kept up to its
    first disagreement; the argmax there follows it, unless an accepted EOS or the length limit
    already ended the generation (``complete``).
    """
    out: list[int] = []
    for token, best in zip(draft, greedy):
        if token != best:
            break
        out.append(token)
        if token in eos or len(out) == max_new_tokens:
            return out, len(out), True
    n_accepted = len(out)
    out.append(greedy[n_accepted])
    return out, n_accepted, out[-1] in eos or len(out) == max_new_tokens


def draft_groups(lengths: Sequence[int], slack: float = 1.5) -> list[list[int]]:
    """Rows in groups of similar draft length, longest first: a group's forward pads every draft to
    its longest one, so a group's padded length stays within ``slack`` × its drafts' total length."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        group = groups[-1] if groups else []
        total = sum(lengths[j] for j in group) + lengths[i]
        if group and (len(group) + 1) * lengths[group[0]] > slack * total:
            group = []
        if not group:
            groups.append(group)
        group.append(i)
    return groups


def propose(draft: Sequence[int], out: Sequence[int], k: int, n: int = 2) -> list[int]:
    """Up to ``k`` tokens likely to follow ``out`` (prompt-lookup speculation; they are checked anyway).

    What followed the last earlier occurrence of ``out``'s final ``n`` tokens, in the draft, else in
    ``out`` itself (degenerate generations repeat); failing both, the draft's tokens at the same
    positions (one token substituted, the rest unchanged).
    """
    if k <= 0:  # nothing to guess: no search (it runs for every row at every step)
        return []
    if len(out) >= n:
        tail = list(out[-n:])
        for source, end in ((draft, len(draft)), (out, len(out) - 1)):
            for i in range(end - n, -1, -1):
                if source[i] == tail[0] and list(source[i : i + n]) == tail:
                    return list(source[i + n : i + n + k])
    return list(draft[len(out) : len(out) + k])
