"""Model-level evaluation: every metric of SPEC §5 on every split, as cheaply as it can be done.

An :class:`Evaluator` is built once per (tokenizer, data) and called on a model; a mixing sweep
calls it 21 times, so everything that does not depend on the weights (tokenisation, deduplication,
bucketing, padding) is done in the constructor. A call then costs:

* **one forward per question over what its sequences share**: the longest common token prefix of
  its generation prompt, answer, paraphrase and perturbed answers (the whole prompt in the
  workbench format; all but the boundary tokens where prompt and answer are tokenised jointly, as
  open-unlearning and most of the field do, chat templates included). Every sequence continues
  from that KV cache (:mod:`workbench.generation`) as right-padded batches of its remaining tokens,
  which give its mean answer NLL (probability, truth-ratio terms) and argmax predictions (ES). A
  real-author or world-fact answer is also its truth-ratio "paraphrase": scored once.
* **greedy generation from the same cache** (≤ ``max_new_tokens``, stopping at EOS), for ROUGE-L
  recall, continuously batched (:mod:`workbench.decoding`: a row that ends hands its slot to the
  next prompt). Given ``drafts`` (a sweep passes the previous α's generations), drafts are checked
  in one forward where that has paid so far. ``EvalConfig(generate=False)`` skips generation
  (ROUGE and MU are then NaN).

``EvalConfig(reuse=False)`` is the reference path the above was checked against: one forward per
distinct (prompt, answer) sequence and transformers' ``generate`` per prompt batch, without drafts.
Both give the same numbers to float tolerance.
Aggregates (:attr:`EvalResult.summary`) are :func:`workbench.aggregates.summarise`'s.
"""

from __future__ import annotations

import functools
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
    collate_prompts,
    encode,
    pad_id,
)
from workbench.data.schema import QA, UnlearningData
from workbench.decoding import Decoder, DraftPolicy, clock
from workbench.generation import continue_prefix, prefill
from workbench.likelihood import model_device
from workbench.scoring import (
    _bucketed,
    common_prefixes,
    eos_ids,
    greedy_generate,
    plan_continuations,
    score_continuations,
    score_sequences,
    sequence_batches,
    truth_ratio_terms,
)


@dataclass(frozen=True)
class EvalConfig:
    """What to compute and how to batch it.

    ``generate=False`` skips greedy generation (ROUGE-L and MU become NaN); ``truth_ratio=False``
    skips paraphrased/perturbed answers (TR, FQ, option-normalised probability and MU become NaN).
    ``es_floor=True`` reports ES with open-unlearning's 1/|y| floor. ``reuse=False`` runs the
    reference path (one forward per sequence, ``generate`` per prompt batch, drafts ignored).
    ``prompt_format``: ``"workbench"`` (**[choice]**, scores every answer token) or
    ``"open-unlearning"`` (its exact tokenisation, for numbers next to published ones);
    ``use_chat_template``: None uses the tokenizer's template when it has one. ``batch_size="auto"``:
    the largest batch :func:`~workbench.models.memory.eval_batch_size` finds to fit the device.
    ``common_prefix=False`` / ``continuous=False``: the previous schedule (a prefix only where a
    sequence starts with its whole generation prompt; static generation batches, drafts always
    checked), kept to measure against (``benchmarks/evaluation.py``).
    """

    batch_size: int | str = 32
    generate: bool = True
    truth_ratio: bool = True
    max_new_tokens: int = 200
    max_length: int = 512
    es_floor: bool = False
    splits: tuple[str, ...] = EVAL_SPLITS
    reuse: bool = True
    prompt_format: str = "workbench"
    use_chat_template: bool | None = None
    common_prefix: bool = True
    continuous: bool = True

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0 (0: empty generations), got {self.max_new_tokens}")
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")


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
        self.prompt_of = [self._prompt_index[e.gen_prompt_ids] for e in self.sequences]
        # How much of each prompt its sequences share (all of it in the workbench format; all but the
        # boundary tokens where prompt and answer are tokenised jointly): computed once per question.
        gen_prompts = [e.gen_prompt_ids for e in self.prompts]
        self.prefix_len = common_prefixes(gen_prompts, self.sequences, self.prompt_of, within_prompt=not cfg.common_prefix)
        self.shared = min(self.prefix_len, default=1) >= 1
        if not self.shared:  # some prompt shares nothing with its sequences: prefixes serve generation only
            self.prefix_len = [len(p) for p in gen_prompts]
        self.prefixes = [Encoded(p[:n], n) for p, n in zip(gen_prompts, self.prefix_len)]
        self.policy = DraftPolicy()  # kept across calls: a sweep learns whether drafts pay
        self._plans: dict[int, tuple] = {}
        if cfg.batch_size != "auto":
            self._plan(cfg.batch_size)
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

    def _plan(self, batch_size: int) -> None:
        """Batches for ``batch_size`` (every plan made is kept: ``batch_size="auto"`` may vary by model)."""
        if batch_size not in self._plans:
            tail = np.zeros(len(self.prompts))  # mean tokens after the prefix, per prompt
            np.add.at(tail, self.prompt_of, [len(e.input_ids) for e in self.sequences])
            tail = tail / np.bincount(self.prompt_of, minlength=len(self.prompts)) - np.array(self.prefix_len)
            # Prompts whose sequences have similar lengths share a batch: their continuations then pad little.
            tail_of = {id(e): t for e, t in zip(self.prefixes, tail)}
            prefix_batches = _bucketed(self.prefixes, batch_size, lambda e: tail_of[id(e)], self.pad, collate_prompts)
            self._plans[batch_size] = (
                sequence_batches(self.sequences, batch_size, self.pad),
                _bucketed(self.prompts, batch_size, lambda e: len(e.gen_prompt_ids), self.pad, collate_prompts),
                prefix_batches,
                [plan_continuations(self.sequences, self.prompt_of, self.prefix_len, rows, batch_size, self.pad)
                 if self.shared else [] for rows, _ in prefix_batches],
            )
        self.seq_batches, self.prompt_batches, self.prefix_batches, self.continuations = self._plans[batch_size]

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
        self._batch_size = self._resolve_batch_size(model)
        self._plan(self._batch_size)
        if self.cfg.reuse:
            nll, es, generated, cost = self._run_shared(model, drafts)
            texts = self._texts(model, generated) if generated is not None else None
        else:
            nll, es = score_sequences(model, self.seq_batches, len(self.sequences), es_floor=self.cfg.es_floor)
            texts = self.generate(model) if self.cfg.generate else None
        tables = [self._split_table(s, nll, es, texts) for s in self.examples]
        per_example = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        return EvalResult({**self.summarise(per_example), **cost}, per_example, generated)

    def _resolve_batch_size(self, model: nn.Module) -> int:
        if self.cfg.batch_size != "auto":
            return self.cfg.batch_size
        from workbench.models.memory import eval_batch_size

        answers = (len(e.input_ids) - self.prefix_len[p] for e, p in zip(self.sequences, self.prompt_of))
        return eval_batch_size(model, len(self.prompts), prompt_len=max(len(e.gen_prompt_ids) for e in self.prompts),
                               answer_len=max(answers), new_tokens=self.cfg.max_new_tokens)

    def memoised(self, model: nn.Module, key: Hashable) -> EvalResult:
        """``evaluate(model)`` once per ``key``, which the caller guarantees to name the model's state
        (e.g. θo's cache key): every sweep that starts at that state shares its first point."""
        if key not in self._memo:
            self._memo[key] = self.evaluate(model)
        return self._memo[key]

    @torch.inference_mode()
    def _run_shared(self, model: nn.Module, drafts: Sequence[Sequence[int]] | None):
        """Each batch's common prefixes once, then their continuations and generations: ``(nll, es, generated, cost)``.
        ``self.seconds``: time spent scoring and generating (process time on a CPU)."""
        device, eos, cfg = model_device(model), eos_ids(model, self.tokenizer), self.cfg
        nll, es = np.full(len(self.sequences), math.nan), np.full(len(self.sequences), math.nan)
        tick, self.seconds = clock(device), {"scoring": 0.0, "generation": 0.0}
        start = tick()
        if not self.shared:
            nll, es = score_sequences(model, self.seq_batches, len(self.sequences), es_floor=cfg.es_floor)
            if not cfg.generate:
                self.seconds["scoring"] = tick() - start
                return nll, es, None, {"draft_accept": math.nan, "decode_steps": math.nan}
        self.policy.new_round()
        policy = self.policy if cfg.continuous else DraftPolicy(adaptive=False)
        decoder = Decoder(model, eos, cfg.max_new_tokens, slots=self._batch_size, pad=self.pad, policy=policy)
        for (rows, batch), chunks in zip(self.prefix_batches, self.continuations):
            prefix = prefill(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
            for chunk in chunks:
                nll[chunk.seqs], es[chunk.seqs] = score_continuations(model, prefix, chunk, es_floor=cfg.es_floor)
            self.seconds["scoring"] += tick() - start
            start = tick()
            if cfg.generate:
                tails = [self.prompts[r].gen_prompt_ids[self.prefix_len[r] :] for r in rows]
                decoder.add(rows.tolist(), continue_prefix(model, prefix, tails, self.pad),
                            None if drafts is None else [drafts[r] for r in rows])
                decoder.run(finish=not cfg.continuous)  # static batches: each ends before the next starts
            self.seconds["generation"] += tick() - start
            start = tick()
        decoder.run(finish=True)
        self.seconds["generation"] += tick() - start
        generated = [decoder.tokens[r] for r in range(len(self.prompts))] if cfg.generate else None
        offered = decoder.draft_tokens
        cost = {"draft_accept": decoder.accepted / offered if offered else math.nan, "decode_steps": decoder.steps}
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
    @functools.cached_property
    def prompt_texts(self) -> list[str]:
        """Each distinct prompt as text with its special tokens: shows which chat template was applied."""
        return self.tokenizer.batch_decode([list(e.gen_prompt_ids) for e in self.prompts], skip_special_tokens=False)

    def _split_table(self, split: str, nll: np.ndarray, es: np.ndarray, texts: list[str] | None) -> pd.DataFrame:
        refs, exs = self.refs[split], self.examples[split]
        answer_nll = nll[[r.answer for r in refs]]
        tr, norm = truth_ratio_terms(refs, nll)
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
            "prompt": [self.prompt_texts[r.prompt] for r in refs],
        })

    def summarise(self, per_example: pd.DataFrame) -> dict[str, float]:
        """Aggregates of a per-example table (same keys for every data set; NaN where undefined)."""
        return aggregates.summarise(per_example, self.reference_forget_tr)


# -- batched primitives ---------------------------------------------------------------------------
def evaluate(model: nn.Module, tokenizer, data: UnlearningData, cfg: EvalConfig = EvalConfig(), **kwargs) -> EvalResult:
    """One-off evaluation (builds an :class:`Evaluator`; reuse one for several models)."""
    return Evaluator(tokenizer, data, cfg, **kwargs)(model)
