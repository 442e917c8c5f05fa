"""The restricted-training contract (SPEC §2): only the region changes, and it changes exactly as
dense masked training would change it."""

import copy

import pytest
import torch
from conftest import make_tiny, random_examples

from workbench.delta import RegionDelta
from workbench.dense_masked import train_dense_masked
from workbench.models import architectures as arch
from workbench.regions import random_region, random_weight_region
from workbench.training import (
    DivergedError,
    TrainConfig,
    TrainSpec,
    finetune,
    train_region,
)

pytestmark = pytest.mark.integration

CFG = TrainConfig(lr=5e-2, epochs=3, batch_size=4, weight_decay=0.01, max_grad_norm=0.5, seed=3)


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gpt_neox"])
def test_only_region_entries_change(model_type):
    model = make_tiny(model_type)
    before = _state(model)
    region = random_region(model, 0.1, seed=0)
    data = random_examples(12)
    delta, history = train_region(model, region, TrainSpec(data, CFG, pad_token_id=0, progress=False))
    assert len(history) == 9
    delta.merge()
    after = model.state_dict()
    down_names = set(arch.down_proj_names(model))
    for name, value in after.items():
        if name not in down_names:
            assert torch.equal(value, before[name]), name
    axis = arch.vector_axis(model)
    changed_any = False
    for layer, name in enumerate(arch.down_proj_names(model)):
        mask = torch.zeros_like(after[name], dtype=torch.bool)
        idx = region.layer(layer)
        if axis == 1:
            mask[:, idx] = True
        else:
            mask[idx] = True
        assert torch.equal(after[name][~mask], before[name][~mask]), f"{name} moved outside the region"
        changed_any |= not torch.equal(after[name][mask], before[name][mask])
    assert changed_any, "the region itself should have been trained"
    delta.restore()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_sparse_delta_equals_dense_masked(model_type, optimizer):
    base = make_tiny(model_type)
    dense = copy.deepcopy(base)
    region = random_region(base, 0.2, seed=1)
    data = random_examples(12)
    retain = random_examples(8, seed=9)
    cfg = TrainConfig(**{**CFG.as_dict(), "optimizer": optimizer, "lr": 1e-2})
    delta, h1 = train_region(base, region, TrainSpec(data, cfg, 0, retain=retain, lambda_retain=2.0, progress=False))
    h2 = train_dense_masked(dense, region, TrainSpec(data, cfg, 0, retain=retain, lambda_retain=2.0, progress=False))
    assert [h["loss"] for h in h1] == pytest.approx([h["loss"] for h in h2], rel=1e-4, abs=1e-5)
    delta.merge()
    for (name, a), b in zip(base.state_dict().items(), dense.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_weight_level_region_matches_dense_and_stays_inside():
    base = make_tiny("llama")
    dense = copy.deepcopy(base)
    before = _state(base)
    region = random_weight_region(base, 0.1, seed=4)
    data = random_examples(8)
    delta, _ = train_region(base, region, TrainSpec(data, CFG, 0, progress=False))
    train_dense_masked(dense, region, TrainSpec(data, CFG, 0, progress=False))
    delta.merge()
    for layer, mask in region.masks.items():
        w = arch.down_proj(base, layer).weight
        name = arch.down_proj_names(base)[layer]
        assert torch.equal(w[~mask], before[name][~mask])
        torch.testing.assert_close(w, arch.down_proj(dense, layer).weight, rtol=1e-4, atol=1e-5)


def test_optimizer_state_scales_with_region():
    model = make_tiny("llama", d_ff=256)
    region = random_region(model, 0.1, seed=0)
    delta = RegionDelta(model, region)
    d_model = model.config.hidden_size
    assert delta.num_trainable() == region.size * d_model
    assert all(p.dtype == torch.float32 for p in delta.params.values())


def test_bf16_model_keeps_fp32_delta_and_small_updates():
    """Ten steps of 1e-5 add up to 1e-4 in every entry. In bf16 a weight near 0.02 has a half-ulp of
    6e-5, so a delta kept in the model's dtype would round each step away."""
    model = make_tiny("llama").to(torch.bfloat16)
    delta = RegionDelta(model, random_region(model, 0.1, seed=0))
    assert any(p.abs().max() > 0.02 for p in delta.params.values())  # entries whose bf16 ulp exceeds 1e-4
    with torch.no_grad():
        for _ in range(10):
            for p in delta.params.values():
                p.add_(1e-5)
    for layer, p in delta.params.items():
        moved = p.float() - delta.before(int(layer)).float()
        torch.testing.assert_close(moved, torch.full_like(moved, 1e-4), rtol=0, atol=1e-7)  # fp32 rounding


def test_save_load_roundtrip(tmp_path):
    model = make_tiny("llama")
    delta, _ = train_region(model, random_region(model, 0.1, seed=0), TrainSpec(random_examples(4), CFG, 0,
                                                                                progress=False))
    delta.save(tmp_path / "delta.safetensors")
    loaded = RegionDelta.load(model, tmp_path / "delta.safetensors")
    for l in delta.layers:
        assert torch.equal(loaded.params[str(l)], delta.params[str(l)])
    other = make_tiny("llama", seed=5)
    with pytest.raises(ValueError, match="different model"):
        RegionDelta.load(other, tmp_path / "delta.safetensors")


def test_divergence_is_reported_with_step_and_lr():
    model = make_tiny("llama")
    cfg = TrainConfig(lr=1e30, epochs=5, batch_size=2, max_grad_norm=None, weight_decay=0.0)
    with pytest.raises(DivergedError, match=r"step \d+ \(lr"):
        finetune(model, random_examples(8), cfg, 0, progress=False)


@pytest.mark.parametrize("trainer", [train_region, train_dense_masked])
def test_restricted_trainers_give_the_model_back_as_they_found_it(trainer, monkeypatch):
    model = make_tiny("llama")
    next(model.parameters()).requires_grad_(False)  # a caller's own frozen choice
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    region = random_region(model, 0.2, seed=0)
    for training in (False, True):
        model.train(training)
        trainer(model, region, TrainSpec(random_examples(4), CFG, 0, progress=False))
        assert model.training is training
        assert {name: p.requires_grad for name, p in model.named_parameters()} == flags

    def diverged(*args, **kwargs):
        raise DivergedError("loss is nan")

    for module in ("workbench.training", "workbench.dense_masked"):
        monkeypatch.setattr(f"{module}.run_loop", diverged)
    with pytest.raises(DivergedError):
        trainer(model, region, TrainSpec(random_examples(8), CFG, 0, progress=False))
    assert model.training is True  # restored on errors too
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags


def test_a_spec_with_a_retain_weight_needs_retain_examples():
    with pytest.raises(ValueError, match="lambda_retain > 0 needs retain examples"):
        TrainSpec(random_examples(4), CFG, 0, lambda_retain=2.0)


def test_training_on_no_examples_names_the_empty_split():
    model = make_tiny("llama")
    with pytest.raises(ValueError, match="no training examples"):
        train_region(model, random_region(model, 0.2, seed=0), TrainSpec([], CFG, 0, progress=False, desc="forget"))


def test_bf16_mixing_goes_through_fp32_hooks():
    model = make_tiny("llama").to(torch.bfloat16)
    region = random_region(model, 0.2, seed=0)
    delta = RegionDelta(model, region)
    with torch.no_grad():
        for p in delta.params.values():
            p.add_(1e-4)  # below bf16 resolution of the weights: merging would round it away
    x = torch.randint(1, 64, (2, 8))
    base = model(input_ids=x).logits.float()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with delta.mixed(1.0):
        mixed = model(input_ids=x).logits.float()
        assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    with delta.mixed(0.0):
        assert torch.equal(model(input_ids=x).logits.float(), base)
    assert not torch.equal(mixed, base)


def test_merge_at_one_writes_the_trained_entries_exactly():
    model = make_tiny("llama")
    region = random_region(model, 0.2, seed=0)
    delta, _ = train_region(model, region, TrainSpec(random_examples(8), CFG, 0, progress=False))
    delta.merge(1.0)
    for layer in delta.layers:
        w = arch.down_proj(model, layer).weight
        assert torch.equal(w[:, region.layer(layer)].T, delta.params[str(layer)].detach())
    delta.restore()
