"""How much device memory each stage needs: weights, region deltas, full fine-tuning, activations.

Exact for weights, region deltas (parameters, gradients, two Adam moments, frozen copy) and full
training state; activations and logits are estimated. Used to say in advance whether a paper-scale
configuration fits a GPU (README, GPU section) and checked against real allocations in the tests.
"""

from __future__ import annotations

# -- memory estimate ------------------------------------------------------------------------------
GIB = 2**30
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ADAMW_BYTES_PER_DELTA_PARAM = 4 + 4 + 8  # fp32 parameter, its gradient, two fp32 Adam moments
# Full training: fp32 gradient + two fp32 AdamW moments per parameter, plus an fp32 master copy when
# the weights are stored in less than fp32 (workbench.precision.FP32Masters).
_FULL_STATE_BYTES = 4 + 8
_MASTER_BYTES = 4
# Per-layer norm weights beyond LLaMA's two d_model-sized RMSNorms (q/k norms), by model_type.
_EXTRA_NORMS = {"olmo2": lambda q_dim, kv_dim: q_dim + kv_dim}


def _dims(config) -> dict[str, int]:
    d, heads = config.hidden_size, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return {"d": d, "ff": config.intermediate_size, "L": config.num_hidden_layers, "V": config.vocab_size,
            "q": heads * head_dim, "kv": kv_heads * head_dim}


def count_parameters(config) -> int:
    """Exact parameter count of a LLaMA-shaped causal LM from its config (no weights needed)."""
    s = _dims(config)
    attn = s["d"] * s["q"] * 2 + s["d"] * s["kv"] * 2
    if getattr(config, "attention_bias", False):
        attn += s["q"] + 2 * s["kv"] + s["d"]  # q, k, v biases and the o bias
    mlp = 3 * s["d"] * s["ff"] + (2 * s["ff"] + s["d"] if getattr(config, "mlp_bias", False) else 0)
    norms = 2 * s["d"] + _EXTRA_NORMS.get(getattr(config, "model_type", ""), lambda q, kv: 0)(s["q"], s["kv"])
    head = 0 if getattr(config, "tie_word_embeddings", False) else s["V"] * s["d"]
    return s["V"] * s["d"] + s["L"] * (attn + mlp + norms) + s["d"] + head


def _activation_elems_per_token(s: dict[str, int], mode: str, fraction: float, checkpointing: bool) -> float:
    # Tensors autograd keeps per token and layer. Full training also keeps the inputs of every
    # matmul (for the weight gradients); with frozen weights only the nonlinearities, attention and
    # the region's slice of the MLP coefficients are kept.
    if mode == "full":
        layer = 6 * s["d"] + 2 * s["kv"] + 4 * s["ff"]
    else:
        layer = 4 * s["d"] + 2 * s["kv"] + (3 + fraction) * s["ff"]
    if checkpointing:  # one layer input per layer, plus one layer recomputed at a time
        return s["L"] * s["d"] + layer
    return s["L"] * layer


def estimate_memory(
    config,
    region_fraction: float,
    batch: int,
    seq_len: int,
    *,
    dtype: str = "bfloat16",
    mode: str = "restricted",
    gradient_checkpointing: bool = False,
    shards: int = 1,
    overhead_bytes: int = GIB,
) -> dict:
    """Peak GPU memory of one training step, per device, for a LLaMA-shaped ``config``.

    Exact parts: the weights (``count_parameters`` × dtype), the region delta of ``mode="restricted"``
    (``round(fraction·L·d_ff)`` value vectors × ``d_model``: fp32 parameter + gradient + two AdamW
    moments = 16 B each, plus the frozen ``P0`` copy in ``dtype``: what :class:`~workbench.delta.RegionDelta`
    and ``torch.optim.AdamW`` allocate) and, for ``mode="full"``, the training state of
    :func:`workbench.training.finetune`: an fp32 gradient and two fp32 AdamW moments per parameter
    (12 B) plus, when ``dtype`` is bf16/fp16, the fp32 master weights (4 B) that keep small updates
    (:mod:`workbench.precision`): 18 B per parameter with bf16 weights, 16 B in fp32. ``shards``
    divides weights, gradients and optimizer state of full training (FSDP full sharding over that
    many GPUs); restricted training replicates everything (DDP).

    Rough parts (±30%, **[choice]**, checked by ``benchmarks/gpu_check.py``): activations kept
    for backward for ``batch × seq_len`` tokens per device (see ``_activation_elems_per_token``),
    the logits with their fp32 log-softmax and its gradient (``dtype`` + 12 bytes per entry), and a
    fixed ``overhead_bytes`` for the CUDA context and allocator slack.

    Returns a dict of byte counts (``weights_bytes``, ``delta_bytes``, ``train_state_bytes``,
    ``activation_bytes``, ``logits_bytes``, ``overhead_bytes``, ``total_bytes``), the counts
    ``n_params``, ``region_vectors``, ``delta_params``, and a one-line ``summary``.
    """
    if mode not in ("restricted", "full"):
        raise ValueError(f"unknown mode {mode!r}; choose 'restricted' or 'full'")
    if dtype not in _BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(_BYTES)}")
    if not 0.0 <= region_fraction <= 1.0:
        raise ValueError(f"region_fraction must be in [0, 1], got {region_fraction}")
    s, b = _dims(config), _BYTES[dtype]
    n_params = count_parameters(config)
    region_vectors = round(region_fraction * s["L"] * s["ff"]) if mode == "restricted" else 0
    delta_params = region_vectors * s["d"]
    tokens = batch * seq_len
    est = {
        "mode": mode,
        "n_params": n_params,
        "region_vectors": region_vectors,
        "delta_params": delta_params,
        "weights_bytes": n_params * b // (shards if mode == "full" else 1),
        "delta_bytes": delta_params * (_ADAMW_BYTES_PER_DELTA_PARAM + b),
        "train_state_bytes": n_params * _full_state_bytes(dtype) // shards if mode == "full" else 0,
        "activation_bytes": int(tokens * b * _activation_elems_per_token(s, mode, region_fraction, gradient_checkpointing)),
        "logits_bytes": tokens * s["V"] * (b + 12),
        "overhead_bytes": overhead_bytes,
    }
    est["total_bytes"] = sum(v for k, v in est.items() if k.endswith("_bytes"))
    est["summary"] = _memory_summary(est, dtype, batch, seq_len, gradient_checkpointing, shards)
    return est


def _full_state_bytes(dtype: str) -> int:
    return _FULL_STATE_BYTES + (_MASTER_BYTES if dtype != "float32" else 0)


def _memory_summary(est: dict, dtype: str, batch: int, seq_len: int, checkpointing: bool, shards: int) -> str:
    parts = ", ".join(
        f"{k.removesuffix('_bytes')} {est[k] / GIB:.1f}"
        for k in ("weights_bytes", "delta_bytes", "train_state_bytes", "activation_bytes", "logits_bytes", "overhead_bytes")
        if est[k]
    )
    setup = f"{est['mode']}, {est['n_params'] / 1e9:.2f}B params in {dtype}, batch {batch}×{seq_len}"
    setup += ", checkpointing" if checkpointing else ""
    setup += f", {shards} shards" if shards > 1 and est["mode"] == "full" else ""
    return f"{est['total_bytes'] / GIB:.1f} GiB per device ({setup}): {parts} GiB"


def fits(estimate: dict, gpu_bytes: int, *, headroom: float = 0.95) -> bool:
    """Whether an :func:`estimate_memory` result fits in ``headroom`` × ``gpu_bytes`` of GPU memory."""
    return estimate["total_bytes"] <= headroom * gpu_bytes



def estimate_eval_memory(config, *, batch: int = 32, prompt_len: int = 128, answer_len: int = 128,
                         new_tokens: int = 200, dtype: str = "bfloat16", chunk_elements: int = 2**24,
                         overhead_bytes: int = GIB, lookahead: int = 10) -> dict:
    """Peak GPU memory of a mixing sweep of two full-parameter checkpoints (``evaluate_pair``).

    Exact: the weights of **one** model (θ_before's and θ_after's tensors stay in host memory or on
    disk) and the mixing slices (:class:`workbench.mixing.StateMixer`: θ_before's and θ_after's slice
    and their fp32 interpolation, ``3 × chunk_elements × 4`` bytes at most). A bound, for ``batch``
    rows of ``prompt_len``-token prompts: the KV caches alive at once (:mod:`workbench.decoding`) —
    a batch of prompts, its copy continued by the answers, the generation prompts waiting for a
    slot, and the decoding cache, preallocated at twice the attended columns (``prompt_len +
    new_tokens``) per slot plus one step's ``1 + lookahead`` columns, counted twice for the copy a
    resize makes. Rough **[choice]**: the logits of a batch of answers (model
    dtype plus the fp32 log-softmax and a float copy), plus ``overhead_bytes``. ``host_bytes``: a
    copy of θ_before in host memory when it was not read from a folder. Same keys as
    :func:`estimate_memory` where they apply, and a one-line ``summary``.
    """
    s, b = _dims(config), _BYTES[dtype]
    n_params = count_parameters(config)
    kv_per_token = s["L"] * 2 * s["kv"] * b
    decoding = 2 * (prompt_len + new_tokens) + 1 + lookahead
    est = {
        "mode": "evaluate",
        "n_params": n_params,
        "weights_bytes": n_params * b,
        "mixing_bytes": 3 * chunk_elements * 4,
        "kv_cache_bytes": batch * (3 * prompt_len + answer_len + 2 * decoding) * kv_per_token,
        "logits_bytes": batch * max(answer_len, 1 + lookahead) * s["V"] * (b + 8),
        "overhead_bytes": overhead_bytes,
    }
    est["total_bytes"] = sum(v for k, v in est.items() if k.endswith("_bytes"))
    est["host_bytes"] = n_params * b
    parts = ", ".join(f"{k.removesuffix('_bytes')} {est[k] / GIB:.1f}" for k in
                      ("weights_bytes", "mixing_bytes", "kv_cache_bytes", "logits_bytes", "overhead_bytes"))
    est["summary"] = (f"{est['total_bytes'] / GIB:.1f} GiB on the device (evaluate, {n_params / 1e9:.2f}B params in {dtype}, "
                      f"batch {batch}): {parts} GiB; host copy of θ_before {est['host_bytes'] / GIB:.1f} GiB unless read "
                      "from a folder")
    return est


def estimate_localization_memory(config, batch: int, seq_len: int, *, dtype: str = "bfloat16",
                                 gradient_checkpointing: bool = False, overhead_bytes: int = GIB) -> dict:
    """Peak memory of scoring value vectors by gradients (MemFlex, WAGLE; Activations needs less).

    Exact: the weights, the down-projection gradients in ``dtype`` and two fp32 accumulators of them
    (the forget and the retain mean gradient). Rough **[choice]**: activations as in restricted
    training of every value vector (:func:`estimate_memory` with ``region_fraction=1``), the logits,
    ``overhead_bytes``. Same keys as :func:`estimate_memory`.
    """
    est = estimate_memory(config, 1.0, batch, seq_len, dtype=dtype, gradient_checkpointing=gradient_checkpointing,
                          overhead_bytes=overhead_bytes)
    s = _dims(config)
    est["delta_bytes"] = s["L"] * s["ff"] * s["d"] * (_BYTES[dtype] + 2 * 4)
    est["mode"] = "localize"
    est["total_bytes"] = sum(v for k, v in est.items() if k.endswith("_bytes") and k != "total_bytes")
    est["summary"] = _memory_summary(est, dtype, batch, seq_len, gradient_checkpointing, 1)
    return est


# -- checking a stage against the device ------------------------------------------------------------
class DoesNotFit(MemoryError):
    """A stage's memory estimate exceeds what its device has; the message names stage, need, memory and fix."""


def device_memory(device) -> tuple[int, str]:
    """Bytes this process can use on ``device``, and how that was measured.

    CUDA: free memory (``torch.cuda.mem_get_info``) plus what this process's allocator already holds
    (``memory_reserved``: a loaded model counts in the estimates, so it must count here too). CPU
    **[choice]**: the RAM the OS reports available (``MemAvailable``) plus this process's resident
    memory, the most this process could hold without swapping. Elsewhere (MPS) torch's recommended
    maximum, else the CPU rule.
    """
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device), f"{torch.cuda.get_device_name(device)}: free + held by this process"
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        return torch.mps.recommended_max_memory(), "MPS recommended maximum"
    return _available_ram() + _resident_bytes(), "CPU RAM: available + held by this process"


def _available_ram() -> int:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def _resident_bytes() -> int:
    import os

    try:
        return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def require_fits(stages: list[tuple[str, dict, str]], device, *, headroom: float = 0.95) -> None:
    """Raise :class:`DoesNotFit` naming every ``(stage, estimate, fix)`` whose estimate exceeds
    ``headroom`` × :func:`device_memory` of ``device``; return quietly when all fit."""
    if not stages:
        return
    available, how = device_memory(device)
    over = [(name, est, fix) for name, est, fix in stages if not fits(est, available, headroom=headroom)]
    if over:
        lines = [f"{name} needs {est['summary']}. {fix}"
                 for name, est, fix in over]
        raise DoesNotFit(f"does not fit {device} ({available / GIB:.1f} GiB, {how}; {headroom:.0%} usable), "
                         "stopped before any work:\n  " + "\n  ".join(lines))


def eval_batch_size(model, n_prompts: int, *, prompt_len: int, answer_len: int, new_tokens: int,
                    cpu_batch: int = 32, headroom: float = 0.9) -> int:
    """``EvalConfig(batch_size="auto")``: the largest batch whose :func:`estimate_eval_memory` fits in
    ``headroom`` × the GPU's memory (no larger than ``n_prompts``).

    On a CPU memory is rarely the limit and a batch beyond a few dozen rows gains nothing (each step
    is compute-bound), so ``cpu_batch`` (**[choice]**) is used there.
    """
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return max(1, min(cpu_batch, n_prompts))
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    total = torch.cuda.get_device_properties(device).total_memory
    return largest_batch(model.config, n_prompts, headroom * total, prompt_len=prompt_len, answer_len=answer_len,
                         new_tokens=new_tokens, dtype=dtype if dtype in _BYTES else "float32")


def largest_batch(config, n_prompts: int, budget_bytes: float, **shape) -> int:
    """The largest batch (≤ ``n_prompts``) whose :func:`estimate_eval_memory` (``shape``: its other
    arguments) is within ``budget_bytes``; a clear error when not even one row is."""
    def fits_batch(batch: int) -> bool:
        return estimate_eval_memory(config, batch=batch, **shape)["total_bytes"] <= budget_bytes

    if not fits_batch(1):
        summary = estimate_eval_memory(config, batch=1, **shape)["summary"]
        raise MemoryError(f"evaluation does not fit this GPU even at batch 1 ({summary}); "
                          "evaluate on a larger GPU or lower max_new_tokens / max_length")
    low, high = 1, max(1, n_prompts)
    while low < high:  # the largest batch that fits
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits_batch(mid) else (low, mid - 1)
    return low
