"""A 21-point mixing sweep at the cost of its teacher-forced passes, measured in one run (issue 14).

θo is a model that memorised a TOFU subset (tiny LLaMA: fine-tuned on every answer of it;
SmolLM2-135M-Instruct: forget + retain_eval answers trained into a 10% random region of value
vectors). The sweep runs from θo to its NPO-unlearned version (same region) on the same subset for
every mode, and prints:

1. one full evaluation at θo, today's path (``EvalConfig(reuse=False)``: one forward per (prompt,
   answer) sequence, transformers' ``generate`` per prompt batch) vs the prompt computed once
   (``reuse=True``), and the same for scoring alone (``generate=False``). Target ≥ 1.3× on SmolLM2.
2. today's sweep vs the new one (prompt once; each α's generations checked as the next α's
   drafts). Target ≥ 2× on SmolLM2.
3. new sweep / (21 × teacher-forced floor + 1 × generation floor), target ≤ 1.2. The floors are
   those of ``benchmarks/evaluation.py``: a bare forward over every distinct (prompt, answer)
   sequence and a bare batched ``generate`` of every distinct prompt, both at θo.
4. per α: both times, the share of draft tokens accepted, decoding steps, and the generations that
   differ from today's (plain greedy decoding; target 0 on the tiny model in fp32).
5. ``--bf16``: the same comparison of generations with the model in bfloat16 (generation only:
   plain batched ``generate`` vs draft-checked decoding at every α), counting near-tie flips.
6. ``--eval-dtype float32`` (the default): the same count for the paper configuration, bf16
   weights swept in float32 (``eval_dtype`` in ``params/*/paper-*.yaml``); ``--eval-dtype ''`` skips it.

``--skip-today`` runs only the new sweep (for evaluation sets too large to sweep today's way).
Run: ``OMP_NUM_THREADS=1 python benchmarks/sweep.py --model smollm2``. On CPU, times are process
time (robust on a shared machine; torch runs on one thread here); on GPU, wall time.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable

import pandas as pd
import torch
import transformers

from workbench.data import load_data, tokenizer_corpus
from workbench.data.formatting import encode_all, pad_id
from workbench.data.schema import UnlearningData
from workbench.decoding import greedy_from_drafts
from workbench.evaluation import EvalConfig, Evaluator, eos_ids, greedy_generate
from workbench.generation import prefill
from workbench.mixing import ALPHAS, evaluated_in, mixing_sweep
from workbench.regions import random_region
from workbench.training import TrainConfig, TrainSpec, finetune, train_region

SPLITS = ("forget", "retain_eval", "real_authors", "world_facts")


from evaluation import _clock as clock  # noqa: E402  (benchmarks/evaluation.py, run as a script from benchmarks/)


# -- setup ----------------------------------------------------------------------------------------
def tofu_subset(source: str, sizes: dict[str, int]) -> UnlearningData:
    """The first ``sizes[split]`` questions of each evaluation split (forget: the last two forget10 authors)."""
    data = load_data("tofu", source=source, n_forget_authors=2)
    for split, n in sizes.items():
        setattr(data, split, getattr(data, split)[:n])
    return data


def tiny_theta_o(data: UnlearningData, device: str):
    """A tiny LLaMA fine-tuned until it reproduces every answer of the subset (ES 1 on every split)."""
    from workbench.models import TinyLlamaConfig, tiny_llama, train_bpe_tokenizer

    tok = train_bpe_tokenizer(tokenizer_corpus(data), vocab_size=2048)
    model = tiny_llama(TinyLlamaConfig(n_layers=4, d_model=128, d_ff=1024), tok).to(device)
    everything = [ex for split in SPLITS for ex in getattr(data, split)]
    finetune(model, encode_all(tok, everything), TrainConfig(lr=2e-3, epochs=40, batch_size=4), pad_id(tok), progress=False)
    return tok, model


def smollm2_theta_o(data: UnlearningData, device: str, region_seed: int = 0):
    """SmolLM2 with forget + retain_eval answers trained into a 10% region (merged into the weights)."""
    from workbench.models.smollm import load_smollm2

    model, tok = load_smollm2(device=device)
    spec = TrainSpec(encode_all(tok, data.forget + data.retain_eval), TrainConfig(lr=3e-3, epochs=10, batch_size=8),
                     pad_id(tok), progress=False)
    inject, _ = train_region(model, random_region(model, 0.1, seed=region_seed), spec)
    inject.merge(1.0)
    return tok, model


def unlearning(model, tok, data: UnlearningData, lr: float, region_seed: int = 0):
    """NPO on the forget set, restricted to a 10% region; returns the delta (θ_after = θ(1))."""
    spec = TrainSpec(encode_all(tok, data.forget), TrainConfig(lr=lr, epochs=5, batch_size=8), pad_id(tok),
                     objective="npo", progress=False)
    delta, _ = train_region(model, random_region(model, 0.1, seed=region_seed), spec)
    return delta


# -- measurements ---------------------------------------------------------------------------------
def timed_sweep(model, delta, evaluator: Evaluator, tick) -> tuple[pd.DataFrame, pd.DataFrame, list]:
    """The sweep with each point's time (``time`` column) and each point's EvalResult."""
    times, results = [], []

    def evaluate(m, drafts=None):
        start = tick()
        results.append(evaluator(m, drafts=drafts))
        times.append(tick() - start)
        return results[-1]

    per_alpha, per_example = mixing_sweep(model, delta, evaluate, progress=False)
    per_alpha["time"] = times
    return per_alpha, per_example, results


@torch.inference_mode()
def teacher_forced_floor(model, evaluator: Evaluator) -> None:
    """A bare forward over every distinct (prompt, answer) sequence."""
    device = next(model.parameters()).device
    for _, batch in evaluator.seq_batches:
        model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device), use_cache=False)


@torch.inference_mode()
def generation_floor(model, evaluator: Evaluator, eos: list[int]) -> None:
    device = next(model.parameters()).device
    for _, batch in evaluator.prompt_batches:
        model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       do_sample=False, max_new_tokens=evaluator.cfg.max_new_tokens, eos_token_id=eos, pad_token_id=evaluator.pad)


def min_times(fns: dict[str, Callable[[], object]], repeats: int, tick) -> dict[str, float]:
    """Minimum time of each callable over ``repeats`` interleaved rounds."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = tick()
            fn()
            times[name].append(tick() - start)
    return {name: min(t) for name, t in times.items()}


def generation_flips(model, delta, evaluator: Evaluator, eos: list[int]) -> list[int]:
    """Per α: prompts whose draft-checked generation differs from plain batched ``generate``."""
    device, n, limit = next(model.parameters()).device, len(evaluator.prompts), evaluator.cfg.max_new_tokens
    flips, drafts = [], None
    for alpha in ALPHAS:
        with delta.mixed(alpha):
            plain = greedy_generate(model, evaluator.prompt_batches, n, eos, evaluator.pad, limit)
            checked = [None] * n
            for rows, batch in evaluator.prefix_batches:
                prefix = prefill(model, batch["input_ids"].to(device), batch["attention_mask"].to(device))
                gen = greedy_from_drafts(model, prefix, eos, limit, None if drafts is None else [drafts[r] for r in rows],
                                         pad=evaluator.pad)
                for r, tokens in zip(rows, gen.tokens):
                    checked[r] = tokens
        drafts = checked
        flips.append(sum(c[:-1] != p if c and c[-1] in eos else c != p for c, p in zip(checked, plain)))
    return flips


# -- report ---------------------------------------------------------------------------------------
def compare_examples(new: pd.DataFrame, today: pd.DataFrame) -> str:
    """How far the new numbers are from today's: max relative difference, ES and generations equal."""
    rel = {col: float(((new[col] - today[col]).abs() / today[col].abs().clip(lower=1e-30)).max())
           for col in ("prob", "prob_norm", "truth_ratio")}
    same_es = bool((new["es"] == today["es"]).all())
    return "max rel diff " + ", ".join(f"{k} {v:.1e}" for k, v in rel.items()) + f"; ES identical: {same_es}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tofu", default="../shared/data/tofu", help="TOFU folder (one <split>.jsonl per configuration)")
    parser.add_argument("--n-forget", type=int, default=None, help="forget questions (default: tiny 20, smollm2 4)")
    parser.add_argument("--n-retain", type=int, default=None, help="retain_eval questions (default: tiny 20, smollm2 4)")
    parser.add_argument("--n-real", type=int, default=None, help="real_authors questions (default: tiny 20, smollm2 2)")
    parser.add_argument("--n-world", type=int, default=None, help="world_facts questions (default: tiny 20, smollm2 2)")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None,
                        help="repeats of the single evaluations (default: tiny 3, smollm2 1)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="count near-tie flips in bfloat16")
    parser.add_argument("--eval-dtype", default="float32", help="count flips of bf16 weights swept in this dtype ('' skips)")
    parser.add_argument("--skip-today", action="store_true", help="time only the new sweep")
    parser.add_argument("--always", action=argparse.BooleanOptionalAction, default=True,
                        help="also time drafts always checked with 10 guesses (--no-always: only adaptive vs plain)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    small = args.model == "smollm2"
    sizes = {"forget": args.n_forget or (4 if small else 20), "retain_eval": args.n_retain or (4 if small else 20),
             "real_authors": args.n_real or (2 if small else 20), "world_facts": args.n_world or (2 if small else 20)}
    repeats = args.repeats or (1 if small else 3)
    if args.device == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    tick = clock(args.device)
    print(f"$ {' '.join(sys.argv)}")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {platform.processor() or platform.machine()}, "
          f"device {args.device}, max_new_tokens {args.max_new_tokens}, batch size {args.batch_size}")
    start = time.perf_counter()
    data = tofu_subset(args.tofu, sizes)
    tok, model = smollm2_theta_o(data, args.device) if small else tiny_theta_o(data, args.device)
    delta = unlearning(model, tok, data, lr=3e-3 if small else 3e-2)
    print(f"TOFU subset {sizes}; setup {time.perf_counter() - start:.0f}s (wall)")
    run(args, model, tok, data, delta, repeats, tick)


def run(args, model, tok, data, delta, repeats: int, tick) -> None:
    cfg = dict(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    new, today = Evaluator(tok, data, EvalConfig(**cfg)), Evaluator(tok, data, EvalConfig(**cfg, reuse=False))
    print(f"{len(new.prompts)} prompts, {len(new.sequences)} distinct sequences, "
          f"prompt {sum(p.prompt_len for p in new.prompts) / len(new.prompts):.1f} tokens on average")
    new(model)  # warm-up: ROUGE stemmer, first-call allocations
    if not args.skip_today:
        single_evaluations(model, tok, data, new, today, cfg, repeats, tick)
    new_alpha, new_example, _ = timed_sweep(model, delta, new, tick)
    table = new_alpha[["alpha", "FS", "RS", "MU", "draft_accept", "decode_steps", "time"]].rename(columns={"time": "new_s"})
    table["plain_s"] = draft_policy(model, tok, data, delta, cfg, new_alpha, tick, with_always=args.always)
    if args.skip_today:
        print(f"\nnew sweep {new_alpha['time'].sum():.1f}s\n{table.to_string(index=False, float_format='%.3f')}")
        return
    today_alpha, today_example, _ = timed_sweep(model, delta, today, tick)
    eos = eos_ids(model, tok)
    floors = min_times({"tf": lambda: teacher_forced_floor(model, today), "gen": lambda: generation_floor(model, today, eos)},
                       repeats, tick)
    report_sweeps(table, new_alpha["time"].sum(), today_alpha["time"].to_numpy(), floors)
    differ = (new_example["generation"] != today_example["generation"]).groupby(new_example["alpha"]).sum()
    table.insert(len(table.columns) - 1, "today_s", today_alpha["time"].to_numpy())
    table["differ"] = differ.to_numpy()
    print(f"4. per α (differ: generations unlike today's plain greedy ones, out of {len(new.prompts)} prompts; "
          f"{int(differ.sum())} in all, fp32); numbers vs today: {compare_examples(new_example, today_example)}")
    print(table.to_string(index=False, float_format="%.3f"))
    if args.bf16:
        model.to(torch.bfloat16)
        start = tick()
        flips = generation_flips(model, delta, new, eos)
        print(f"5. bf16: {sum(flips)} draft-checked generations differ from plain greedy over 21 α x {len(new.prompts)} prompts "
              f"(per α: {flips}); {tick() - start:.0f}s")
    if args.eval_dtype:  # the paper configuration: bf16 weights, sweeps evaluated in eval_dtype
        model.to(torch.bfloat16)
        start = tick()
        with evaluated_in(model, args.eval_dtype):
            flips = generation_flips(model, delta, new, eos)
        print(f"6. bf16 weights swept in {args.eval_dtype} (eval_dtype): {sum(flips)} draft-checked generations differ "
              f"from plain greedy over 21 α x {len(new.prompts)} prompts (per α: {flips}); {tick() - start:.0f}s")


def draft_policy(model, tok, data, delta, cfg: dict, new_alpha: pd.DataFrame, tick, with_always: bool = True):
    """The new sweep (drafts where DraftPolicy finds they pay) vs the same sweep decoding plainly
    (no drafts, no guesses) and vs drafts always checked with 10 guessed tokens (the policy before).
    Returns the plain sweep's time per α."""
    from workbench.decoding import DraftPolicy

    plain, always = Evaluator(tok, data, EvalConfig(**cfg)), Evaluator(tok, data, EvalConfig(**cfg))
    plain.policy, always.policy = DraftPolicy(lookahead=0, adaptive=False), DraftPolicy(adaptive=False)
    plain_alpha, _, _ = timed_sweep(model, delta, lambda m, drafts=None: plain(m), tick)
    t_new, t_plain = (float(a["time"].sum()) for a in (new_alpha, plain_alpha))
    line = f"2b. drafts: adaptive sweep {t_new:.1f}s, plain decoding {t_plain:.1f}s ({t_plain / t_new:.2f}x; target >= 1.0x)"
    if with_always:
        t_always = float(timed_sweep(model, delta, always, tick)[0]["time"].sum())
        line += f", drafts always + 10 guesses {t_always:.1f}s ({t_always / t_new:.2f}x)"
    print(line)
    return plain_alpha["time"].to_numpy()


def report_sweeps(table: pd.DataFrame, t_new: float, today_times, floors: dict[str, float]) -> None:
    t_today = float(today_times.sum())
    floor = len(ALPHAS) * floors["tf"] + floors["gen"]
    print(f"\n2. 21-point sweep: today {t_today:.1f}s, new {t_new:.1f}s, speed-up {t_today / t_new:.2f}x (target >= 2x)")
    print(f"3. floors: teacher-forced {floors['tf']:.2f}s per evaluation, generation {floors['gen']:.2f}s at θo; "
          f"new sweep / (21 x {floors['tf']:.2f} + {floors['gen']:.2f}) = {t_new / floor:.2f} (target <= 1.2); "
          f"today's sweep / same = {t_today / floor:.2f}")


def single_evaluations(model, tok, data, new: Evaluator, today: Evaluator, cfg: dict, repeats: int, tick) -> None:
    scoring_new = Evaluator(tok, data, EvalConfig(**cfg, generate=False))
    scoring_today = Evaluator(tok, data, EvalConfig(**cfg, generate=False, reuse=False))
    t = min_times({"today": lambda: today(model), "new": lambda: new(model),
                   "score_today": lambda: scoring_today(model), "score_new": lambda: scoring_new(model)}, repeats, tick)
    print(f"1. one full evaluation at θo: today {t['today']:.2f}s, prompt once {t['new']:.2f}s, "
          f"speed-up {t['today'] / t['new']:.2f}x (target >= 1.3x); scoring alone (generate=False): "
          f"today {t['score_today']:.2f}s, prompt once {t['score_new']:.2f}s, speed-up {t['score_today'] / t['score_new']:.2f}x")


if __name__ == "__main__":
    main()
