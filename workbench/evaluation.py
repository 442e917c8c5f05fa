"""Model-level evaluation: every metric of SPEC §5 on every split, as cheaply as it can be done.

An :class:`Evaluator` is built once per (tokenizer, data) and called on a model; a mixing sweep
calls it 21 times, so everything that does not depend on the weights (tokenisation, deduplication,
bucketing, padding) is done in the constructor. A call then costs:

* **one teacher-forced forward per distinct (prompt, answer) sequence**, in right-padded batches of
  sequences sorted by length (buckets of similar length waste little padding). From each forward
  come the answer's mean NLL (probability, truth-ratio terms) and its argmax predictions (ES). The
  answer of real authors / world facts is also their truth-ratio "paraphrase": scored once. The LM
  head runs only on the batch's answer window (``logits_to_keep``), not on the prompt positions.
* **one batched greedy generation per distinct prompt** (left padding, KV cache, each sequence
  stopping at EOS, ≤ 200 new tokens), for ROUGE-L recall. ``EvalConfig(generate=False)`` skips it
  for sweeps that need only ES-based numbers (FS, RS); ROUGE and MU are then NaN.

Aggregates (:attr:`EvalResult.summary`): FS = 1 − mean ES(forget), RS = mean ES(retain_eval),
FQ = log10 KS p-value against θr's per-example forget truth ratios (NaN without them; ``n_fq`` and
``n_fq_reference`` give the sample sizes), MU = harmonic mean of {probability, ROUGE-L recall,
truth-ratio score} × {retain_eval, real_authors, world_facts}, the probability option-normalised
on real authors / world facts (NaN when one of these splits is empty, e.g. LUME).

Not done: sharing one KV-cached prompt prefix between a question's answer, paraphrase and
perturbed answers (would save the prompt's share of those forwards).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbench import metrics as m
from workbench.data.formatting import Encoded, collate, collate_prompts, encode, pad_id
from workbench.data.schema import QA, UnlearningData
from workbench.likelihood import model_device

EVAL_SPLITS = ("forget", "retain_eval", "real_authors", "world_facts")
MU_SPLITS = ("retain_eval", "real_authors", "world_facts")
NORMALISED_PROB_SPLITS = ("real_authors", "world_facts")  # option-normalised probability in MU


@dataclass(frozen=True)
class EvalConfig:
    """What to compute and how to batch it.

    ``generate=False`` skips greedy generation (ROUGE-L and MU become NaN); ``truth_ratio=False``
    skips paraphrased/perturbed answers (TR, FQ, option-normalised probability and MU become NaN).
    ``es_floor=True`` reports ES with open-unlearning's 1/|y| floor.
    """

    batch_size: int = 32
    generate: bool = True
    truth_ratio: bool = True
    max_new_tokens: int = 200
    max_length: int = 512
    es_floor: bool = False
    splits: tuple[str, ...] = EVAL_SPLITS


@dataclass
class EvalResult:
    """``summary``: one number per aggregate; ``per_example``: one row per evaluated example."""

    summary: dict[str, float]
    per_example: pd.DataFrame


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
        self.prompt_batches = _bucketed(self.prompts, cfg.batch_size, lambda e: e.prompt_len, self.pad, collate_prompts)
        self._rouge_cache: dict[tuple[str, str], float] = {}

    # -- plan -----------------------------------------------------------------------------------
    def _intern(self, enc: Encoded, index: dict, table: list, key: tuple[int, ...]) -> int:
        if key not in index:
            index[key] = len(table)
            table.append(enc)
        return index[key]

    def _seq(self, question: str, answer: str) -> tuple[int, Encoded]:
        enc = encode(self.tokenizer, question, answer, max_length=self.cfg.max_length)
        return self._intern(enc, self._seq_index, self.sequences, enc.input_ids), enc

    def _add_example(self, ex: QA) -> _Refs:
        answer, enc = self._seq(ex.question, ex.answer)
        prompt = self._intern(enc, self._prompt_index, self.prompts, enc.prompt_ids)
        para, pert = answer, ()
        if self.cfg.truth_ratio and ex.perturbed_answers:
            para = self._seq(ex.question, ex.paraphrased_answer)[0] if ex.paraphrased_answer else answer
            pert = tuple(self._seq(ex.question, p)[0] for p in ex.perturbed_answers)
        return _Refs(answer, para, pert, prompt)

    # -- run ------------------------------------------------------------------------------------
    def __call__(self, model: nn.Module) -> EvalResult:
        return self.evaluate(model)

    def evaluate(self, model: nn.Module) -> EvalResult:
        nll, es = score_sequences(model, self.seq_batches, len(self.sequences), es_floor=self.cfg.es_floor)
        texts = self.generate(model) if self.cfg.generate else None
        tables = [self._split_table(s, nll, es, texts) for s in self.examples]
        per_example = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        return EvalResult(self.summarise(per_example), per_example)

    def generate(self, model: nn.Module) -> list[str]:
        """Greedy answer to every distinct prompt, decoded without special tokens."""
        eos = eos_ids(model, self.tokenizer)
        ids = greedy_generate(model, self.prompt_batches, len(self.prompts), eos, self.pad, self.cfg.max_new_tokens)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

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
        out: dict[str, float] = {}
        by_split = {s: g for s, g in per_example.groupby("split")} if len(per_example) else {}
        for s in EVAL_SPLITS:
            g = by_split.get(s)
            out[f"n_{s}"] = 0 if g is None else len(g)
            for col, agg in _SPLIT_AGGREGATES.items():
                out[f"{s}_{col}"] = math.nan if g is None else agg(g)
        out["FS"] = 1 - out["forget_es"]
        out["RS"] = out["retain_eval_es"]
        components = mu_components(out)
        out.update(components)
        out["MU"] = m.model_utility(components)
        out.update(self._forget_quality(by_split.get("forget")))
        return out

    def _forget_quality(self, forget: pd.DataFrame | None) -> dict[str, float]:
        tr = np.array([]) if forget is None else forget["truth_ratio"].to_numpy(dtype=float)
        tr = tr[np.isfinite(tr)]
        ref = self.reference_forget_tr
        n_ref = 0 if ref is None else int(np.isfinite(ref).sum())
        fq = m.forget_quality(tr, ref[np.isfinite(ref)]) if len(tr) and n_ref else math.nan
        return {"FQ": fq, "n_fq": len(tr), "n_fq_reference": n_ref}


def _nanmean(col: str):
    return lambda g: float(np.nanmean(g[col])) if g[col].notna().any() else math.nan


_SPLIT_AGGREGATES = {
    "es": _nanmean("es"),
    "prob": _nanmean("prob"),
    "prob_norm": _nanmean("prob_norm"),
    "rougeL": _nanmean("rougeL_recall"),
    # NaN truth ratios (no perturbed answers) make the split's TR aggregates NaN, not a partial mean.
    "tr_score": lambda g: m.truth_ratio_score(g["truth_ratio"].to_numpy(dtype=float)),
    "tr_closeness": lambda g: m.truth_ratio_closeness(g["truth_ratio"].to_numpy(dtype=float)),
}


def mu_components(summary: dict[str, float]) -> dict[str, float]:
    """The nine MU inputs from a summary's per-split aggregates (``mu_{prob,rougeL,tr}_{split}``)."""
    out = {}
    for s in MU_SPLITS:
        out[f"mu_prob_{s}"] = summary[f"{s}_prob_norm" if s in NORMALISED_PROB_SPLITS else f"{s}_prob"]
        out[f"mu_rougeL_{s}"] = summary[f"{s}_rougeL"]
        out[f"mu_tr_{s}"] = summary[f"{s}_tr_score"]
    return out


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
def _bucketed(items: list[Encoded], batch_size: int, length, pad: int, collate_fn) -> list[tuple[np.ndarray, dict]]:
    """Length-sorted batches (longest first: an out-of-memory error shows up at once)."""
    order = sorted(range(len(items)), key=lambda i: -length(items[i]))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [(np.array(c), collate_fn([items[i] for i in c], pad)) for c in chunks]


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


def evaluate(model: nn.Module, tokenizer, data: UnlearningData, cfg: EvalConfig = EvalConfig(), **kwargs) -> EvalResult:
    """One-off evaluation (builds an :class:`Evaluator`; reuse one for several models)."""
    return Evaluator(tokenizer, data, cfg, **kwargs)(model)
