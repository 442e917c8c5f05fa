"""``estimate_memory``: the exact parts (parameter count, region delta, optimizer state) equal what
torch really allocates on tiny models; the rough parts behave sensibly."""

import pytest
import torch
import transformers as tf
from conftest import make_tiny

from workbench.delta import RegionDelta
from workbench.models import count_parameters, estimate_memory, fits, resolve_dtype
from workbench.precision import FP32Masters
from workbench.regions import random_region

pytestmark = pytest.mark.unit


def _tiny(model_type: str, **extra):
    dims = dict(vocab_size=96, hidden_size=32, intermediate_size=80, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, **extra)
    config = {"llama": tf.LlamaConfig, "olmo2": tf.Olmo2Config}[model_type](**dims)
    torch.manual_seed(0)
    return tf.AutoModelForCausalLM.from_config(config)


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _adamw_step(params) -> torch.optim.Optimizer:
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    return opt


@pytest.mark.parametrize(
    "model_type,extra",
    [("llama", {}), ("llama", {"tie_word_embeddings": True}), ("llama", {"attention_bias": True, "mlp_bias": True}),
     ("olmo2", {})],
)
def test_parameter_count_is_exact(model_type, extra):
    model = _tiny(model_type, **extra)
    assert count_parameters(model.config) == sum(p.numel() for p in model.parameters())


def test_llama_31_8b_parameter_count():
    config = tf.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                            num_attention_heads=32, num_key_value_heads=8)
    assert count_parameters(config) == 8_030_261_248


@pytest.mark.parametrize("fraction", [0.1, 0.05])
def test_region_delta_part_is_exact(fraction):
    model = make_tiny("llama", d_ff=96, layers=3).to(torch.bfloat16)
    delta = RegionDelta(model, random_region(model, fraction, seed=0))
    est = estimate_memory(model.config, fraction, batch=2, seq_len=8, dtype="bfloat16")
    assert est["delta_params"] == delta.num_trainable()
    params = list(delta.params.values())
    opt = _adamw_step(params)
    state = [t for s in opt.state.values() for k, t in s.items() if k != "step"]
    before = [delta.before(layer) for layer in delta.layers]
    assert est["delta_bytes"] == _nbytes(params) + _nbytes(p.grad for p in params) + _nbytes(state) + _nbytes(before)
    assert est["weights_bytes"] == _nbytes(model.parameters())


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_full_training_state_is_exact(dtype):
    """What finetune allocates: fp32 gradients and AdamW moments, and fp32 masters for bf16 weights."""
    model = make_tiny("llama").to(resolve_dtype(dtype))
    est = estimate_memory(model.config, 0.0, batch=2, seq_len=8, dtype=dtype, mode="full")
    masters = FP32Masters(list(model.parameters()))
    params = masters.params
    opt = _adamw_step(params)
    state = [t for s in opt.state.values() for k, t in s.items() if k != "step"]
    own = [m for p, m in masters.pairs if m is not p]  # fp32 copies beyond the weights themselves
    assert est["train_state_bytes"] == _nbytes(p.grad for p in params) + _nbytes(state) + _nbytes(own)
    assert est["weights_bytes"] == _nbytes(model.parameters())
    assert est["delta_bytes"] == 0


def test_rough_parts_scale_and_checkpointing_helps():
    model = make_tiny("llama")
    small = estimate_memory(model.config, 0.1, batch=2, seq_len=16)
    double = estimate_memory(model.config, 0.1, batch=4, seq_len=16)
    assert double["activation_bytes"] == 2 * small["activation_bytes"]
    assert double["logits_bytes"] == 2 * small["logits_bytes"]
    big = tf.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=8)
    plain = estimate_memory(big, 0.1, 16, 512)
    ckpt = estimate_memory(big, 0.1, 16, 512, gradient_checkpointing=True)
    full = estimate_memory(big, 0.1, 16, 512, mode="full", gradient_checkpointing=True)
    sharded = estimate_memory(big, 0.1, 16, 512, mode="full", gradient_checkpointing=True, shards=2)
    # 18 B per parameter with fp32 masters: 8B needs four 80 GB GPUs at 4 sequences of 512 per GPU.
    four = estimate_memory(big, 0.1, 4, 512, mode="full", gradient_checkpointing=True, shards=4)
    assert ckpt["activation_bytes"] < plain["activation_bytes"] / 5
    assert fits(ckpt, 80 * 2**30) and not fits(full, 80 * 2**30) and not fits(sharded, 80 * 2**30)
    assert fits(four, 80 * 2**30)
    assert sharded["train_state_bytes"] * 2 == full["train_state_bytes"]
    assert "GiB per device" in ckpt["summary"]


def test_bad_arguments_are_named():
    config = make_tiny("llama").config
    with pytest.raises(ValueError, match="mode"):
        estimate_memory(config, 0.1, 1, 8, mode="lora")
    with pytest.raises(ValueError, match="dtype"):
        estimate_memory(config, 0.1, 1, 8, dtype="int8")


@pytest.mark.unit
def test_evaluating_an_8b_pair_needs_one_model_on_the_device():
    """A mixing sweep keeps one model on the GPU (θ_after streams from disk): an 8B pair fits 80 GB."""
    from types import SimpleNamespace

    from workbench.models import GIB, count_parameters, estimate_eval_memory

    llama8b = SimpleNamespace(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                              num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, model_type="llama")
    est = estimate_eval_memory(llama8b)
    assert est["weights_bytes"] == count_parameters(llama8b) * 2  # one bf16 model, not three
    assert est["mixing_bytes"] == 3 * 2**24 * 4 and est["total_bytes"] < 0.95 * 80e9
    assert 20 * GIB < est["total_bytes"] < 32 * GIB and "28.2 GiB on the device" in est["summary"]


def test_localization_needs_weights_down_projection_gradients_and_two_fp32_means():
    from workbench.models.memory import estimate_localization_memory

    config = tf.LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=80, num_hidden_layers=3,
                            num_attention_heads=4, num_key_value_heads=2)
    est = estimate_localization_memory(config, 8, 16, dtype="bfloat16", overhead_bytes=0)
    assert est["delta_bytes"] == 3 * 80 * 32 * (2 + 4 + 4)
    assert est["weights_bytes"] == count_parameters(config) * 2
    parts = ("weights_bytes", "delta_bytes", "train_state_bytes", "activation_bytes", "logits_bytes", "overhead_bytes")
    assert est["total_bytes"] == sum(est[k] for k in parts)
    assert est["summary"].startswith(f"{est['total_bytes'] / 2**30:.1f} GiB") and "localize" in est["summary"]


@pytest.mark.unit
def test_eval_estimate_bounds_the_decoding_cache():
    """Wrong drafts and guesses at every step (the widest cache decoding makes): the KV cache of the
    generation, rows × columns × bytes per column, stays within ``estimate_eval_memory``'s count."""
    from test_generation import _prompts

    from workbench.decoding import DraftPolicy, greedy_from_drafts
    from workbench.generation import prefill
    from workbench.models import estimate_eval_memory

    model, ids, mask = _prompts(seed=1)
    sizes, forward = [], model.forward

    def recording(*args, **kwargs):
        sizes.append(kwargs["attention_mask"].numel())
        return forward(*args, **kwargs)

    max_new = 60
    prefix = prefill(model, ids, mask)
    truth = greedy_from_drafts(model, prefix, [1], max_new, lookahead=0)
    model.forward = recording
    greedy_from_drafts(model, prefix, [1], max_new, [[(t + 1) % 64 for t in row] for row in truth.tokens],
                       policy=DraftPolicy(adaptive=False))
    cfg = model.config
    per_column = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 4
    est = estimate_eval_memory(cfg, batch=len(ids), prompt_len=ids.shape[1], answer_len=0, new_tokens=max_new,
                               dtype="float32")
    assert max(sizes) * per_column <= est["kv_cache_bytes"]


@pytest.mark.unit
def test_auto_batch_is_the_largest_that_fits():
    from types import SimpleNamespace

    from workbench.evaluation import EvalConfig
    from workbench.models import GIB, estimate_eval_memory
    from workbench.models.memory import largest_batch

    llama8b = SimpleNamespace(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                              num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, model_type="llama")
    shape = dict(prompt_len=60, answer_len=80, new_tokens=200, dtype="bfloat16")
    batch = largest_batch(llama8b, 4000, 0.9 * 139 * GIB, **shape)
    assert estimate_eval_memory(llama8b, batch=batch, **shape)["total_bytes"] <= 0.9 * 139 * GIB
    assert estimate_eval_memory(llama8b, batch=batch + 1, **shape)["total_bytes"] > 0.9 * 139 * GIB
    assert 32 < batch < 4000 and largest_batch(llama8b, 10, 0.9 * 139 * GIB, **shape) == 10
    with pytest.raises(MemoryError, match="batch 1"):
        largest_batch(llama8b, 10, 10 * GIB, **shape)
    with pytest.raises(ValueError, match="batch_size"):
        EvalConfig(batch_size=0)
