"""Greedy decoding that reuses work: one pass over each prompt, and drafts verified in one forward.

An evaluation scores several answers to one question and generates one answer to it, and a mixing
sweep repeats that at 21 neighbouring models θ(α). Two facts let it skip most of that work (in fp32
without changing a result; in bf16, see *Exactness*):

* **A prompt is a shared prefix.** The keys and values that a causal LM computes for the prompt (its
  KV cache) do not depend on what follows. :func:`prefill` runs a batch of prompts once, and
  :func:`extend` continues any token sequences from any of its rows: the answer, the paraphrase and
  the perturbed answers of a question, and the draft of its generation.
* **A greedy generation can be checked in one forward.** A sequence is the greedy generation iff
  each of its tokens is the argmax after the tokens before it. One teacher-forced forward over
  prompt + draft gives all these argmaxes at once: the draft is the greedy output up to its first
  disagreement with them, the argmax there is the next greedy token, and KV-cached decoding goes on
  from that point (speculative decoding, Leviathan et al. 2023, with the generation at the
  neighbouring α as the draft). A draft accepted through its EOS needs no decoding at all.
  :func:`greedy_from_drafts` does this for a batch; without drafts it is plain greedy decoding.

Layout of a batch: prompts are left-padded (all end in the same column) and everything after them
is right-padded. Each row carries its own position ids and a 2-D mask over the cache columns, so
the columns of a rejected draft stay in the cache, masked, while decoding appends new ones: no row
is recomputed, and rows that reached EOS leave the batch.

Exactness: the result is plain greedy decoding as long as a forward over a draft and one-token
decoding steps pick the same argmax. They do the same arithmetic with different matmul shapes, so
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
import torch.nn.functional as F
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
@torch.inference_mode()
def prefill(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Prefix:
    """Run left-padded prompts ``[batch, pos]`` once; their cache serves every continuation."""
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


@dataclass
class _Decoding:
    """Rows still being decoded: their cache, mask over its columns, next position id and last token."""

    rows: list[int]
    cache: object
    mask: torch.Tensor  # [n, cache columns]
    positions: torch.Tensor  # [n] position id of ``last``
    last: torch.Tensor  # [n] the newest token, not yet in the cache

    def keep(self, keep: list[int]) -> None:
        """Drop finished rows (``keep`` indexes the current rows)."""
        if len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
            self.cache.batch_select_indices(index)
            self.rows = [self.rows[i] for i in keep]
            self.mask, self.positions, self.last = self.mask[index], self.positions[index], self.last[index]


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


def _check_group(model: nn.Module, prefix: Prefix, rows: list[int], drafts: list[list[int]], out: list[list[int]],
                 eos: Sequence[int], max_new_tokens: int, pad: int) -> tuple[_Decoding, int]:
    """Check the drafts of prefix ``rows`` in one forward and write what they settle into ``out``.

    Returns the rows left to decode and the number of draft tokens accepted.
    """
    index = torch.tensor(rows, dtype=torch.long, device=prefix.mask.device)
    greedy = prefix.next_logits[index].argmax(-1, keepdim=True)
    if any(drafts[r] for r in rows):
        tokens, fed = right_pad([drafts[r] for r in rows], pad, index.device)
        logits, cache, _ = extend(model, prefix, index, tokens, fed)
        greedy = torch.cat([greedy, logits.argmax(-1)], dim=1)
    else:
        cache = _new_cache([(keys[index], values[index]) for keys, values in prefix.layers])
    accepted, open_rows = [], []
    for j, (row, row_greedy) in enumerate(zip(rows, greedy.tolist())):
        out[row], n_accepted, complete = accept(drafts[row], row_greedy, eos, max_new_tokens)
        accepted.append(n_accepted)
        if not complete:
            open_rows.append(j)
    n_accepted = torch.tensor(accepted, device=index.device)
    valid_draft = torch.arange(greedy.shape[1] - 1, device=index.device) < n_accepted[:, None]  # rejected columns stay masked
    state = _Decoding(list(rows), cache, torch.cat([prefix.mask[index], valid_draft.long()], dim=1),
                      prefix.lengths[index] + n_accepted, torch.tensor([out[r][-1] for r in rows], device=index.device))
    state.keep(open_rows)
    return state, sum(accepted)


def _merge(states: list[_Decoding]) -> _Decoding:
    """One batch from several: caches and masks padded on the right (masked) to the widest."""
    states = [s for s in states if s.rows] or states[:1]
    if len(states) == 1:
        return states[0]
    width = max(s.mask.shape[1] for s in states)
    layers = zip(*[_cache_layers(s.cache) for s in states])
    merged = [tuple(torch.cat([F.pad(t, (0, 0, 0, width - t.shape[-2])) for t in kv], dim=0) for kv in zip(*layer))
              for layer in layers]
    mask = torch.cat([F.pad(s.mask, (0, width - s.mask.shape[1])) for s in states], dim=0)
    return _Decoding([r for s in states for r in s.rows], _new_cache(merged), mask,
                     torch.cat([s.positions for s in states]), torch.cat([s.last for s in states]))


@torch.inference_mode()
def greedy_from_drafts(
    model: nn.Module,
    prefix: Prefix,
    eos: Sequence[int],
    max_new_tokens: int,
    drafts: Sequence[Sequence[int]] | None = None,
    *,
    pad: int = 0,
    lookahead: int = 10,
) -> Generation:
    """Greedy generation (≤ ``max_new_tokens``, stopping at any ``eos`` id) after every prefix row.

    ``drafts[i]`` (any token list, e.g. the generation of a nearby model) is checked by a forward
    (one per group of similar draft length) and kept as far as it is the greedy output; decoding
    continues from there, each step checking up to ``lookahead`` further tokens guessed from the
    draft (0: one token per step).
    """
    n = len(prefix.lengths)
    drafts = [list(d)[:max_new_tokens] for d in drafts] if drafts is not None else [[] for _ in range(n)]
    out: list[list[int]] = [[] for _ in range(n)]
    checked = [_check_group(model, prefix, rows, drafts, out, eos, max_new_tokens, pad)
               for rows in draft_groups([len(d) for d in drafts])]
    steps = _decode(model, _merge([state for state, _ in checked]), out, drafts, eos, max_new_tokens, lookahead, pad)
    return Generation(out, sum(len(d) for d in drafts), sum(a for _, a in checked), steps)


def propose(draft: Sequence[int], out: Sequence[int], k: int, n: int = 2) -> list[int]:
    """Up to ``k`` tokens likely to follow ``out`` (prompt-lookup speculation; they are checked anyway).

    What followed the last earlier occurrence of ``out``'s final ``n`` tokens, in the draft, else in
    ``out`` itself (degenerate generations repeat); failing both, the draft's tokens at the same
    positions (one token substituted, the rest unchanged).
    """
    if len(out) >= n:
        tail = list(out[-n:])
        for source, end in ((draft, len(draft)), (out, len(out) - 1)):
            for i in range(end - n, -1, -1):
                if list(source[i : i + n]) == tail:
                    return list(source[i + n : i + n + k])
    return list(draft[len(out) : len(out) + k])


def _decode(model: nn.Module, state: _Decoding, out: list[list[int]], drafts: list[list[int]], eos: Sequence[int],
            max_new_tokens: int, lookahead: int, pad: int) -> int:
    """KV-cached greedy steps until every row has reached EOS or the limit; appends to ``out``.

    Each step feeds every row its newest token plus up to ``lookahead`` proposed ones (:func:`propose`)
    and keeps the proposals as far as they are the greedy output, as a draft is kept.
    """
    steps = 0
    while state.rows:
        room = [max_new_tokens - len(out[r]) - 1 for r in state.rows]  # the step adds one greedy token after them
        proposals = [propose(drafts[r], out[r], min(lookahead, m)) for r, m in zip(state.rows, room)]
        tokens, fed = right_pad([[t] + p for t, p in zip(state.last.tolist(), proposals)], pad, state.mask.device)
        positions = state.positions[:, None] + torch.arange(tokens.shape[1], device=tokens.device)
        logits = _forward(model, tokens, torch.cat([state.mask, fed], dim=1), positions, state.cache, keep=0)
        steps += 1
        keep, kept = [], []
        for j, (row, proposal, greedy) in enumerate(zip(state.rows, proposals, logits.argmax(-1).tolist())):
            new, n_accepted, complete = accept(proposal, greedy, eos, max_new_tokens - len(out[row]))
            out[row].extend(new)
            kept.append(n_accepted)
            if not complete:
                keep.append(j)
        n_kept = torch.tensor(kept, device=tokens.device)
        state.mask = torch.cat([state.mask, (torch.arange(tokens.shape[1], device=tokens.device) <= n_kept[:, None]).long()], 1)
        state.positions = state.positions + 1 + n_kept
        state.last = torch.tensor([out[r][-1] for r in state.rows], device=tokens.device)
        state.keep(keep)
    return steps
