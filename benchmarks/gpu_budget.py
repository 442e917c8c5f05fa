"""GPU budget of the paper notebooks: memory per stage and GPU-hours on one 80 GB GPU — an ESTIMATE.

For each ``params/<notebook>/paper-{llama,olmo}.yaml`` this reads the notebook's configuration (how
many θo, objectives, regions, epochs, α points), counts the tokens each stage processes from the data
(TOFU / LUME text at ``CHARS_PER_TOKEN`` characters per token plus the chat template's tokens), and
turns them into time:

* compute-bound passes: FLOPs = tokens × (2N forward; + 4N backward with trainable weights, + 2N
  backward through frozen weights to a region delta; + 2N recomputation with gradient checkpointing;
  + 2N per extra frozen model, e.g. π_ref or θr), at ``UTILISATION`` of the GPU's dense bf16 peak, or of
  its fp32 peak for sweeps evaluated in float32 (the paper files' ``eval_dtype``);
* greedy generation (ROUGE-L): memory-bound, one read of the weights per decoding step of a batch,
  at ``BANDWIDTH_EFFICIENCY`` of the GPU's memory bandwidth, generating ``GENERATED_TOKENS`` per answer
  (EOS stops answers early; 200 is the cap).

Memory per stage comes from :func:`workbench.models.estimate_memory` / ``estimate_eval_memory``.
Everything here is a model of the cost, not a measurement: treat the hours as ±50%.

    python benchmarks/gpu_budget.py                       # markdown table, H100 80 GB
    python benchmarks/gpu_budget.py --gpu a100 --json out.json
    python benchmarks/gpu_budget.py --eval-dtype bfloat16       # sweeps in bf16: the price of path-independent ones
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from gpu_check import model_config  # noqa: E402

from workbench.models import GIB, count_parameters, estimate_eval_memory, estimate_memory, fits  # noqa: E402
from workbench.models.memory import largest_batch  # noqa: E402
from workbench.runs import config as config_mod  # noqa: E402
from workbench.runs.paramfiles import merge_params  # noqa: E402

# ``memory``: what torch reports as the total of an "80 GB" card (about 79 GiB).
# ``flops``: dense bf16 tensor-core peak; ``flops_fp32``: plain fp32 (no TF32: it would round the small
# mixing steps away, as bf16 does), the rate of a sweep evaluated in float32 (``eval_dtype``).
GPUS = {"h100": {"name": "H100 80 GB (SXM)", "flops": 989e12, "flops_fp32": 67e12, "bandwidth": 3.35e12,
                 "memory": 79 * GIB},
        "a100": {"name": "A100 80 GB (SXM)", "flops": 312e12, "flops_fp32": 19.5e12, "bandwidth": 2.04e12,
                 "memory": 79 * GIB}}
UTILISATION = 0.40  # [assumption] model-FLOPs utilisation of training and scoring passes
BANDWIDTH_EFFICIENCY = 0.6  # [assumption] share of peak memory bandwidth a decoding step reaches
CHARS_PER_TOKEN = 4.0  # [assumption] English text with a 100k-128k vocabulary
TEMPLATE_TOKENS = {"llama": 30, "olmo": 8}  # chat-template tokens around one question (system header, roles)
GENERATED_TOKENS = 60  # [assumption] mean generated length before EOS (answers are 1-3 sentences)
TOFU_EVAL = {"forget10_perturbed": 400, "retain_perturbed": 400, "real_authors_perturbed": 100,
             "world_facts_perturbed": 117}
NOTEBOOKS = ["revisit-localizers", "oracle-vs-random", "l2-mlp-supervision", "lume"]
ARCH = {"llama": "llama", "olmo": "olmo2"}


@dataclass
class Stage:
    """One stage: what it runs, how often, and its cost."""

    name: str
    runs: int
    flops: float = 0.0  # all runs together
    decode_steps: int = 0  # all runs together
    memory: dict = field(default_factory=dict)
    fp32: bool = False  # computed in float32 (sweeps with eval_dtype float32): fp32 peak, 4-byte weights

    def hours(self, gpu: dict, n_params: int) -> float:
        compute = self.flops / (gpu["flops_fp32" if self.fp32 else "flops"] * UTILISATION)
        decode = self.decode_steps * n_params * (4 if self.fp32 else 2) / (gpu["bandwidth"] * BANDWIDTH_EFFICIENCY)
        return (compute + decode) / 3600


def tokens(text: str) -> float:
    return len(text) / CHARS_PER_TOKEN


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class Data:
    """Token counts of a data set's training and evaluation texts (for one model's template)."""

    def __init__(self, notebook_cfg, model: str, tofu: Path, lume: Path):
        over = TEMPLATE_TOKENS[model]
        if notebook_cfg.data == "lume":
            recs = rows(lume / "task2_forget.jsonl") + rows(lume / "task2_retain.jsonl")
            per = [tokens(r["input"]) + tokens(r["output"]) for r in recs]
            n_forget = round(len(recs) * notebook_cfg.forget_ratio * notebook_cfg.n_people / 500)
            mean = sum(per) / len(per)
            self.forget, self.retain = n_forget * mean, (len(recs) * notebook_cfg.n_people / 500 - n_forget) * mean
            self.n_forget, self.max_len = n_forget, max(per)
            self.eval_tokens, self.eval_prompts = self.forget + self.retain, len(recs) * notebook_cfg.n_people / 500
            self.full = self.forget + self.retain
            return
        qa = lambda r, ans: tokens(r["question"]) + over + tokens(ans) + 1  # noqa: E731
        self.retain = sum(qa(r, r["answer"]) for r in rows(tofu / "retain90.jsonl"))
        self.full = sum(qa(r, r["answer"]) for r in rows(tofu / "full.jsonl"))
        forget = rows(tofu / "forget10.jsonl")
        self.forget, self.n_forget = sum(qa(r, r["answer"]) for r in forget), len(forget)
        self.eval_tokens, self.eval_prompts, self.max_len = 0.0, 0, 0.0
        for split in TOFU_EVAL:
            for r in rows(tofu / f"{split}.jsonl"):
                answers = [r["answer"], r.get("paraphrased_answer") or r["answer"], *r.get("perturbed_answer", [])]
                self.eval_tokens += sum(qa(r, a) for a in answers)
                self.eval_prompts += 1
                self.max_len = max(self.max_len, *(qa(r, a) for a in answers))


def stages(nb: str, cfg, data: Data, n_params: int, mconfig, gpu_memory: float) -> list[Stage]:
    """The notebook's stages with the counts its configuration gives (sweeps at ``eval_batch_size``, 0: the
    largest batch that fits ``gpu_memory``, as ``EvalConfig(batch_size="auto")`` picks it)."""
    n, ckpt = n_params, 2 * n_params * bool(cfg.gradient_checkpointing)
    full_step, frozen_step = 6 * n + ckpt, 4 * n + ckpt  # per token: fwd + bwd (+ recompute)
    seq = 2 ** math.ceil(math.log2(data.max_len))  # padded length of the longest example, for memory
    mem_full = estimate_memory(mconfig, 0.0, cfg.batch_size, seq, dtype=cfg.dtype, mode="full",
                               gradient_checkpointing=cfg.gradient_checkpointing)
    mem_full2 = estimate_memory(mconfig, 0.0, cfg.batch_size // 2, seq, dtype=cfg.dtype, mode="full", shards=2,
                                gradient_checkpointing=cfg.gradient_checkpointing)
    mem_restricted = estimate_memory(mconfig, getattr(cfg, "region_fraction", 0.1), cfg.batch_size, seq,
                                     dtype=cfg.dtype, gradient_checkpointing=cfg.gradient_checkpointing)
    sweep_dtype = cfg.eval_dtype or cfg.dtype
    shape = {"prompt_len": seq, "answer_len": seq, "new_tokens": cfg.eval_max_new_tokens, "dtype": sweep_dtype}
    batch = cfg.eval_batch_size or largest_batch(mconfig, data.eval_prompts, 0.9 * gpu_memory, **shape)
    mem_eval = estimate_eval_memory(mconfig, batch=batch, **shape)
    one_sweep = Stage("sweep", 1, cfg.n_alpha * data.eval_tokens * 2 * n,
                      cfg.n_alpha * math.ceil(data.eval_prompts / batch) * min(GENERATED_TOKENS, cfg.eval_max_new_tokens),
                      mem_eval, fp32=sweep_dtype == "float32")
    out = [Stage("θr: full fine-tuning on the retain set", 1, data.retain * cfg.retain_epochs * full_step,
                 memory={"one GPU": mem_full, "two GPUs (FSDP)": mem_full2})]
    if nb == "revisit-localizers":
        out.append(Stage("θ_full: full fine-tuning on the full set", 1, data.full * cfg.full_epochs * full_step,
                         memory={"one GPU": mem_full, "two GPUs (FSDP)": mem_full2}))
        units = len(cfg.localizers) + len(cfg.random_seeds)
        out.append(Stage("localizers (gradients on forget + retain, ×3 for MemFlex)", len(cfg.localizers),
                         len(cfg.localizers) * 3 * (data.forget + data.retain) * (4 * n), memory={"": mem_restricted}))
        out.append(_unlearn(units, data, cfg.unlearn_epochs, frozen_step + 2 * n, mem_restricted, "NPO (π_ref forward)"))
        out.append(_sweeps(units, one_sweep))
        return out
    if nb == "l2-mlp-supervision":
        seeds, runs = len(cfg.oracle_seeds), len(cfg.oracle_seeds) * (1 + len(cfg.random_seeds))
        out.append(_inject(seeds, cfg, data, frozen_step, mem_restricted))
        out.append(_unlearn(runs, data, cfg.unlearn_epochs * 2, frozen_step + 2 * n, mem_restricted,
                            "L2 to θr's MLP outputs, forget + retain inputs (θr forward)"))
        out.append(_sweeps(runs, one_sweep))
        return out
    seeds = len(cfg.region_seeds)
    runs = seeds * len(cfg.objectives) * (1 + cfg.random_per_seed)
    out.append(_inject(seeds, cfg, data, frozen_step, mem_restricted))
    extra = {"npo": 2 * n, "dpo": 2 * n + frozen_step + 2 * n, "wga": 0, "rmu": 0}  # π_ref passes; DPO's 2nd sequence
    per_run = sum(frozen_step + extra.get(o, 0) for o in cfg.objectives) / len(cfg.objectives)
    out.append(_unlearn(runs, data, cfg.unlearn_epochs, per_run, mem_restricted, "/".join(cfg.objectives)))
    n_loc = len(getattr(cfg, "localizers", []))
    out.append(Stage("localizers on θo (beyond the paper)", seeds, seeds * n_loc * 3 *
                     (data.forget + data.retain) * 4 * n, memory={"": mem_restricted}))
    out.append(_sweeps(runs, one_sweep))
    return out


def _inject(seeds: int, cfg, data: Data, step: float, mem: dict) -> Stage:
    # each step: a forget batch and (λ_retain > 0) a retain batch of the same size
    per_epoch = data.forget * (2 if cfg.lambda_retain else 1)
    return Stage("θo: injection into V_tgt (restricted, forget + retain term)", seeds,
                 seeds * per_epoch * cfg.inject_epochs * step, memory={"": mem})


def _unlearn(runs: int, data: Data, epochs: int, step: float, mem: dict, what: str) -> Stage:
    return Stage(f"unlearning runs ({what}, restricted)", runs, runs * data.forget * epochs * step, memory={"": mem})


def _sweeps(runs: int, one: Stage) -> Stage:
    what = "in float32" if one.fp32 else "in bf16"
    return Stage(f"mixing sweeps {what} (scoring + greedy generation per α)", runs, runs * one.flops,
                 runs * one.decode_steps, {"": one.memory}, one.fp32)


def budget(gpu: dict, tofu: Path, lume: Path, eval_dtype: str | None = None) -> list[dict]:
    """One row per (notebook, model, stage): runs, memory, fits one GPU, GPU-hours."""
    out = []
    for nb in NOTEBOOKS:
        for model in ("llama", "olmo"):
            params = merge_params([str(ROOT / "params" / nb / f"paper-{model}.yaml")])
            cfg = config_mod.from_params(nb, params | ({"eval_dtype": eval_dtype} if eval_dtype else {}))
            mconfig = model_config(ARCH[model], tiny=False)
            n = count_parameters(mconfig)
            for st in stages(nb, cfg, Data(cfg, model, tofu, lume), n, mconfig, gpu["memory"]):
                memory = {k: v["total_bytes"] / GIB for k, v in st.memory.items()}
                fit = {k: fits(v, gpu["memory"]) for k, v in st.memory.items()}
                out.append({"notebook": nb, "model": model, "stage": st.name, "runs": st.runs,
                            "memory_gib": memory, "fits": fit, "gpu_hours": st.hours(gpu, n)})
    return out


def markdown(table: list[dict], gpu: dict) -> str:
    lines = [f"| notebook | model | stage | runs | memory per GPU (estimate) | GPU-hours on one {gpu['name']} (estimate) |",
             "| --- | --- | --- | ---: | --- | ---: |"]
    totals: dict[tuple[str, str], float] = {}
    for r in table:
        mem = "; ".join(f"{k + ': ' if k else ''}{v:.0f} GiB{'' if r['fits'][k] else ' (does not fit)'}"
                        for k, v in r["memory_gib"].items())
        lines.append(f"| {r['notebook']} | {r['model']} | {r['stage']} | {r['runs']} | {mem} | {r['gpu_hours']:.2f} |")
        totals[r["notebook"], r["model"]] = totals.get((r["notebook"], r["model"]), 0.0) + r["gpu_hours"]
    lines += ["", "| notebook | model | total GPU-hours (estimate) |", "| --- | --- | ---: |"]
    lines += [f"| {nb} | {m} | {h:.1f} |" for (nb, m), h in totals.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", default="h100", choices=sorted(GPUS))
    p.add_argument("--tofu", default=str(ROOT.parent / "shared" / "data" / "tofu"), help="local TOFU folder")
    p.add_argument("--lume", default=str(ROOT.parent / "shared" / "data" / "lume"), help="local LUME Task 2 folder")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--eval-dtype", default=None, choices=["float32", "bfloat16"],
                   help="sweeps in this dtype instead of the paper files' eval_dtype (bfloat16: ~9x cheaper, but greedy "
                        "generation then depends on the decoding path)")
    args = p.parse_args(argv)
    gpu = GPUS[args.gpu]
    table = budget(gpu, Path(args.tofu), Path(args.lume), args.eval_dtype)
    print(markdown(table, gpu))
    print(f"\nAssumptions: {UTILISATION:.0%} of {gpu['flops'] / 1e12:.0f} TFLOPS dense bf16 for training and scoring "
          f"(sweeps in float32: of {gpu['flops_fp32'] / 1e12:.0f} TFLOPS fp32), "
          f"{BANDWIDTH_EFFICIENCY:.0%} of {gpu['bandwidth'] / 1e12:.2f} TB/s for decoding (sweeps at the "
          f"parameter files' eval_batch_size, 0: the largest batch that fits; "
          f"{GENERATED_TOKENS} tokens per answer), {CHARS_PER_TOKEN:g} characters per token.")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
