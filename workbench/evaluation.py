"""Model-level evaluation: every metric of SPEC §5 on every split, as cheaply as it can be done.

An :class:`Evaluator` is built once per (tokenizer, data) and called on a model; a mixing sweep
calls it 21 times, so everything that does not depend on the weights (tokenisation, deduplication,
bucketing, padding) is done in the constructor. A call then costs:

* **one forward per distinct prompt** (left-padded batches of prompts whose answers have similar
  lengths, so that the answers pad little), whose KV cache every answer of that question continues
  from (:mod:`workbench.generation`): the answer, the paraphrase and the perturbed answers run as
  right-padded batches of answer tokens only, so a question's prompt (with a chat template often
  longer than its answers) is computed once, not once per answer. From these forwards come each
  answer's mean NLL (probability, truth-ratio terms) and its argmax predictions (ES). A real-author
  or world-fact answer is also its truth-ratio "paraphrase": scored once.
* **greedy generation from the same prompt cache** (each sequence stopping at EOS, ≤ 200 new
  tokens), for ROUGE-L recall. Given ``drafts`` (a mixing sweep passes the previous α's
  generations), each draft is checked in one forward and decoding starts only where the model
  disagrees with it: most of a sweep's generation then costs one batched forward per α.
  ``EvalConfig(generate=False)`` skips generation for sweeps that need only ES-based numbers (FS,
  RS); ROUGE and MU are then NaN.

``EvalConfig(reuse=False)`` is the reference path the above was checked against: one forward per
distinct (prompt, answer) sequence (the LM head only on the batch's answer window) and transformers'
``generate`` per prompt batch, without drafts. Both give the same numbers to float tolerance.

``EvalConfig(prompt_format="open-unlearning")`` tokenises as open-unlearning does
(:mod:`workbench.data.formatting`); its scoring sequences do not start with the generation prompt,
so they are scored one forward per sequence, and generation still runs from shared prompt caches.
Aggregates (:attr:`EvalResult.summary`) are :func:`workbench.aggregates.summarise`'s.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbench import aggregates
from workbench import metrics as m
from workbench.aggregates import (  # noqa: F401
    EVAL_SPLITS,
    MU_SPLITS,
    NORMALISED_PROB_SPLITS,
    mu_components,
)
from workbench.data.formatting import (
    Encoded,
    clean_up_spaces,
    collate,
    collate_prompts,
    encode,
    pad_id,
)
from workbench.data.schema import QA, UnlearningData
from workbench.decoding import greedy_from_drafts
from workbench.generation import prefill, right_pad
from workbench.likelihood import model_device
from workbench.scoring import Continuations, _bucketed, eos_ids, greedy_generate, score_continuations, score_sequences


@dataclass(frozen=True)
class EvalConfig:
    """What to compute and how to batch it.

    ``generate=False`` skips greedy generation (ROUGE-L and MU become NaN); ``truth_ratio=False``
    skips paraphrased/perturbed answers (TR, FQ, option-normalised probability and MU become NaN).
    ``es_floor=True`` reports ES with open-unlearning's 1/|y| floor. ``reuse=False`` runs the
    reference path (one forward per sequence, ``generate`` per prompt batch, drafts ignored).
    ``prompt_format``: ``"workbench"`` (**[choice]**, scores every answer token) or
    ``"open-unlearning"`` (its exact tokenisation, for numbers next to published ones);
    ``use_chat_template``: None uses the tokenizer's template when it has one.
    """

    batch_size: int = 32
    generate: bool = True
    truth_ratio: bool = True
    max_new_tokens: int = 200
    max_length: int = 512
    es_floor: bool = False
    splits: tuple[str, ...] = EVAL_SPLITS
    reuse: bool = True
    prompt_format: str = "workbench"
    use_chat_template: bool | None = None

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0 (0: empty generations), got {self.max_new_tokens}")


@dataclass
class EvalResult:
    """``summary``: one number per aggregate; ``per_example``: one row per evaluated example.

    ``generated_ids``: the greedy generation of every distinct prompt as token ids, ending with the
    EOS id where it stopped there (None without generation or on the reference path); a sweep
    passes them as the next point's drafts.
    """

    summary: dict[str, float]
    per_example: pd.DataFrame
    generated_ids: list[list[int]] | None = None


@dataclass(frozen=True)
class _Refs:
    """Where one example's sequences live in the evaluator's table of distinct sequences."""

    answer: int
    para: int
    pert: tuple[int, ...]
    prompt: int


class Evaluator:
    """Evaluate models on one data bundle; build once, call per model (or per mixing α)."""

    def __init__(
        self,
        tokenizer,
        data: UnlearningData,
        cfg: EvalConfig = EvalConfig(),
        *,
        reference_forget_tr: Sequence[float] | None = None,
    ):
        self.tokenizer, self.cfg = tokenizer, cfg
        self.reference_forget_tr = None if reference_forget_tr is None else np.asarray(reference_forget_tr, dtype=float)
        self.pad = pad_id(tokenizer)
        self._seq_index: dict[tuple[int, ...], int] = {}
        self._prompt_index: dict[tuple[int, ...], int] = {}
        self.sequences: list[Encoded] = []
        self.prompts: list[Encoded] = []
        self.examples: dict[str, list[QA]] = {s: getattr(data, s) for s in cfg.splits if getattr(data, s)}
        self.refs = {s: [self._add_example(ex) for ex in exs] for s, exs in self.examples.items()}
        self.seq_batches = _bucketed(self.sequences, cfg.batch_size, lambda e: len(e.input_ids), self.pad, collate)
        self.prompt_batches = _bucketed(self.prompts, cfg.batch_size, lambda e: len(e.gen_prompt_ids), self.pad, collate_prompts)
        self.prompt_of = [self._prompt_index[e.gen_prompt_ids] for e in self.sequences]
        # Prompts whose answers have similar lengths share a batch: their continuations then pad little.
        answer_len = self._mean_answer_lengths()
        self.prefix_batches = _bucketed(self.prompts, cfg.batch_size, lambda e: answer_len[self._prompt_index[e.gen_prompt_ids]],
                                        self.pad, collate_prompts)
        # Sequences that continue their generation prompt are scored from its cache; others alone.
        self.shared = all(e.generation_prompt is None for e in self.sequences)
        self.continuations = [self._plan_continuations(rows) if self.shared else [] for rows, _ in self.prefix_batches]
        self._rouge_cache: dict[tuple[str, str], float] = {}
        self._memo: dict[Hashable, EvalResult] = {}

    # -- plan -----------------------------------------------------------------------------------
    def _intern(self, enc: Encoded, index: dict, table: list, key: tuple[int, ...]) -> int:
        if key not in index:
            index[key] = len(table)
            table.append(enc)
        return index[key]

    def _seq(self, question: str, answer: str) -> tuple[int, Encoded]:
        enc = encode(self.tokenizer, question, answer, max_length=self.cfg.max_length,
                     use_chat_template=self.cfg.use_chat_template, prompt_format=self.cfg.prompt_format)
        return self._intern(enc, self._seq_index, self.sequences, enc.input_ids), enc

    def _add_example(self, ex: QA) -> _Refs:
        answer, enc = self._seq(ex.question, ex.answer)
        prompt = self._intern(enc, self._prompt_index, self.prompts, enc.gen_prompt_ids)
        para, pert = answer, ()
        if self.cfg.truth_ratio and ex.perturbed_answers:
            para = self._seq(ex.question, ex.paraphrased_answer)[0] if ex.paraphrased_answer else answer
            pert = tuple(self._seq(ex.question, p)[0] for p in ex.perturbed_answers)
        return _Refs(answer, para, pert, prompt)

    def _answer(self, seq: int) -> list[int]:
        enc = self.sequences[seq]
        return list(enc.input_ids[enc.prompt_len :])

    def _mean_answer_lengths(self) -> np.ndarray:
        total, count = np.zeros(len(self.prompts)), np.zeros(len(self.prompts))
        for s, p in enumerate(self.prompt_of):
            total[p] += len(self._answer(s))
            count[p] += 1
        return total / count

    def _plan_continuations(self, prompt_rows: np.ndarray) -> list[Continuations]:
        """Every sequence of the batch's prompts, longest answers first, in batches of ``batch_size``."""
        row_of = {int(p): i for i, p in enumerate(prompt_rows)}
        members = [(s, row_of[p]) for s, p in enumerate(self.prompt_of) if p in row_of]
        members.sort(key=lambda member: -len(self._answer(member[0])))
        chunks = [members[i : i + self.cfg.batch_size] for i in range(0, len(members), self.cfg.batch_size)]
        return [self._continuations(chunk) for chunk in chunks]

    def _continuations(self, chunk: list[tuple[int, int]]) -> Continuations:
        answers = [self._answer(s) for s, _ in chunk]
        width = max(1, max(len(a) for a in answers) - 1)
        tokens, mask = right_pad([a[:-1] for a in answers], self.pad, torch.device("cpu"), width)
        targets = torch.full((len(answers), width + 1), m.IGNORE, dtype=torch.long)
        for i, a in enumerate(answers):
            targets[i, : len(a)] = torch.tensor(a)
        return Continuations(np.array([s for s, _ in chunk]), torch.tensor([r for _, r in chunk]), tokens, mask, targets)

    # -- run ------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module, *, drafts: Sequence[Sequence[int]] | None = None) -> EvalResult:
        return self.evaluate(model, drafts=drafts)

    def evaluate(self, model: nn.Module, *, drafts: Sequence[Sequence[int]] | None = None) -> EvalResult:
        """Every metric of ``model``. ``drafts``: one token list per distinct prompt (e.g. the
        ``generated_ids`` of a nearby model), checked instead of decoding from scratch; they change
        what generation costs, not what it returns. ``summary["draft_accept"]`` is the share of
        draft tokens accepted (NaN without drafts), ``summary["decode_steps"]`` the number of
        one-token decoding forwards run (NaN on the reference path)."""
        if drafts is not None and len(drafts) != len(self.prompts):
            raise ValueError(f"drafts: expected one token list per distinct prompt ({len(self.prompts)}), got {len(drafts)}")
        generated, cost = None, {"draft_accept": math.nan, "decode_steps": math.nan}
        if self.cfg.reuse:
            nll, es, generated, cost = self._run_shared(model, drafts)
            texts = self._texts(model, generated) if generated is not None else None
        else:
            nll, es = score_sequences(model, self.seq_batches, len(self.sequences), es_floor=self.cfg.es_floor)
            texts = self.generate(model) if self.cfg.generate else None
        tables = [self._split_table(s, nll, es, texts) for s in self.examples]
        per_example = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        return EvalResult({**self.summarise(per_example), **cost}, per_example, generated)

    def memoised(self, model: nn.Module, key: Hashable) -> EvalResult:
        """``evaluate(model)`` once per ``key``, which the caller guarantees to name the model's state
        (e.g. θo's cache key): every sweep that starts at that state shares its first point."""
        if key not in self._memo:
            self._memo[key] = self.evaluate(model)
        return self._memo[key]

    @torch.inference_mode()
    def _run_shared(self, model: nn.Module, drafts: Sequence[Sequence[int]] | None):
        """Prompt once per batch, then its continuations and generations: ``(nll, es, generated, cost)``."""
        device, eos = model_device(model), eos_ids(model, self.tokenizer)
        nll, es = np.full(len(self.sequences), math.nan), np.full(len(self.sequences), math.nan)
        if not self.shared:
            nll, es = score_sequences(model, self.seq_batches, len(self.sequences), es_floor=self.cfg.es_floor)
        generated = [[] for _ in self.prompts] if self.cfg.generate else None
        offered = accepted = steps = 0
        for (rows, batch), chunks in zip(self.prefix_batches, self.continuations):
            prefix = prefill(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
            for chunk in chunks:
                nll[chunk.seqs], es[chunk.seqs] = score_continuations(model, prefix, chunk, es_floor=self.cfg.es_floor)
            if generated is None:
                continue
            batch_drafts = None if drafts is None else [drafts[r] for r in rows]
            gen = greedy_from_drafts(model, prefix, eos, self.cfg.max_new_tokens, batch_drafts, pad=self.pad)
            for r, tokens in zip(rows, gen.tokens):
                generated[r] = tokens
            offered, accepted, steps = offered + gen.draft_tokens, accepted + gen.accepted, steps + gen.decode_steps
        cost = {"draft_accept": accepted / offered if offered else math.nan, "decode_steps": steps}
        return nll, es, generated, cost

    def _texts(self, model: nn.Module, generated: list[list[int]]) -> list[str]:
        eos = set(eos_ids(model, self.tokenizer))
        ids = [t[:-1] if t and t[-1] in eos else t for t in generated]
        return self._decode(ids)

    def _decode(self, ids: list[list[int]]) -> list[str]:
        # open-unlearning decodes with clean_up_tokenization_spaces=True (" ." → "."); ours keeps the text as generated.
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        clean = clean_up_spaces if self.cfg.prompt_format == "open-unlearning" else str
        return [clean(text).strip() for text in texts]

    def generate(self, model: nn.Module) -> list[str]:
        """Greedy answer to every distinct prompt, decoded without special tokens."""
        eos = eos_ids(model, self.tokenizer)
        ids = greedy_generate(model, self.prompt_batches, len(self.prompts), eos, self.pad, self.cfg.max_new_tokens)
        return self._decode(ids)

    def _rouge(self, generation: str, answer: str) -> float:
        key = (generation, answer)
        if key not in self._rouge_cache:  # mixing sweeps repeat generations across α
            self._rouge_cache[key] = m.rouge_l_recall(generation, answer)
        return self._rouge_cache[key]

    # -- tables ---------------------------------------------------------------------------------
    def _split_table(self, split: str, nll: np.ndarray, es: np.ndarray, texts: list[str] | None) -> pd.DataFrame:
        refs, exs = self.refs[split], self.examples[split]
        answer_nll = nll[[r.answer for r in refs]]
        tr, norm = _truth_ratio_terms(refs, nll)
        gens = [texts[r.prompt] for r in refs] if texts is not None else [None] * len(refs)
        rouge = [self._rouge(g, ex.answer) if g is not None else math.nan for g, ex in zip(gens, exs)]
        return pd.DataFrame({
            "split": split,
            "index": np.arange(len(refs)),
            "n_answer_tokens": [len(self.sequences[r.answer].input_ids) - self.sequences[r.answer].prompt_len for r in refs],
            "avg_nll": answer_nll,
            "prob": np.exp(-answer_nll),
            "prob_norm": norm,
            "truth_ratio": tr,
            "es": es[[r.answer for r in refs]],
            "rougeL_recall": rouge,
            "generation": gens,
        })

    def summarise(self, per_example: pd.DataFrame) -> dict[str, float]:
        """Aggregates of a per-example table (same keys for every data set; NaN where undefined)."""
        return aggregates.summarise(per_example, self.reference_forget_tr)


def _truth_ratio_terms(refs: list[_Refs], nll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example truth ratio and option-normalised probability (NaN without perturbed answers)."""
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


# -- batched primitives ---------------------------------------------------------------------------
def evaluate(model: nn.Module, tokenizer, data: UnlearningData, cfg: EvalConfig = EvalConfig(), **kwargs) -> EvalResult:
    """One-off evaluation (builds an :class:`Evaluator`; reuse one for several models)."""
    return Evaluator(tokenizer, data, cfg, **kwargs)(model)
