"""Batched scoring and generation: the forward passes behind every evaluation number.

* :func:`score_sequences` — mean answer NLL and one-pass ES of whole sequences, one forward per
  length bucket (:func:`sequence_batches`; the reference path, sequences without a shared prompt,
  and a session's quick ES checks);
* :func:`score_continuations` — the same for sequences continuing a prefix computed once (a KV-cached
  :class:`~workbench.generation.Prefix`, planned by :func:`common_prefixes` and
  :func:`plan_continuations`): the prefix's last logits predict the first token after it;
* :func:`greedy_generate` — plain batched greedy decoding, left-padded, stopping at EOS per row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workbench import metrics as m
from workbench.data.formatting import Encoded, collate
from workbench.generation import Prefix, extend, right_pad
from workbench.likelihood import model_device, nll_sum


@dataclass(frozen=True)
class Continuations:
    """Sequences that continue prompts of one prompt batch: their answer tokens, right-padded."""

    seqs: np.ndarray  # [n] indices into Evaluator.sequences
    rows: torch.Tensor  # [n] row of each sequence's prompt in its prompt batch
    tokens: torch.Tensor  # [n, pos] tokens after the prefix but the last (the last predicts nothing)
    mask: torch.Tensor  # [n, pos]
    targets: torch.Tensor  # [n, pos + 1] tokens after the prefix, −100 on prompt tokens and padding


def common_prefixes(prompts: Sequence[Sequence[int]], sequences: Sequence[Encoded], prompt_of: Sequence[int],
                    *, within_prompt: bool = False) -> list[int]:
    """Per generation prompt, how many leading tokens it shares with every sequence scored after it.

    The longest common token prefix of the prompt and its sequences, no longer than any sequence's
    prompt part (the prefix's last logits predict the first scored token; logits inside it are not
    kept). Whatever the tokenisation: a jointly tokenised prompt and answer share all but the tokens
    their boundary merged. ``within_prompt``: only the whole prompt counts (0 where a sequence does
    not start with it).
    """
    shared = [len(p) for p in prompts]
    for seq, p in zip(sequences, prompt_of):
        prompt, ids = prompts[p], seq.input_ids
        if within_prompt:
            shared[p] = shared[p] if tuple(ids[: len(prompt)]) == tuple(prompt) and seq.prompt_len >= len(prompt) else 0
            continue
        n = min(shared[p], seq.prompt_len)
        while n and tuple(ids[:n]) != tuple(prompt[:n]):
            n -= 1
        shared[p] = n
    return shared


def plan_continuations(sequences: Sequence[Encoded], prompt_of: Sequence[int], prefix_len: Sequence[int],
                       prompt_rows: np.ndarray, batch_size: int, pad: int) -> list[Continuations]:
    """Batches of the sequences whose prompts are ``prompt_rows`` (one prefix batch), each continuing
    its prompt's row after ``prefix_len[prompt]`` tokens.

    Each sequence's tokens after its prefix are fed (but the last); targets are −100 on what is left of
    its prompt part, so only the answer is scored. Longest first, ``batch_size`` per batch.
    """
    row_of = {int(p): i for i, p in enumerate(prompt_rows)}
    members = [(s, row_of[p], prefix_len[p]) for s, p in enumerate(prompt_of) if p in row_of]
    tails = {s: list(sequences[s].input_ids[n:]) for s, _, n in members}
    members = sorted(members, key=lambda member: -len(tails[member[0]]))
    out = []
    for chunk in (members[i : i + batch_size] for i in range(0, len(members), batch_size)):
        rows = [tails[s] for s, _, _ in chunk]
        width = max(1, max(len(r) for r in rows) - 1)
        tokens, mask = right_pad([r[:-1] for r in rows], pad, torch.device("cpu"), width)
        targets = torch.full((len(rows), width + 1), m.IGNORE, dtype=torch.long)
        for i, (s, _, n) in enumerate(chunk):
            skip = sequences[s].prompt_len - n
            targets[i, skip : len(rows[i])] = torch.tensor(rows[i][skip:])
        out.append(Continuations(np.array([s for s, _, _ in chunk]), torch.tensor([r for _, r, _ in chunk]), tokens, mask,
                                 targets))
    return out


def _bucketed(items: list[Encoded], batch_size: int, length, pad: int, collate_fn) -> list[tuple[np.ndarray, dict]]:
    """Length-sorted batches (longest first: an out-of-memory error shows up at once)."""
    order = sorted(range(len(items)), key=lambda i: -length(items[i]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [(np.array(c), collate_fn([items[i] for i in c], pad)) for c in chunks]


def sequence_batches(items: list[Encoded], batch_size: int, pad: int) -> list[tuple[np.ndarray, dict]]:
    """Whole sequences as :func:`score_sequences` takes them: right-padded, longest first."""
    return _bucketed(items, batch_size, lambda e: len(e.input_ids), pad, collate)


def score_continuations(model: nn.Module, prefix: Prefix, chunk: Continuations, *,
                        es_floor: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Mean answer NLL and ES of answers continued from their prompts' cache, ``([n], [n])``.

    The prompt's last logits predict each answer's first token; the answer's own positions the rest.
    """
    device = prefix.mask.device
    rows = chunk.rows.to(device)
    logits, _, _ = extend(model, prefix, rows, chunk.tokens.to(device), chunk.mask.to(device))
    targets = chunk.targets.to(device)  # [n, pos + 1]: the prompt's last logits predict the first
    first = prefix.next_logits[rows, None]
    pred = torch.cat([first.argmax(-1), logits.argmax(-1)], dim=1)
    es = m.extraction_strength_from_predictions(pred, targets, floor=es_floor)
    nll = (nll_sum(first, targets[:, :1]) + nll_sum(logits, targets[:, 1:])) / (targets != m.IGNORE).sum(-1)
    return nll.cpu().numpy(), es.cpu().numpy()


@torch.inference_mode()
def score_sequences(
    model: nn.Module, batches: list[tuple[np.ndarray, dict]], n: int, *, es_floor: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean answer NLL and ES of every sequence, ``([n], [n])``, one forward per batch.

    The LM head runs from the first answer position of the batch on: prompt logits are never used.
    """
    device = model_device(model)
    nll, es = np.full(n, math.nan), np.full(n, math.nan)
    for rows, batch in batches:
        labels = batch["labels"]
        start = int((labels != m.IGNORE).int().argmax(-1).min()) - 1  # predicts the first answer token
        width = labels.shape[1]
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            logits_to_keep=width - start,
            use_cache=False,
        ).logits
        window = labels[:, start:].to(device)
        nll[rows] = m.answer_nll(logits, window).cpu().numpy()
        es[rows] = m.extraction_strength(logits, window, floor=es_floor).cpu().numpy()
    return nll, es


def truth_ratio_terms(refs: Sequence, nll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example truth ratio and option-normalised probability (NaN without perturbed answers), from
    each sequence's mean NLL; ``refs[i]`` names example ``i``'s ``answer``, ``para`` and ``pert`` sequences."""
    tr, norm = np.full(len(refs), math.nan), np.full(len(refs), math.nan)
    counts = np.array([len(r.pert) for r in refs])
    for c in set(counts.tolist()) - {0}:  # one vectorised call per number of perturbed answers
        rows = np.flatnonzero(counts == c)
        pert = torch.from_numpy(nll[[list(refs[i].pert) for i in rows]])
        para = torch.from_numpy(nll[[refs[i].para for i in rows]])
        answer = torch.from_numpy(nll[[refs[i].answer for i in rows]])
        tr[rows] = m.truth_ratio(para, pert).numpy()
        norm[rows] = m.normalised_probability(answer, pert).numpy()
    return tr, norm


def eos_ids(model: nn.Module, tokenizer) -> list[int]:
    """The tokenizer's EOS plus the model's generation EOS ids (chat models stop on end-of-turn)."""
    ids = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    return sorted(i for i in ids if i is not None)


@torch.inference_mode()
def greedy_generate(
    model: nn.Module, batches: list[tuple[np.ndarray, dict]], n: int, eos: list[int], pad: int, max_new_tokens: int
) -> list[list[int]]:
    """Greedy continuation of every prompt (left-padded batches, KV cache, per-row stop at EOS)."""
    from transformers import GenerationConfig

    gen_cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad)
    device = model_device(model)
    out: list[list[int]] = [[] for _ in range(n)]
    for rows, batch in batches:
        ids = batch["input_ids"].to(device)
        new = model.generate(input_ids=ids, attention_mask=batch["attention_mask"].to(device), generation_config=gen_cfg)
        new = new[:, ids.shape[1] :]
        is_eos = torch.isin(new, torch.tensor(eos, device=device))
        stops = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), new.shape[1]).tolist()
        for row, tokens, stop in zip(rows, new.tolist(), stops):
            out[row] = tokens[:stop]
    return out


