"""Restricted vs dense masked training on SmolLM2-135M-Instruct: memory and step time.

Restricted training (:func:`workbench.training.train_region`) trains a dense fp32 ``[k_ℓ, d_model]``
copy of the region's value vectors per layer, so its gradients and AdamW moments scale with the
region. The reference, dense masked training (:func:`workbench.dense_masked.train_dense_masked`),
trains the full down-projection matrices behind a gradient mask: full-size gradients and moments.
With a 10% random region the first should hold about a tenth of the second's gradient and
optimizer bytes (target: at least 5× fewer) and be no slower per step.

Each mode runs in its own subprocess so that their peak resident memory is measured separately;
the parent prints one table and the ratios. Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/restricted_training.py --steps 5

SmolLM2 is converted from its GGUF file on first use and cached (see :mod:`workbench.models.smollm`).
Sequences are TOFU forget10 questions when the shared data folder is present, synthetic ones
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOFU_DIR = Path(os.environ.get("WORKBENCH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "tofu"


def _rss_now_and_reset_peak() -> int:
    """Current RSS in bytes; also resets the kernel's peak-RSS mark (Linux ≥ 4.0) so that the
    peak read after training excludes the model-loading transients."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_bytes("VmRSS")


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _examples(tokenizer, n: int):
    from workbench.data import load_data
    from workbench.data.formatting import encode_all

    authors = min(20, -(-n // 20))  # whole authors of 20 questions, enough for n examples
    if TOFU_DIR.is_dir():
        data = load_data("tofu", source=TOFU_DIR, n_retain_authors=1, n_forget_authors=authors)
    else:
        data = load_data("synthetic-tofu")
    return encode_all(tokenizer, data.forget[:n], max_length=256)


def _tensor_bytes(t) -> int:
    return t.numel() * t.element_size() if t is not None else 0


def _grad_and_state_bytes(optimizer) -> int:
    """Bytes of the gradients of the optimizer's parameters plus every tensor in its state."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = sum(_tensor_bytes(v) for s in optimizer.state.values() for v in s.values() if hasattr(v, "numel"))
    return sum(_tensor_bytes(p.grad) for p in params) + state


def run_mode(mode: str, steps: int, batch_size: int, fraction: float) -> dict:
    """Train one mode in this process and return its measurements."""
    import torch

    from workbench import dense_masked, training
    from workbench.data.formatting import pad_id
    from workbench.models.smollm import load_smollm2
    from workbench.regions import random_region

    model, tokenizer = load_smollm2(device="cpu")
    region = random_region(model, fraction, seed=0)
    data = _examples(tokenizer, batch_size * steps)
    trainers = {"restricted": training.train_region, "dense_masked": dense_masked.train_dense_masked}
    optimizers, step_ends = [], []
    make = training.make_optimizer

    def recording_make_optimizer(params, cfg):  # run_loop builds its optimizer inside: keep a handle
        optimizers.append(make(params, cfg))
        optimizers[-1].register_step_post_hook(lambda *_: step_ends.append((time.perf_counter(), time.process_time())))
        return optimizers[-1]

    training.make_optimizer = recording_make_optimizer
    warmup = training.TrainConfig(lr=1e-5, epochs=1, batch_size=batch_size, max_steps=1)
    trainers[mode](model, region, data[:batch_size], warmup, pad_id(tokenizer), progress=False)
    optimizers.clear()
    step_ends.clear()
    rss_before = _rss_now_and_reset_peak()
    cfg = training.TrainConfig(lr=1e-5, epochs=1, batch_size=batch_size, max_steps=steps)
    start = (time.perf_counter(), time.process_time())
    trainers[mode](model, region, data, cfg, pad_id(tokenizer), progress=False)
    # Medians resist other processes briefly taking the CPU; CPU time resists a busy shared machine.
    marks = [start, *step_ends]
    wall, cpu = (statistics.median(b[i] - a[i] for a, b in zip(marks, marks[1:])) for i in (0, 1))
    return {
        "mode": mode,
        "region_vectors": region.size,
        "tokens_per_batch": int(sum(len(e.input_ids) for e in data) / steps),
        "grad_optimizer_bytes": _grad_and_state_bytes(optimizers[0]),
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": _status_bytes("VmHWM"),
        "step_seconds": wall,
        "step_cpu_seconds": cpu,
        "threads": torch.get_num_threads(),
    }


def _child(mode: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--fraction", str(args.fraction)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(results: dict[str, dict]) -> None:
    mib = 2**20
    print(f"{'mode':<14}{'grad+optim MiB':>16}{'RSS before MiB':>16}{'peak RSS MiB':>14}{'median s/step':>15}{'CPU s/step':>12}")
    for r in results.values():
        print(f"{r['mode']:<14}{r['grad_optimizer_bytes'] / mib:>16.1f}{r['rss_before_bytes'] / mib:>16.1f}"
              f"{r['peak_rss_bytes'] / mib:>14.1f}{r['step_seconds']:>15.2f}{r['step_cpu_seconds']:>12.2f}")
    rest, dense = results["restricted"], results["dense_masked"]
    print(f"region: {rest['region_vectors']} value vectors; ~{rest['tokens_per_batch']} tokens per batch; "
          f"{rest['threads']} thread(s)")
    print("grad+optimizer bytes: dense / restricted = "
          f"{dense['grad_optimizer_bytes'] / rest['grad_optimizer_bytes']:.1f}x (target >= 5x)")
    print(f"peak RSS: dense / restricted = {dense['peak_rss_bytes'] / rest['peak_rss_bytes']:.2f}x")
    print(f"step time: restricted / dense = {rest['step_seconds'] / dense['step_seconds']:.2f} wall, "
          f"{rest['step_cpu_seconds'] / dense['step_cpu_seconds']:.2f} CPU (target <= 1)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--child", choices=["restricted", "dense_masked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args.steps, args.batch_size, args.fraction)))
        return
    report({mode: _child(mode, args) for mode in ("restricted", "dense_masked")})


if __name__ == "__main__":
    main()
