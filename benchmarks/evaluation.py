"""Evaluation cost against its floors, measured in one run and printed as ratios.

1. ES evaluation (``EvalConfig(generate=False, truth_ratio=False)``) vs a bare forward over the same
   batches (target ≤ 1.15×).
2. One-pass ES vs a generation-based reference (batched binary search over the prefix length k,
   one left-padded greedy ``generate`` per step, as in Wang et al.'s code) — identical values,
   target ≥ 10× faster.
3. A 21-point mixing sweep vs 21 single evaluations of the same evaluator (target ≤ 1.1×).
4. The whole evaluation suite vs its primitive floor: one bare forward per distinct (prompt, answer)
   sequence + bare batched greedy generation of every distinct prompt (target ≤ 1.1×).

Run:  ``OMP_NUM_THREADS=1 python benchmarks/evaluation.py [--model tiny|smollm2] [--device auto]``.
Times are the minimum over ``--repeats`` interleaved runs; on CPU they are process CPU time, which
other users of a shared machine do not inflate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from workbench.data.formatting import (
    Encoded,
    collate_prompts,
    encode,
    encode_all,
    pad_id,
)
from workbench.data.synthetic import synthetic_tofu
from workbench.evaluation import EvalConfig, Evaluator, eos_ids
from workbench.mixing import mixing_sweep
from workbench.regions import random_region
from workbench.training import TrainConfig, TrainSpec, finetune, train_region


def _clock(device: str):
    """CPU: process time (robust on a shared machine; torch runs single-threaded here). GPU: wall time."""
    if device.startswith("cuda"):
        def clock() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return clock
    return time.process_time


def best_times(fns: dict, repeats: int, device: str) -> dict[str, float]:
    """Minimum time of each callable over ``repeats`` rounds, the callables interleaved within a round."""
    clock, times = _clock(device), {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = clock()
            fn()
            times[name].append(clock() - start)
    return {name: min(t) for name, t in times.items()}


def tiny_setup(device: str):
    from workbench.models import TinyLlamaConfig, tiny_llama, train_bpe_tokenizer

    data = synthetic_tofu(n_authors=10, n_forget_authors=2)
    texts = [f"{e.question} {e.answer} {e.paraphrased_answer or ''} {' '.join(e.perturbed_answers)}"
             for split in data.splits().values() for e in split]
    tok = train_bpe_tokenizer(texts, vocab_size=1024)
    model = tiny_llama(TinyLlamaConfig(n_layers=4, d_model=128, d_ff=512), tok).to(device)
    finetune(model, encode_all(tok, data.full + data.pretrain), TrainConfig(lr=3e-3, epochs=12, batch_size=16),
             pad_id(tok), progress=False)
    return tok, model, data


def smollm2_setup(device: str, n: int):
    from workbench.models.smollm import load_smollm2

    model, tok = load_smollm2(device=device)
    data = synthetic_tofu(n_authors=10, n_forget_authors=2)
    for split in ("forget", "retain_eval", "real_authors", "world_facts"):
        setattr(data, split, getattr(data, split)[:n])
    return tok, model, data


@torch.inference_mode()
def bare_forwards(model, batches) -> None:
    device = next(model.parameters()).device
    for _, batch in batches:
        model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits


@torch.inference_mode()
def bare_generation(model, batches, eos, pad, max_new_tokens) -> None:
    device = next(model.parameters()).device
    for _, batch in batches:
        model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                       do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad)


@torch.inference_mode()
def generation_es(model, encoded: list[Encoded], pad: int, eos: list[int], batch_size: int, *,
                  search: str = "binary") -> np.ndarray:
    """Reference ES: the smallest k with greedy(x, y_<k) == y_≥k, by batched generation.

    ``search="binary"`` bisects k (valid k are upward-closed; Wang et al.'s code); ``"linear"`` tries
    every prefix k = 0, 1, … until one matches (the definition, as the tests write it).
    """
    device = next(model.parameters()).device
    ys = [list(e.input_ids[e.prompt_len : -1]) for e in encoded]
    lo, hi = np.zeros(len(ys), dtype=int), np.array([len(y) for y in ys])
    while (lo < hi).any():
        active = np.flatnonzero(lo < hi)
        mid = (lo + hi) // 2 if search == "binary" else lo.copy()
        for start in range(0, len(active), batch_size):
            rows = active[start : start + batch_size]
            ctx = [Encoded(tuple(encoded[r].prompt_ids) + tuple(ys[r][: mid[r]]), encoded[r].prompt_len + mid[r]) for r in rows]
            batch = collate_prompts(ctx, pad)
            steps = max(len(ys[r]) - mid[r] for r in rows)
            out = model.generate(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                                 do_sample=False, max_new_tokens=int(steps),
                                 eos_token_id=eos, pad_token_id=pad)[:, batch["input_ids"].shape[1] :].tolist()
            for r, new in zip(rows, out):
                if new[: len(ys[r]) - mid[r]] == ys[r][mid[r] :]:
                    hi[r] = mid[r]
                else:
                    lo[r] = mid[r] + 1
    return 1 - lo / np.array([len(y) for y in ys])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--n", type=int, default=16, help="examples per split (smollm2 only)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(1)
    start = time.perf_counter()
    tok, model, data = tiny_setup(args.device) if args.model == "tiny" else smollm2_setup(args.device, args.n)
    print(f"setup {time.perf_counter() - start:.1f}s")
    pad, eos = pad_id(tok), eos_ids(model, tok)
    print(f"model={args.model} device={args.device} splits={ {k: len(v) for k, v in data.splits().items() if k != 'pretrain'} }")
    bs = args.batch_size

    # 1. ES evaluation vs bare forward over the same batches
    es_eval = Evaluator(tok, data, EvalConfig(batch_size=bs, generate=False, truth_ratio=False, splits=("forget", "retain_eval")))
    t = best_times({"es": lambda: es_eval(model), "bare": lambda: bare_forwards(model, es_eval.seq_batches)}, args.repeats,
                   args.device)
    t_es, t_bare = t["es"], t["bare"]
    print(f"1. ES evaluation {t_es:.3f}s  bare forward {t_bare:.3f}s  ratio {t_es / t_bare:.2f}x  (target <= 1.15x)")

    # 2. one-pass ES vs generation-based reference
    encoded = [encode(tok, e.question, e.answer) for e in data.forget + data.retain_eval]
    one_pass = es_eval(model).per_example["es"].to_numpy()
    for search in ("binary", "linear"):
        clock = _clock(args.device)
        start = clock()
        reference = generation_es(model, encoded, pad, eos, bs, search=search)
        t_gen = clock() - start
        diff = np.abs(one_pass - reference).max()
        print(f"2. one-pass ES {t_es:.3f}s  generation ES ({search} search over k) {t_gen:.3f}s  speed-up {t_gen / t_es:.1f}x  "
              f"identical={bool(diff < 1e-6)} (max |diff| {diff:.1e}; ES from {one_pass.min():.2f} to {one_pass.max():.2f}, "
              f"mean {one_pass.mean():.2f})  (target >= 10x)")

    # 3. 21-point mixing sweep vs 21 single evaluations
    spec = TrainSpec(encode_all(tok, data.forget), TrainConfig(lr=1e-3, epochs=1, batch_size=8), pad, objective="ga",
                     progress=False)
    delta, _ = train_region(model, random_region(model, 0.1, seed=0), spec)
    t = best_times({"sweep": lambda: mixing_sweep(model, delta, es_eval, progress=False),
                    "single": lambda: [es_eval(model) for _ in range(21)]}, args.repeats, args.device)
    t_sweep, t_single = t["sweep"], t["single"]
    print(f"3. mixing sweep (21 alphas, ES evaluator) {t_sweep:.3f}s  21 single evaluations {t_single:.3f}s  "
          f"ratio {t_sweep / t_single:.2f}x  (target <= 1.1x)")

    # 4. whole suite vs primitive floor
    full = Evaluator(tok, data, EvalConfig(batch_size=bs, max_new_tokens=args.max_new_tokens))
    full(model)  # warm the ROUGE cache's stemmer import
    t = best_times({"full": lambda: full(model), "fwd": lambda: bare_forwards(model, full.seq_batches),
                    "gen": lambda: bare_generation(model, full.prompt_batches, eos, pad, args.max_new_tokens)},
                   args.repeats, args.device)
    t_full, t_fwd, t_gen = t["full"], t["fwd"], t["gen"]
    floor = t_fwd + t_gen
    print(f"4. full suite {t_full:.3f}s  floor {floor:.3f}s (forwards {t_fwd:.3f}s over {len(full.sequences)} distinct "
          f"sequences + generation {t_gen:.3f}s over {len(full.prompts)} prompts)  ratio {t_full / floor:.2f}x  (target <= 1.1x)")


if __name__ == "__main__":
    main()
