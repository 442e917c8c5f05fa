"""``dpo`` — DPO towards a refusal (Rafailov et al. 2023; as an unlearning objective in TOFU), Table 2.

Each forget question gets a pair: a refusal ("I don't know" variant, drawn per example from a
seeded generator **[choice]**) as the preferred answer and the true answer as the rejected one; the
loss prefers the refusal relative to the frozen reference π_ref. SPEC §3:
``−(2/β)·mean log σ(β·[Δ(y_win) − Δ(y_lose)])``, ``Δ(y) = log π_θ(y|x) − log π_ref(y|x)``, β = 0.5.
Both answers of a pair are scored in one forward (:func:`collate_pairs`); under data parallelism
both rows of a pair go to the same process (:meth:`DPO.rank_rows`), so two processes reproduce one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from workbench.data.formatting import PreferencePair, collate_pairs, encode
from workbench.data.schema import QA
from workbench.objectives.base import Objective, register
from workbench.objectives.npo import policy_and_reference_logprobs


def dpo_loss(win: torch.Tensor, win_ref: torch.Tensor, lose: torch.Tensor, lose_ref: torch.Tensor, beta: float) -> torch.Tensor:
    """``−(2/β)·mean log σ(β·[Δ(y_win) − Δ(y_lose)])``, ``Δ = log π_θ − log π_ref``, all ``[batch]``."""
    return -(2.0 / beta) * F.logsigmoid(beta * ((win - win_ref) - (lose - lose_ref))).mean()


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


@register
@dataclass
class DPO(Objective):
    """DPO preferring a refusal (win) over the true answer (lose) against ``π_ref``."""

    name: ClassVar[str] = "dpo"
    default_lr: ClassVar[float] = 3e-3
    paper: ClassVar[tuple[str, ...]] = ("table2",)
    needs_reference: ClassVar[bool] = True
    collate: ClassVar = staticmethod(collate_pairs)
    beta: float = field(default=0.5, metadata={"help": "DPO inverse temperature β (SPEC: 0.5)"})

    def __call__(self, model, batch, ctx):
        if "preferred" not in batch:
            raise ValueError("dpo needs paired batches: build items with dpo_pairs and pass collate_fn=collate_pairs")
        logp, logp_ref = policy_and_reference_logprobs(model, batch, ctx, self.name)
        win, lose = batch["preferred"], ~batch["preferred"]
        return dpo_loss(logp[win], logp_ref[win], logp[lose], logp_ref[lose], self.beta)

    @staticmethod
    def rank_rows(n_rows: int, rank: int, world: int) -> torch.Tensor:
        """Pairs stay on one process: rows are ``[wins…, loses…]`` (:func:`collate_pairs`), so a rank
        takes its contiguous share of the pairs and both rows of each."""
        pairs = torch.tensor_split(torch.arange(n_rows // 2), world)[rank]
        return torch.cat([pairs, pairs + n_rows // 2])

    def train_items(self, tokenizer, data, forget, *, seed):
        return dpo_pairs(tokenizer, data.forget, data.refusals, seed=seed)
