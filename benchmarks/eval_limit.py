"""One evaluation against the machine's limit: the previous schedule vs today's, measured in one run (issue 30).

For the open-unlearning parity model in the open-unlearning prompt format (TOFU rows, as
``benchmarks/ou_parity.py``) and for SmolLM2-135M-Instruct with its chat template (the same TOFU
rows, fewer of them), prints:

1. the time of one evaluation, previous schedule (``EvalConfig(common_prefix=False,
   continuous=False)``: sequences that do not start with their generation prompt scored whole;
   static generation batches, drafts always checked) vs today's, alternating old and new, as a
   ratio; and its scoring and generation parts (``Evaluator.seconds``);
2. tokens computed in scoring (fed through the model, padding included and not) vs tokens in the
   data (the distinct sequences' lengths);
3. decode steps vs total generated tokens ÷ batch size (the floor of a batch that never idles; or
   the longest generation, where that is longer);
4. achieved GFLOP/s (2 × non-embedding parameters per token fed, padding included, plus the LM
   head where logits are computed) as a share of this machine's measured matmul throughput
   (``torch.mm`` of the model's own MLP shape, the physical limit of these forwards), for scoring
   and for generation separately;
5. whether old and new agree: every generation, every per-example number to 1e-5.

Run: ``OMP_NUM_THREADS=1 python benchmarks/eval_limit.py [--model parity|smollm2|both] [--rows N]``.
Times are process CPU time (torch on one thread: what this process computed, which other users of
a shared machine do not inflate); compare the ratios, measured in one run with old and new alternating.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from workbench.data import subsample
from workbench.data.tofu import load_tofu
from workbench.evaluation import EvalConfig, Evaluator
from workbench.generation import PREFILL_SLACK, draft_groups
from workbench.models import count_parameters

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference" / "ou-parity"
TOFU = ROOT.parent / "shared" / "data" / "tofu"


def matmul_gflops(d: int, ff: int, rows: int = 512, repeats: int = 20) -> float:
    """Best GFLOP/s of ``[rows, d] @ [d, ff]`` in fp32 (the MLP matmul of a batch of tokens), process time."""
    a, b = torch.randn(rows, d), torch.randn(d, ff)
    best = math.inf
    for _ in range(repeats):
        start = time.process_time()
        for _ in range(5):
            a @ b
        best = min(best, (time.process_time() - start) / 5)
    return 2 * rows * d * ff / best / 1e9


def flops_per_token(config) -> tuple[float, float]:
    """(body, LM head) FLOPs per token: 2 × non-embedding parameters, and 2 × d × V."""
    head = config.hidden_size * config.vocab_size
    embedding = head  # the input embedding is a lookup, not a matmul
    return 2 * (count_parameters(config) - embedding - (0 if config.tie_word_embeddings else head)), 2 * head


def scoring_tokens(ev: Evaluator) -> dict[str, int]:
    """Tokens in the data and tokens the evaluator's scoring feeds, without and with padding."""
    data = sum(len(e.input_ids) for e in ev.sequences)
    if not ev.shared:
        fed = data
        padded = sum(batch["input_ids"].numel() for _, batch in ev.seq_batches)
        return {"data": data, "fed": fed, "padded": padded, "logits": padded}
    prefix = sum(int(batch["attention_mask"].sum()) for _, batch in ev.prefix_batches)
    prefix_padded = 0  # prompts of similar length are prefilled together (workbench.generation.prefill)
    for _, batch in ev.prefix_batches:
        lengths = batch["attention_mask"].sum(-1).tolist()
        prefix_padded += sum(len(g) * max(lengths[i] for i in g) for g in draft_groups(lengths, PREFILL_SLACK))
    cont = sum(int(c.mask.sum()) for chunks in ev.continuations for c in chunks)
    cont_padded = sum(c.mask.numel() for chunks in ev.continuations for c in chunks)
    return {"data": data, "fed": prefix + cont, "padded": prefix_padded + cont_padded, "logits": cont_padded}


def setup(name: str, rows: int):
    from workbench.models import load_pretrained

    data, _ = subsample(load_tofu(TOFU, forget_split="forget10"), rows, 0)
    if name == "parity":
        model, tok = load_pretrained(str(REFERENCE / "model"), device="cpu", dtype="float32", local_files_only=True)
        cfg = dict(prompt_format="open-unlearning", es_floor=True)
    else:
        from workbench.models.smollm import load_smollm2

        model, tok = load_smollm2(device="cpu")
        cfg = dict(prompt_format="open-unlearning", use_chat_template=True)
    return model.float().eval(), tok, data, cfg


def measure(name: str, rows: int, batch: int, repeats: int, peak: float) -> None:
    model, tok, data, cfg = setup(name, rows)
    body, head = flops_per_token(model.config)
    configs = {"old": dict(common_prefix=False, continuous=False), "new": {}}
    evs = {k: Evaluator(tok, data, EvalConfig(batch_size=batch, **cfg, **extra)) for k, extra in configs.items()}
    times = {(k, part): [] for k in configs for part in ("total", "scoring", "generation")}
    results = {}
    for _ in range(repeats):
        for k, ev in evs.items():  # old and new alternate
            start = time.process_time()
            results[k] = ev.evaluate(model)
            times[(k, "total")].append(time.process_time() - start)
            for part, seconds in ev.seconds.items():
                times[(k, part)].append(seconds)
    best = {key: min(t) for key, t in times.items()}
    ev = evs["new"]
    print(f"\n## {name}: {len(ev.prompts)} prompts, {len(ev.sequences)} distinct sequences, batch {batch}, "
          f"{cfg}; {body / 1e6:.1f} MFLOP per token + LM head {head / 1e6:.1f}")
    for k in configs:
        full, score, gen_s = best[(k, "total")], best[(k, "scoring")], best[(k, "generation")]
        tokens = scoring_tokens(evs[k])
        res = results[k]
        generated = sum(len(t) for t in res.generated_ids)
        steps = res.summary["decode_steps"]
        floor = max(max(len(t) for t in res.generated_ids) - 1, generated / batch)  # no idle row, no step wasted
        score_flop = tokens["padded"] * body + tokens["logits"] * head
        gen_flop = generated * (body + head)  # useful work only: one forward per generated token
        print(f"{k}: evaluation {full:.1f}s: scoring {score:.1f}s, generation {gen_s:.1f}s | scoring tokens: "
              f"data {tokens['data']:,}, fed {tokens['fed']:,} ({tokens['fed'] / tokens['data']:.2f}x), with padding "
              f"{tokens['padded']:,} | scoring {score_flop / score / 1e9:.1f} GFLOP/s = "
              f"{score_flop / score / 1e9 / peak:.2f} of peak"
              f" | generation: {generated:,} tokens, {steps:.0f} decode steps = {steps / floor:.2f}x "
              f"max(tokens / batch, longest), {gen_flop / gen_s / 1e9:.1f} GFLOP/s = {gen_flop / gen_s / 1e9 / peak:.2f} of peak")
    print("speed-up new vs old: " + ", ".join(f"{part} {best[('old', part)] / best[('new', part)]:.2f}x"
                                              for part in ("total", "scoring", "generation")))
    old, new = results["old"], results["new"]
    same = sum(a == b for a, b in zip(old.generated_ids, new.generated_ids))
    diff = max(np.nanmax(np.abs(old.per_example[c].to_numpy(float) - new.per_example[c].to_numpy(float)))
               for c in ("avg_nll", "truth_ratio", "es", "rougeL_recall"))
    print(f"agreement: generations {same}/{len(new.generated_ids)} identical; largest per-example difference {diff:.1e}")


def draft_costs(name: str, rows: int, batch: int, repeats: int) -> None:
    """Drafts that are mostly wrong (each prompt gets another prompt's generation): the adaptive
    policy vs plain decoding vs drafts always checked with 10 guesses, generation time per evaluation."""
    from workbench.decoding import DraftPolicy

    model, tok, data, cfg = setup(name, rows)
    policies = {"adaptive": DraftPolicy(), "plain": DraftPolicy(lookahead=0, adaptive=False),
                "always": DraftPolicy(adaptive=False)}
    evs = {k: Evaluator(tok, data, EvalConfig(batch_size=batch, truth_ratio=False, **cfg)) for k in policies}
    truth = evs["plain"].evaluate(model).generated_ids
    wrong = truth[1:] + truth[:1]
    times = {k: [] for k in policies}
    for _ in range(repeats):
        for k, ev in evs.items():
            ev.policy = policies[k]
            got = ev.evaluate(model, drafts=None if k == "plain" else wrong)
            assert got.generated_ids == truth
            times[k].append(ev.seconds["generation"])
    best = {k: min(t) for k, t in times.items()}
    print(f"\n## {name}, wrong drafts (another prompt's generation): generation {best['adaptive']:.2f}s adaptive, "
          f"{best['plain']:.2f}s plain ({best['plain'] / best['adaptive']:.2f}x), {best['always']:.2f}s drafts always + "
          f"10 guesses ({best['always'] / best['adaptive']:.2f}x); draft acceptance {got.summary['draft_accept']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="both", choices=["parity", "smollm2", "both"])
    parser.add_argument("--rows", type=int, default=0, help="TOFU rows per split (0: all for parity, 40 for SmolLM2)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--wrong-drafts", action="store_true", help="only the draft-policy check with wrong drafts")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name in (["parity", "smollm2"] if args.model == "both" else [args.model]):
        model, *_ = setup(name, 1)
        peak = matmul_gflops(model.config.hidden_size, model.config.intermediate_size)
        print(f"\nmeasured matmul throughput ({name} MLP shape, fp32): {peak:.1f} GFLOP/s")
        rows = args.rows or (None if name == "parity" else 40)
        if args.wrong_drafts:
            draft_costs(name, rows, args.batch, args.repeats)
            continue
        measure(name, rows, args.batch, args.repeats, peak)


if __name__ == "__main__":
    main()
