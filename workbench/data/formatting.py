"""Prompt formatting, tokenisation and batching of question–answer pairs.

Likelihood-based objectives and metrics score only the *answer* tokens (SPEC §3): prompt positions
and padding carry label −100, and the closing EOS / end-of-turn token counts as an answer token.
The prompt is the tokenizer's chat template when it has one (with the date pinned, since Llama-3
templates otherwise insert today's date and make results depend on the day they ran), otherwise
the plain ``Question: …\\nAnswer:`` form. Batches are padded on the right for likelihoods and on
the left for generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.data.schema import QA

IGNORE = -100
PINNED_DATE = "26 Jul 2024"  # [choice] any fixed date; Llama-3 templates read it as `date_string`
PROMPT_FORMATS = ("workbench", "open-unlearning")
# open-unlearning's plain template (its Llama-2-7b-hf model config): user tag, user end, assistant tag.
OU_PLAIN = ("Question: ", "\n", "Answer: ")


@dataclass(frozen=True)
class Encoded:
    """One tokenised pair: ``input_ids = prompt + answer + [eos]``; labels −100 on the prompt.

    ``generation_prompt``: what generation starts from, where it is not ``input_ids[:prompt_len]``
    (open-unlearning's plain format); ``None`` otherwise.
    """

    input_ids: tuple[int, ...]
    prompt_len: int
    generation_prompt: tuple[int, ...] | None = None

    @property
    def labels(self) -> list[int]:
        return [IGNORE] * self.prompt_len + list(self.input_ids[self.prompt_len :])

    @property
    def prompt_ids(self) -> tuple[int, ...]:
        return self.input_ids[: self.prompt_len]

    @property
    def gen_prompt_ids(self) -> tuple[int, ...]:
        """The tokens greedy generation continues."""
        return self.prompt_ids if self.generation_prompt is None else self.generation_prompt


def prompt_text(tokenizer, question: str, use_chat_template: bool | None = None) -> str:
    """The text that precedes the answer. ``use_chat_template=None`` uses the template when present."""
    if _uses_template(tokenizer, use_chat_template):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": question}],
            tokenize=False,
            add_generation_prompt=True,
            date_string=PINNED_DATE,
        )
    return f"Question: {question}\nAnswer:"


def answer_text(tokenizer, answer: str, use_chat_template: bool | None = None) -> str:
    return answer if _uses_template(tokenizer, use_chat_template) else f" {answer}"


def _uses_template(tokenizer, use_chat_template: bool | None) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) if use_chat_template is None else use_chat_template


def _check_pair(tokenizer, question: str, answer: str) -> None:
    if not answer or not answer.strip():
        raise ValueError(f"empty answer for question {question[:80]!r}: every example needs a non-empty answer")
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; set tokenizer.eos_token before encoding")


def encode(tokenizer, question: str, answer: str, *, max_length: int = 512, use_chat_template: bool | None = None,
           prompt_format: str = "workbench") -> Encoded:
    """Tokenise one pair in ``prompt_format`` (see the module docstring; ``"workbench"``: prompt and
    answer tokenised separately, so the boundary is exact)."""
    _check_pair(tokenizer, question, answer)
    use_chat_template = _uses_template(tokenizer, use_chat_template)
    if prompt_format == "open-unlearning":
        return encode_open_unlearning(tokenizer, question, answer, max_length=max_length, use_chat_template=use_chat_template)
    if prompt_format != "workbench":
        raise ValueError(f"unknown prompt_format {prompt_format!r}; choose one of {', '.join(PROMPT_FORMATS)}")
    # Chat templates write their own BOS; the plain format gets the tokenizer's usual special tokens.
    p_ids = tokenizer(prompt_text(tokenizer, question, use_chat_template), add_special_tokens=not use_chat_template)["input_ids"]
    a_ids = tokenizer(answer_text(tokenizer, answer, use_chat_template), add_special_tokens=False)["input_ids"]
    a_ids = a_ids + [tokenizer.eos_token_id]
    ids = (p_ids + a_ids)[:max_length]
    if len(ids) <= len(p_ids):
        raise ValueError(f"max_length={max_length} leaves no answer token for question {question[:80]!r}; raise max_length")
    return Encoded(tuple(ids), len(p_ids))


def encode_open_unlearning(tokenizer, question: str, answer: str, *, max_length: int = 512,
                           use_chat_template: bool = False) -> Encoded:
    """open-unlearning's ``preprocess_chat_instance`` (no system prompt, no in-context examples):
    joint tokenisation with special tokens, EOS appended if missing, the first ``len(prompt_ids)``
    positions masked, generation from ``prompt_ids``."""
    if use_chat_template:
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        kw = {"tokenize": True, "return_dict": False, "date_string": PINNED_DATE}
        ids = _as_ids(tokenizer.apply_chat_template(chat, add_generation_prompt=False, **kw))
        prompt = _as_ids(tokenizer.apply_chat_template(chat[:1], add_generation_prompt=True, **kw))
    else:
        user, end, assistant = OU_PLAIN
        wrapped = f"{user}{question}{end}{assistant}"
        enc = {"add_special_tokens": True, "max_length": max_length, "truncation": True}
        ids, prompt = tokenizer(wrapped + answer, **enc)["input_ids"], tokenizer(wrapped, **enc)["input_ids"]
    if ids[-1] != tokenizer.eos_token_id:
        ids = ids + [tokenizer.eos_token_id]
    n = len(prompt)
    return Encoded(tuple(ids), n, None if tuple(ids[:n]) == tuple(prompt) else tuple(prompt))


# transformers 4's ``clean_up_tokenization``, which open-unlearning asks for when it decodes generations
# (transformers 5 ignores the flag for BPE tokenizers, so it is applied here by hand).
_CLEAN_UPS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
              (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_spaces(text: str) -> str:
    for old, new in _CLEAN_UPS:
        text = text.replace(old, new)
    return text


def _as_ids(out) -> list[int]:
    """``apply_chat_template(tokenize=True)`` returns a list in transformers 4, a BatchEncoding in 5."""
    return list(out if isinstance(out, list) else out["input_ids"])


def encode_all(tokenizer, examples: Sequence[QA], *, field: str = "answer", max_length: int = 512) -> list[Encoded]:
    """Encode the ``answer`` (or ``paraphrased_answer``) of every example."""
    out = []
    for ex in examples:
        ans = getattr(ex, field) if field != "paraphrased_answer" else (ex.paraphrased_answer or ex.answer)
        out.append(encode(tokenizer, ex.question, ans, max_length=max_length))
    return out


def pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate(items: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch for likelihoods: ``input_ids``, ``attention_mask``, ``labels`` ``[batch, pos]``."""
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def collate_prompts(items: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-padded generation prompts (:attr:`Encoded.gen_prompt_ids`): ``input_ids``, ``attention_mask`` ``[batch, pos]``."""
    width = max(len(e.gen_prompt_ids) for e in items)
    ids = torch.full((len(items), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, e in enumerate(items):
        n = len(e.gen_prompt_ids)
        ids[row, width - n :] = torch.tensor(e.gen_prompt_ids)
        mask[row, width - n :] = 1
    return {"input_ids": ids, "attention_mask": mask}


def batches(items: Sequence[Encoded], batch_size: int, pad_token_id: int, *, order: Sequence[int] | None = None):
    """Yield right-padded batches in ``order`` (default: as given)."""
    order = list(range(len(items))) if order is None else list(order)
    for start in range(0, len(order), batch_size):
        yield collate([items[i] for i in order[start : start + batch_size]], pad_token_id)


@dataclass(frozen=True)
class PreferencePair:
    """One DPO item: the same prompt with a preferred answer (``win``, a refusal) and a rejected one
    (``lose``, the true answer to forget)."""

    win: Encoded
    lose: Encoded


def collate_pairs(items: Sequence[PreferencePair], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Batch ``n`` pairs as ``2n`` right-padded rows (wins first, then loses, in the same order) so
    that one forward pass scores both; ``preferred`` ``[2n]`` marks the win rows.

    Usable as ``collate_fn`` of :func:`workbench.training.train_region` / ``run_loop``.
    """
    batch = collate([p.win for p in items] + [p.lose for p in items], pad_token_id)
    batch["preferred"] = torch.arange(2 * len(items)) < len(items)
    return batch
