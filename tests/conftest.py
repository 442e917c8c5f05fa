"""Shared fixtures: tiny random models built from configs, tiny data, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from workbench.data.formatting import Encoded

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$WORKBENCH_SHARED_DATA`` or ``../shared/data`` next to the checkout."""
    return Path(os.environ.get("WORKBENCH_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set WORKBENCH_SHARED_DATA to run real-data tests)")
    return path


def make_tiny(model_type: str = "llama", *, vocab: int = 64, d_model: int = 32, d_ff: int = 64, layers: int = 2, seed: int = 0):
    """A tiny random causal LM of the given architecture (CPU, fp32, eval mode)."""
    import transformers as tf

    configs = {
        "llama": lambda: tf.LlamaConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_ff,
                                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                                        max_position_embeddings=128, tie_word_embeddings=False),
        "gpt2": lambda: tf.GPT2Config(vocab_size=vocab, n_embd=d_model, n_inner=d_ff, n_layer=layers, n_head=4,
                                      n_positions=128, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
        "gpt_neox": lambda: tf.GPTNeoXConfig(vocab_size=vocab, hidden_size=d_model, intermediate_size=d_ff,
                                             num_hidden_layers=layers, num_attention_heads=4,
                                             max_position_embeddings=128, hidden_dropout=0.0, attention_dropout=0.0),
    }
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(configs[model_type]())
    model.eval()
    return model


@pytest.fixture
def tiny_llama_model():
    return make_tiny("llama")


def random_examples(n: int, *, vocab: int = 64, prompt: int = 4, answer: int = 6, seed: int = 0) -> list[Encoded]:
    """Random token sequences with a prompt part (labels −100) and an answer part; ids avoid pad 0."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        p = prompt + i % 2
        a = answer + i % 3
        ids = torch.randint(1, vocab, (p + a,), generator=gen).tolist()
        out.append(Encoded(tuple(ids), p))
    return out
