"""GPU check at paper scale: restricted training and the mixing sweep on a Llama-3.1-8B- (or OLMo-2-7B-) shaped model.

Builds a *randomly initialised* model with Llama-3.1-8B's (``--arch olmo2``: OLMo-2-7B's) dimensions (no download) in bf16, trains
a 10% random region of value vectors (:class:`~workbench.delta.RegionDelta`, fp32) for a few steps
with :func:`workbench.training.train_region`, then runs the mixing sweep of SPEC §6
(``RegionDelta.mixed(α)`` for 21 α, one inference-mode forward over the evaluation batches each).
Prints peak GPU memory next to :func:`workbench.models.estimate_memory`'s prediction, the step time
and the evaluation throughput (tokens/s), and writes them as JSON with ``--out``. It then asserts its
own invariants (:func:`check`: finite losses, α = 0 is the base model, α = 1 equals the delta's
hooks, the delta changed the model, the delta size is what the estimate says, and on CUDA the
measured peak stays within the estimate) and exits non-zero if any fails.

    python benchmarks/gpu_check.py                      # one H100/H200, a few minutes
    python benchmarks/gpu_check.py --gradient-checkpointing --batch 16
    python benchmarks/gpu_check.py --tiny --device cpu  # small dims, checks the script on CPU
    python benchmarks/gpu_check.py --arch olmo2         # the same on an OLMo-2-7B-shaped model
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

from workbench.data.formatting import Encoded, collate
from workbench.models import GIB, estimate_memory, resolve_device, resolve_dtype
from workbench.objectives import forward_logits, mean_nll
from workbench.precision import enable_checkpointing
from workbench.regions import random_region
from workbench.training import TrainConfig, TrainSpec, train_region

LLAMA_31_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192,
                   rope_theta=500000.0, tie_word_embeddings=False)
OLMO_2_7B = dict(vocab_size=100352, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rope_theta=500000.0, tie_word_embeddings=False)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False)
# The paper's two architectures: config class, full shape, and what --tiny keeps of it (OLMo-2 has no GQA).
ARCHS = {"llama": ("LlamaConfig", LLAMA_31_8B, {}),
         "olmo2": ("Olmo2Config", OLMO_2_7B, {"num_key_value_heads": 4, "rope_theta": 500000.0})}
TINY_SIZES = dict(batch=4, seq_len=64, eval_batch=4, eval_batches=2, steps=3)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="small dims and sizes (CPU check of the script)")
    p.add_argument("--arch", default="llama", choices=sorted(ARCHS), help="Llama-3.1-8B or OLMo-2-7B shape")
    p.add_argument("--device", default="auto", help="auto (cuda when visible, else cpu), cuda, cpu")
    p.add_argument("--dtype", default="bfloat16", help="model weights; the delta is always fp32")
    p.add_argument("--fraction", type=float, default=0.1, help="region size, fraction of all value vectors")
    p.add_argument("--steps", type=int, default=5, help="timed training steps (after one warm-up step)")
    p.add_argument("--batch", type=int, default=8, help="training batch (sequences)")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--eval-batch", type=int, default=16)
    p.add_argument("--eval-batches", type=int, default=2, help="evaluation batches per α")
    p.add_argument("--alphas", type=int, default=21)
    p.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate of the region delta")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if args.tiny:
        defaults = {a.dest: a.default for a in p._actions}
        for key, value in TINY_SIZES.items():
            if getattr(args, key) == defaults[key]:
                setattr(args, key, value)
    return args


def model_config(arch: str, tiny: bool):
    """The transformers config of ``arch`` at full size, or its ``--tiny`` shape."""
    import transformers

    name, full, tiny_changes = ARCHS[arch]
    return getattr(transformers, name)(**({**TINY, **tiny_changes} if tiny else full))


def build_model(config, device: torch.device, dtype: torch.dtype):
    """Random weights created directly on ``device`` in ``dtype`` (no fp32 copy on the host)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def random_examples(n: int, seq_len: int, vocab: int, seed: int) -> list[Encoded]:
    gen = torch.Generator().manual_seed(seed)
    prompt = seq_len // 4
    return [Encoded(tuple(torch.randint(1, vocab, (seq_len,), generator=gen).tolist()), prompt) for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_bytes(device: torch.device) -> int:
    """Peak allocated GPU memory; on CPU the process's peak resident set (a looser number)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def train(model, args, device) -> tuple[object, dict]:
    vocab = model.config.vocab_size
    region = random_region(model, args.fraction, seed=0)
    data = random_examples(args.batch * (args.steps + 1), args.seq_len, vocab, seed=1)
    cfg = dict(lr=args.lr, epochs=1, batch_size=args.batch, seed=0)
    train_region(model, region, TrainSpec(data, TrainConfig(**cfg, max_steps=1), 0, progress=False))  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    spec = TrainSpec(data, TrainConfig(**cfg, max_steps=args.steps), 0, progress=False)
    delta, history = train_region(model, region, spec)
    sync(device)
    seconds = time.perf_counter() - start
    return delta, {"region_vectors": region.size, "delta_params": delta.num_trainable(), "steps": len(history),
                   "step_seconds": seconds / len(history), "train_peak_bytes": peak_bytes(device),
                   "losses": [h["loss"] for h in history]}


@torch.inference_mode()
def sweep(model, delta, args, device) -> dict:
    batches = [collate(random_examples(args.eval_batch, args.seq_len, model.config.vocab_size, seed=100 + i), 0)
               for i in range(args.eval_batches)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    base = [mean_nll(forward_logits(model, b), b["labels"]).item() for b in batches]
    nlls = []
    sync(device)
    start = time.perf_counter()
    for alpha in torch.linspace(0, 1, args.alphas).tolist():
        with delta.mixed(alpha):
            nlls.append(sum(mean_nll(forward_logits(model, b), b["labels"]).item() for b in batches) / len(batches))
    sync(device)
    seconds = time.perf_counter() - start
    with delta.attached():  # α = 1 through the fp32 hooks: what merging into bf16 weights may round away
        hooked = sum(mean_nll(forward_logits(model, b), b["labels"]).item() for b in batches) / len(batches)
    tokens = args.alphas * args.eval_batches * args.eval_batch * args.seq_len
    return {"alphas": args.alphas, "sweep_seconds": seconds, "eval_tokens_per_s": tokens / seconds,
            "nll_alpha0": nlls[0], "nll_alpha1": nlls[-1], "nll_alpha1_hooked": hooked,
            "alpha0_equals_base": math.isclose(nlls[0], sum(base) / len(base), rel_tol=1e-6),
            "sweep_peak_bytes": peak_bytes(device)}


def fmt_bytes(n: float) -> str:
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.1f} MiB"


def report(res: dict) -> str:
    est = res["estimate"]
    return "\n".join([
        (f"device           {res['device']}  ({res['gpu_name']}), {res['arch']} model {res['n_params'] / 1e9:.3f}B params, "
         f"{res['dtype']}"),
        f"region           {res['region_vectors']} value vectors = {res['delta_params']:,} fp32 delta parameters",
        f"training         {res['step_seconds']:.3f} s/step over {res['steps']} steps (batch {res['batch']}×{res['seq_len']},"
        f" checkpointing {res['gradient_checkpointing']}), loss {res['losses'][0]:.4f} → {res['losses'][-1]:.4f}",
        f"peak (training)  measured {fmt_bytes(res['train_peak_bytes'])}  |  estimate_memory {fmt_bytes(est['total_bytes'])}"
        f" ({fmt_bytes(est['total_bytes'] - est['overhead_bytes'])} without the fixed overhead)",
        f"estimate         {res['estimate']['summary']}",
        f"mixing sweep     {res['alphas']} α in {res['sweep_seconds']:.2f} s, {res['eval_tokens_per_s']:,.0f} tokens/s,"
        f" NLL α=0 {res['nll_alpha0']:.6f} → α=1 {res['nll_alpha1']:.6f} (fp32 hooks at α=1: {res['nll_alpha1_hooked']:.6f}),"
        f" α=0 equals base model: {res['alpha0_equals_base']}",
        f"peak (sweep)     {fmt_bytes(res['sweep_peak_bytes'])}   total wall {res['wall_seconds']:.1f} s",
    ])


PEAK_SLACK = 1.15  # measured peak may exceed the estimate by this factor before the check fails


def check(res: dict) -> list[str]:
    """The invariants a correct run satisfies; each failure is one line."""
    problems = []
    if not all(math.isfinite(x) for x in res["losses"]):
        problems.append(f"training losses are not finite: {res['losses']}")
    if not res["alpha0_equals_base"]:
        problems.append("the sweep at α = 0 differs from the base model (mixing does not restore θ_before)")
    if not math.isclose(res["nll_alpha1"], res["nll_alpha1_hooked"], rel_tol=1e-5):
        problems.append(f"α = 1 ({res['nll_alpha1']:.6f}) differs from the delta's hooks ({res['nll_alpha1_hooked']:.6f})")
    if res["nll_alpha1"] == res["nll_alpha0"]:
        problems.append("α = 1 equals α = 0: the trained delta did not change the model (rounded away?)")
    if res["delta_params"] != res["estimate"]["delta_params"]:
        problems.append(f"delta has {res['delta_params']} parameters, estimate_memory says {res['estimate']['delta_params']}")
    if res["device"].startswith("cuda") and res["train_peak_bytes"] > PEAK_SLACK * res["estimate"]["total_bytes"]:
        problems.append(f"peak {fmt_bytes(res['train_peak_bytes'])} exceeds {PEAK_SLACK}× the estimate "
                        f"{fmt_bytes(res['estimate']['total_bytes'])}")
    return problems


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    device, dtype = resolve_device(args.device), resolve_dtype(args.dtype)
    model = build_model(model_config(args.arch, args.tiny), device, dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    if args.gradient_checkpointing:
        enable_checkpointing(model)
    est = estimate_memory(model.config, args.fraction, args.batch, args.seq_len, dtype=args.dtype,
                          gradient_checkpointing=args.gradient_checkpointing)
    delta, trained = train(model, args, device)
    swept = sweep(model, delta, args, device)
    gpu_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    res = {"arch": args.arch, "device": str(device), "gpu_name": gpu_name,
           "dtype": args.dtype, "n_params": sum(p.numel() for p in model.parameters()), "batch": args.batch,
           "seq_len": args.seq_len, "gradient_checkpointing": args.gradient_checkpointing,
           **trained, **swept, "estimate": est,
           "wall_seconds": time.perf_counter() - start}
    print(report(res))
    res["problems"] = check(res)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1))
    print("\n".join(["checks           FAILED:"] + [f"  - {p}" for p in res["problems"]]) if res["problems"]
          else "checks           all passed")
    return res


if __name__ == "__main__":
    sys.exit(1 if main(sys.argv[1:])["problems"] else 0)
