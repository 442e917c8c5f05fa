"""The tiny LLaMA: a LLaMA built from a config, with a byte-level BPE tokenizer trained on the data.

SPEC §9: tests and default runs must work offline and in seconds, so the workbench builds its own
small model. The tokenizer is trained on the data set's texts (seconds), the model is initialised
from a seed, and the workbench pre-trains it on the general-knowledge set into θp. Wide MLPs give a
region more value vectors, hence more room to hold injected knowledge.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from workbench.data.schema import UnlearningData

# -- tokenizer ------------------------------------------------------------------------------------
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>"]


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers (seconds).

    Like Llama's, it prepends BOS (``<s>``) when asked for special tokens, so a tiny model sees the
    sequences a Llama sees (and open-unlearning's joint tokenisation gives the same first token).
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
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
    bos = ("<s>", tok.token_to_id("<s>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[bos])
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




def random_model(model_type: str = "llama", *, vocab: int = 64, d_model: int = 32, d_ff: int = 64, layers: int = 2,
                 seed: int = 0) -> nn.Module:
    """A tiny randomly initialised causal LM of a supported architecture (fp32, eval mode), seeded:
    identical on every process for the same seed (tests, distributed checks)."""
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
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tf.AutoModelForCausalLM.from_config(configs[model_type]())
    return model.eval()
