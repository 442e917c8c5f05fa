"""Memory pre-flight: a run that cannot fit its device stops at minute 0, not at hour 3.

Each stage of a run (θr / θ_full fine-tuning, injection, unlearning with each objective, each
localizer, the mixing sweeps) is estimated with :mod:`workbench.models.memory` on the model's own
config and the longest encoded example of the data, and compared with the memory of the device it
will run on (:func:`workbench.models.device_memory`: on CUDA free plus what this process holds, on
the CPU available RAM plus what this process holds). :func:`preflight` checks every stage as soon as
the first model of a session is loaded, before any training; :func:`stage_fits` checks one stage again
right before its work (memory another process took meanwhile); :func:`evaluate_fits` does both for
``evaluate_pair``. A refusal (:class:`workbench.models.DoesNotFit`) names the stage, its estimate,
the device's memory and what to change. The estimates are exact for weights and optimizer state and
rough (±30%) for activations and logits; ``headroom`` keeps 5% back.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from workbench import objectives as obj
from workbench.experiments.chain import THETA, finetune_stage, max_length
from workbench.models import (
    check_single_device,
    estimate_eval_memory,
    estimate_memory,
    require_fits,
    resolve_device,
    use_deterministic,
)
from workbench.models.checkpoints import is_adapter
from workbench.models.memory import GIB, estimate_localization_memory
from workbench.runs.config import method_params


def memory_stages(cfg, config, seq_len: int, *, base: str = "retain") -> dict[str, tuple[dict, str]]:
    """``{stage: (estimate, fix)}`` for every stage of a run of ``cfg`` on a model with HF ``config``
    and ``seq_len`` tokens per example. Training stages take ``batch_size`` rows, twice where a retain
    batch (or DPO's pair) comes along; objectives that keep a frozen θr (``needs_reference_model``) add
    its weights to every training stage after θr (sweeps park it on the host). θr / θ_full are counted
    unless brought (``retain_model`` / ``full_model``); θ_full only with ``base="full"``."""
    b, ckpt, fraction = cfg.batch_size, cfg.gradient_checkpointing, getattr(cfg, "region_fraction", 0.1)
    train = {"dtype": cfg.dtype, "gradient_checkpointing": ckpt}
    smaller = (f"lower batch_size (now {b}){'' if ckpt else ', set gradient_checkpointing=true'} or region_fraction "
               f"(now {fraction}), or use a device with more memory")
    stages = {THETA[w]: finetune_stage(cfg, config, seq_len, w)
              for w in (("retain", "full") if base == "full" else ("retain",)) if not getattr(cfg, f"{w}_model", "")}
    if hasattr(cfg, "inject_lr"):
        stages["injection"] = (estimate_memory(config, fraction, 2 * b, seq_len, **train), smaller)
    for objective in cfg.methods("objective"):
        stages[f"unlearning with {objective}"] = (estimate_memory(config, fraction, 2 * b, seq_len, **train), smaller)
    for localizer in getattr(cfg, "localizers", None) or []:
        lb = method_params(cfg, "localizer", localizer).get("batch_size", 8)
        stages[f"localization with {localizer}"] = (estimate_localization_memory(config, lb, seq_len, **train),
                                                    f"lower {localizer}_batch_size (now {lb})")
    sweep_dtype = getattr(cfg, "eval_dtype", "") or cfg.dtype  # sweeps run in eval_dtype when it is set
    batch = cfg.eval_batch_size or 1  # "auto" (0) takes the largest batch that fits, at least 1
    stages["sweeps"] = (_eval_estimate(config, seq_len, cfg.eval_max_new_tokens if cfg.eval_generate else 0, sweep_dtype,
                                       batch),
                        f"set eval_batch_size=0 (the largest batch that fits) or lower it (now {cfg.eval_batch_size}), "
                        f"lower eval_max_new_tokens (now {cfg.eval_max_new_tokens})"
                        + (" or use eval_dtype bfloat16 (greedy generation then depends on the decoding path)"
                           if sweep_dtype == "float32" else ""))
    if any(obj.objective_class(o).needs_reference_model for o in cfg.methods("objective")):
        for stage, (est, _) in stages.items():
            if stage not in (*THETA.values(), "sweeps"):  # sweeps park it on the host (session.parked)
                _add(est, "reference_bytes", est["n_params"] * (4 if cfg.dtype == "float32" else 2), "frozen θr copy")
    return stages


def _eval_estimate(config, seq_len: int, new_tokens: int, dtype: str, batch: int) -> dict:
    return estimate_eval_memory(config, batch=batch, prompt_len=seq_len, answer_len=seq_len,
                                new_tokens=new_tokens, dtype=dtype)


def _add(est: dict, key: str, n_bytes: int, what: str) -> None:
    est[key] = n_bytes
    est["total_bytes"] += n_bytes
    rest = est["summary"].split(" GiB", 1)[1]
    est["summary"] = f"{est['total_bytes'] / GIB:.1f} GiB{rest}, {what} {n_bytes / GIB:.1f} GiB"


def preflight(cfg, data, model, tokenizer, *, base: str = "retain") -> None:
    """Refuse the run before any work when a stage's memory estimate exceeds the model's device."""
    device = check_single_device(model)
    seq_len = max_length(_encoded(tokenizer, data))
    require_fits([(name, est, fix) for name, (est, fix) in memory_stages(cfg, model.config, seq_len, base=base).items()],
                 device)


def _encoded(tokenizer, data) -> list:
    from workbench.data.formatting import encode_all

    return encode_all(tokenizer, data.full + list(data.pretrain or []))


def stage_fits(cfg, model, seq_len: int, stage: str) -> None:
    """Refuse ``stage`` (a key of :func:`memory_stages`) when it does not fit the model's device now."""
    stages = memory_stages(cfg, model.config, seq_len, base="full")
    if stage in stages:  # a stage the run's parameters do not list (a caller's own objective) is not estimated
        require_fits([(stage, *stages[stage])], next(model.parameters()).device)


def evaluate_fits(before, data, eval_config: Any, *, device: str = "auto", dtype: str = "float32",
                  trust_remote_code: bool = False) -> None:
    """``evaluate_pair``'s pre-flight, before any model is loaded: deterministic kernels on CUDA
    (:func:`workbench.models.use_deterministic`), a loaded ``before`` on one device, and a sweep of a
    model of ``before``'s config (its ``config.json`` only is read) fits ``device``.
    Examples are taken at one token per 3 characters plus 32 for a chat template **[choice]**: no
    tokenizer is loaded yet, and English BPE averages about 4."""
    if is_adapter(before):
        return  # refused with its own message when loaded
    if isinstance(before, nn.Module):
        where, config = check_single_device(before), before.config
        dtype = str(next(before.parameters()).dtype).removeprefix("torch.")
    else:
        from transformers import AutoConfig

        where, config = resolve_device(device), AutoConfig.from_pretrained(str(before), trust_remote_code=trust_remote_code)
    use_deterministic(where)
    longest = max((len(q.question) + len(q.answer) for q in data.forget + data.retain_eval), default=1)
    seq_len = min(eval_config.max_length, longest // 3 + 32)
    new = eval_config.max_new_tokens if eval_config.generate else 0
    est = estimate_eval_memory(config, batch=eval_config.batch_size, prompt_len=seq_len, answer_len=seq_len,
                               new_tokens=new, dtype=dtype)
    fix = (f"lower the evaluation batch size (now {eval_config.batch_size}) or max_new_tokens (now "
           f"{eval_config.max_new_tokens})" + (", or evaluate in bfloat16" if dtype == "float32" else ""))
    require_fits([("evaluate (mixing sweeps)", est, fix)], where)
