"""Answer-token likelihoods from one forward pass, shared by objectives, localizers and metrics.

SPEC §3 and §5 score only the *answer*: labels are −100 (:data:`IGNORE`) on prompt positions and
padding, and the closing EOS / end-of-turn token counts as an answer token. HF's convention is
that ``logits[:, t]`` predicts token ``t + 1``, so every function here shifts by one. Everything is
a pure tensor function except :func:`forward_logits` (one model call) and :func:`model_device`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.formatting import IGNORE


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every next token and the answer mask.

    Args:
        logits: ``[batch, pos, vocab]``; labels: ``[batch, pos]``, −100 outside the answer.

    Returns:
        ``(logp [batch, pos-1], mask [batch, pos-1])`` aligned with ``labels[:, 1:]`` (0 off the answer).
    """
    shifted = labels[:, 1:]
    mask = shifted != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    gathered = logp.gather(-1, shifted.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return gathered * mask, mask


def sequence_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log π(y|x)`` summed over answer tokens, ``[batch]``."""
    logp, _ = token_logprobs(logits, labels)
    return logp.sum(-1)


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean NLL over each row's answer tokens, ``[batch]`` (NaN for a row without answer tokens).

    The per-example quantity behind probability, truth ratio and the attribution gradients.
    """
    return row_nll(logits[:, :-1], labels[:, 1:])


def row_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean NLL of each row's targets, ``[batch]``, with ``logits[:, t]`` predicting ``targets[:, t]``
    (already aligned: continuations scored after a cached prompt come this way).

    Args:
        logits: ``[batch, pos, vocab]``; targets: ``[batch, pos]`` with −100 outside the answer.
    """
    return nll_sum(logits, targets) / (targets != IGNORE).sum(-1)


def nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Summed NLL of each row's targets, ``[batch]`` (the softmax over the contiguous vocabulary axis)."""
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="none")
    return nll.view(targets.shape).sum(-1)


def mean_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over *all answer tokens of the batch* of −log p(y_t) (the HF causal-LM loss)."""
    logp, mask = token_logprobs(logits, labels)
    return -logp.sum() / mask.sum().clamp_min(1)


def forward_logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``[batch, pos, vocab]`` logits of one forward pass."""
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (where batches must go)."""
    return next(model.parameters()).device
