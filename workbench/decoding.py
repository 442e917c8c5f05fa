"""Greedy decoding without idle rows, with drafts only where they pay, in a cache of bounded width.

:mod:`workbench.generation` supplies the pieces (prompt caches, draft checks, proposals); this module
schedules them:

* **Continuous batching.** A :class:`Decoder` holds at most ``slots`` rows. When rows end (EOS or
  the length limit), the next prompts waiting in its queue take their places (their prompt caches
  merged into the running batch, each row with its own position ids and mask), so a decoding step
  never computes a row that already ended while prompts are waiting.
* **Drafts that pay.** Checking a draft costs one forward over it; guessing ``k`` tokens ahead of
  each step costs ``k`` more tokens per row and step. A :class:`~workbench.draft_policy.DraftPolicy`
  decides from what it measured: tokens settled per second by checks, tokens kept per row and step by
  each guess option, and a fitted cost per step (so options are compared at equal rows); a check is cut
  to twice what rows kept, and while checks do not pay only a probe of rows is checked now and then.
* **A cache written in place.** Each row decodes in a slot of one preallocated cache: a step writes its
  columns in place, a finished row's slot is refilled by copying only the attended columns of the next
  prompt's cache into it (not its padding or rejected draft), guesses no row kept are overwritten by the
  next step, and columns some rows rejected stay masked until the cache is full or twice as wide as any
  row's attended columns, when those are packed together (:class:`workbench.slots.Slots`). A step
  copies nothing but its new columns.

None of this changes the output: every token is the argmax after the tokens before it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import nn

from workbench.draft_policy import DraftPolicy
from workbench.generation import (
    Generation,
    Prefix,
    _cache_layers,
    _forward,
    accept,
    draft_groups,
    extend,
    propose,
    right_pad,
    select,
)
from workbench.slots import Ready, Slots

__all__ = ["Decoder", "DraftPolicy", "clock", "greedy_from_drafts"]


def clock(device: torch.device):
    """Process time on a CPU (what this process computed, robust on a shared machine), wall time on a GPU."""
    return time.perf_counter if device.type == "cuda" else time.process_time


class Decoder:
    """Greedy generation of many prompts through ``slots`` rows; see the module docstring.

    ``add`` queues prompts (a :class:`Prefix` and an id per row); ``run`` decodes until every queued
    prompt has a slot (so the caller can prepare the next ones) or, with ``finish=True``, until all
    have ended. ``tokens[id]``: the generation (ending with the EOS id where it stopped there).
    """

    probe = 2  # rows whose drafts are checked to see whether checks pay again

    def __init__(self, model: nn.Module, eos: Sequence[int], max_new_tokens: int, *, slots: int = 32, pad: int = 0,
                 policy: DraftPolicy | None = None):
        if max_new_tokens < 0 or slots < 1:
            raise ValueError(f"max_new_tokens must be >= 0 and slots >= 1, got {max_new_tokens} and {slots}")
        self.model, self.eos, self.max_new, self.slots, self.pad = model, list(eos), max_new_tokens, slots, pad
        self.policy = policy or DraftPolicy()
        self.tokens: dict[int, list[int]] = {}
        self.drafts: dict[int, list[int]] = {}
        self.queue: list[tuple[Prefix, list[int]]] = []
        self.state: Slots | None = None
        self.draft_tokens = self.accepted = self.steps = 0
        self.clock = clock(next(model.parameters()).device)

    def add(self, ids: Sequence[int], prefix: Prefix, drafts: Sequence[Sequence[int]] | None = None) -> None:
        for i, row in enumerate(ids):
            self.tokens[row] = []
            self.drafts[row] = list(drafts[i])[: self.max_new] if drafts is not None else []
        if self.max_new > 0 and len(ids):
            self.queue.append((prefix, list(ids)))

    @torch.inference_mode()
    def run(self, finish: bool = False) -> None:
        while True:
            self._admit()
            if (not finish and not self.queue) or self.state is None or not self.state.active():
                return
            if not self.queue and 2 * len(self.state.active()) <= len(self.state.rows):  # draining: fewer slots
                self.state = self.state.resized(len(self.state.active()), self.state.mask.shape[1])
            self._step()

    def result(self, ids: Sequence[int]) -> Generation:
        return Generation([self.tokens[i] for i in ids], self.draft_tokens, self.accepted, self.steps)

    # -- admission ---------------------------------------------------------------------------------
    def _admit(self) -> None:
        """Waiting prompts into free slots. Rows whose drafts pay to check wait until a few slots are free (a check
        is a forward of its own); without, each free slot is filled at once (a copy of its prompt cache)."""
        waiting = sum(len(ids) for _, ids in self.queue)
        active = len(self.state.active()) if self.state is not None else 0
        free = min(self.slots - active, waiting)
        drafted = self.policy.pays() and any(self.drafts[i] for _, ids in self.queue for i in ids)
        if not waiting or active and free < (min(max(1, self.slots // 8), waiting) if drafted else 1):
            return
        while free > 0 and self.queue:
            prefix, ids = self.queue.pop(0)
            n = min(free, len(ids))
            if n < len(ids):  # the rest waits with its own part of the prefix
                self.queue.insert(0, (select(prefix, torch.arange(n, len(ids), device=prefix.mask.device)), ids[n:]))
                prefix = select(prefix, torch.arange(n, device=prefix.mask.device))
            for ready in self._start(prefix, ids[:n]):
                self._place(ready, prefix.mask.shape[1])
            free -= n

    def _place(self, ready: Ready, prompt_width: int) -> None:
        if not ready.open:
            return
        width = ready.mask.shape[1]
        if self.state is None:  # room for the longest generation of the widest prompt, twice (packing is rare)
            waiting = len(ready.open) + sum(len(ids) for _, ids in self.queue)
            self.state = Slots(ready.layers, min(self.slots, waiting), 2 * (prompt_width + self.max_new))
        state = self.state
        if len(state.free()) < len(ready.open) or width > state.mask.shape[1]:
            state = state.resized(max(len(state.rows), min(self.slots, len(state.active()) + len(ready.open))),
                                  max(state.mask.shape[1], 2 * (prompt_width + self.max_new)))
        state.put(state.free()[: len(ready.open)], ready)
        self.state = state

    def _start(self, prefix: Prefix, ids: list[int]) -> list[Ready]:
        """Rows' first tokens: from their prompt's logits, or from a check of their drafts (when checks do not
        pay, now and then the drafts of ``probe`` rows, to see whether they pay again)."""
        check = any(self.drafts[i] for i in ids) and self.policy.check()
        probe = len(ids) if self.policy.pays() else self.probe
        length = self.policy.draft_length()
        drafts = [self.drafts[i][:length] if check and j < probe else [] for j, i in enumerate(ids)]
        ready = []
        for group in draft_groups([len(d) for d in drafts]):
            start = self.clock()
            rows = prefix if group == list(range(len(ids))) else select(prefix, torch.tensor(group, device=prefix.mask.device))
            checked = [drafts[j] for j in group]
            state, settled = self._check([ids[j] for j in group], rows, checked)
            if any(checked):
                self.policy.checks.add(settled, self.clock() - start)
                self.policy.kept.add(settled, sum(map(bool, checked)))
            ready.append(state)
        return ready

    def _check(self, ids: list[int], prefix: Prefix, drafts: list[list[int]]) -> tuple[Ready, int]:
        device = prefix.mask.device
        greedy = prefix.next_logits.argmax(-1, keepdim=True)
        layers = prefix.layers
        if any(drafts):
            tokens, fed = right_pad(drafts, self.pad, device)
            logits, cache, _ = extend(self.model, prefix, torch.arange(len(ids), device=device), tokens, fed)
            greedy = torch.cat([greedy, logits.argmax(-1)], dim=1)
            layers = _cache_layers(cache)
            self.draft_tokens += sum(len(d) for d in drafts)
        accepted, open_rows = [], []
        for j, (row, draft, row_greedy) in enumerate(zip(ids, drafts, greedy.tolist())):
            self.tokens[row], n_accepted, complete = accept(draft, row_greedy, self.eos, self.max_new)
            accepted.append(n_accepted)
            if not complete:
                open_rows.append(j)
        self.accepted += sum(accepted) if any(drafts) else 0
        n_accepted = torch.tensor(accepted, device=device)
        valid = torch.arange(greedy.shape[1] - 1, device=device) < n_accepted[:, None]  # rejected columns stay masked
        ready = Ready(list(ids), layers, torch.cat([prefix.mask, valid.long()], dim=1), prefix.lengths + n_accepted,
                       torch.tensor([self.tokens[r][-1] for r in ids], device=device), open_rows)
        return ready, sum(accepted)

    # -- one step ----------------------------------------------------------------------------------
    def _step(self) -> None:
        """Every slot's newest token plus ``k`` guessed ones (:func:`propose`) in one forward, written
        into the cache in place; the guesses are kept as far as they are the greedy output, as a draft is."""
        out, start, k = self.tokens, self.clock(), self.policy.guess()
        room = {r: self.max_new - len(out[r]) - 1 for r in self.state.rows if r is not None}  # one greedy token after
        guessed = {r: propose(self.drafts[r], out[r], min(k, m)) for r, m in room.items()}
        # Room first: a grown cache may put rows in other slots, so the step is laid out after it.
        state = self.state = self.state.reserve(1 + max(map(len, guessed.values()), default=0))
        rows = state.rows
        proposals = [guessed[r] if r is not None else [] for r in rows]
        tokens, fed = right_pad([[t] + p for t, p in zip(state.last.tolist(), proposals)], self.pad, state.mask.device)
        width = state.width
        positions = state.positions[:, None] + torch.arange(tokens.shape[1], device=tokens.device)
        logits = _forward(self.model, tokens, torch.cat([state.mask[:, :width], fed], dim=1), positions, state.cache(), keep=0)
        self.steps += 1
        kept, produced, ended = [0] * len(rows), 0, []
        free = [s for s, row in enumerate(rows) if row is None]
        for s, (row, proposal, greedy) in enumerate(zip(state.rows, proposals, logits.argmax(-1).tolist())):
            if row is None:
                continue
            new, kept[s], complete = accept(proposal, greedy, self.eos, self.max_new - len(out[row]))
            out[row].extend(new)
            produced += len(new)
            state.last[s] = out[row][-1]
            if complete:
                ended.append(s)
        n_kept = torch.tensor(kept, device=tokens.device)
        state.width = width + 1 + max(kept)  # guesses no row kept are overwritten by the next step
        kept_columns = torch.arange(state.width - width, device=tokens.device) <= n_kept[:, None]
        state.mask[:, width : state.width] = kept_columns.long()
        state.positions += 1 + n_kept
        for s in free + ended:
            state.release(s)
        self.policy.observe(k, len(rows) - len(free), len(rows), produced, tokens.numel(), self.clock() - start)


def greedy_from_drafts(
    model: nn.Module,
    prefix: Prefix,
    eos: Sequence[int],
    max_new_tokens: int,
    drafts: Sequence[Sequence[int]] | None = None,
    *,
    pad: int = 0,
    lookahead: int = 10,
    slots: int | None = None,
    policy: DraftPolicy | None = None,
) -> Generation:
    """Greedy generation (≤ ``max_new_tokens``, stopping at any ``eos`` id) after every prefix row.

    ``drafts[i]`` (any token list, e.g. the generation of a nearby model) may be checked by a forward
    and kept as far as it is the greedy output; decoding continues from there, guessing up to
    ``lookahead`` tokens per step (0: one token per step). ``slots``: rows decoded at once (default:
    all); ``policy``: see :class:`DraftPolicy` (default: adaptive).
    """
    n = len(prefix.lengths)
    decoder = Decoder(model, eos, max_new_tokens, slots=slots or max(n, 1), pad=pad,
                      policy=policy or DraftPolicy(lookahead=lookahead))
    decoder.add(range(n), prefix, drafts)
    decoder.run(finish=True)
    return decoder.result(range(n))
