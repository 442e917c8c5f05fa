"""``memflex`` (Tian et al. 2024, KnowUnDo) — vectors whose forget gradient points away from retain's.

SPEC §4: per forget example, replace the answer tokens by random tokens (inputs and labels), take
the gradient for each value vector, repeat R = 3 times and average → ``g_unl``; the same on retain
examples → ``g_ret``. A vector is selected iff ``cos(g_unl, g_ret) < μ`` and ``‖g_unl‖ > σ``,
μ = 0.95, σ set so that p% are selected **[choice: rank by ‖g_unl‖ among vectors with cos < μ,
then fill by norm; see :func:`memflex_rank_score`]**. Every answer token (the closing EOS included)
is replaced **[choice, as SPEC words it; KnowUnDo overwrites about half]**, and both splits are
corrupted so their common "random answer" direction cancels in the cosine. ``‖·‖`` is the L2 norm
of the vector's gradient (KnowUnDo: mean |g| of a tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.formatting import Encoded
from workbench.localizers.base import Localizer, as_vectors, mean_grads, register


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



@register
@dataclass
class MemFlex(Localizer):
    """MemFlex per value vector: random-answer gradient norm among vectors whose forget and retain
    gradients disagree (``cos < μ``)."""

    name: ClassVar[str] = "memflex"
    title: ClassVar[str] = "MemFlex"
    color: ClassVar[str] = "#009E73"
    default_lr: ClassVar[float] = 1e-3
    paper: ClassVar[tuple[str, ...]] = ("table1",)
    mu: float = field(default=0.95, metadata={"help": "MemFlex cosine threshold μ (SPEC: 0.95)"})
    repeats: int = field(default=3, metadata={"help": "MemFlex random-answer copies R per example (SPEC: 3)"})
    batch_size: int = field(default=8, metadata={"help": "examples per backward pass"})
    seed: int = 0

    def scores(self, model, forget, retain, pad_token_id):
        if not retain:
            raise ValueError("memflex needs retain examples (the cosine is taken against the retain gradient)")
        gen = torch.Generator().manual_seed(int(self.seed))
        g_unl = randomized_grads(model, forget, pad_token_id, self.repeats, gen, self.batch_size)
        g_ret = randomized_grads(model, retain, pad_token_id, self.repeats, gen, self.batch_size)
        cos = F.cosine_similarity(g_unl, g_ret, dim=-1)
        return memflex_rank_score(g_unl.norm(dim=-1), cos, self.mu)
