"""The gpu tier: what only a CUDA device can show (bf16 kernels, CUDA index tensors), plus the CPU
checks of ``benchmarks/gpu_check.py``'s own assertions.

The ``gpu`` tests skip without CUDA. ``WORKBENCH_TEST_DEVICE=cpu pytest -m gpu`` runs their logic on
the CPU (to check the tests themselves on a machine without a GPU; it proves nothing about CUDA).
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from conftest import make_tiny, random_examples

from workbench.data.formatting import collate
from workbench.delta import RegionDelta
from workbench.likelihood import forward_logits, mean_nll
from workbench.localizers import localize
from workbench.models import architectures as arch
from workbench.regions import WeightRegion, random_region
from workbench.training import TrainConfig, TrainSpec, train_region

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("WORKBENCH_TEST_DEVICE", "cuda")
needs_device = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                  reason="needs a CUDA device")


def _nll(model, batch) -> float:
    with torch.no_grad():
        return mean_nll(forward_logits(model, batch), batch["labels"]).item()


@pytest.mark.gpu
@needs_device
def test_bf16_mixing_sweep_follows_the_fp32_reference():
    """Mixing in bf16 applies the fp32 delta through hooks, so intermediate α move the model as in
    fp32, even where α·(P − P0) is far below bf16's spacing (merging it would round it away)."""
    fp32 = make_tiny("llama", d_model=64, d_ff=128).to(DEVICE)
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    region = random_region(fp32, 0.2, seed=0)
    delta32, _ = train_region(fp32, region, TrainSpec(random_examples(16),
                                                      TrainConfig(lr=3e-4, epochs=2, batch_size=8), 0,
                                                      progress=False))
    delta16 = RegionDelta(bf16, region)
    with torch.no_grad():
        for layer in delta32.layers:
            delta16.params[str(layer)].copy_(delta32.params[str(layer)])
    batch = {k: v.to(DEVICE) for k, v in collate(random_examples(8, seed=5), 0).items()}
    base32, base16 = _nll(fp32, batch), _nll(bf16, batch)
    for alpha in (0.0, 0.25, 0.5, 0.75, 1.0):
        with delta32.mixed(alpha):
            ref = _nll(fp32, batch) - base32
        with delta16.mixed(alpha):
            got = _nll(bf16, batch) - base16
        assert abs(got - ref) <= 0.1 * abs(ref) + 2e-3, (alpha, got, ref)
    assert torch.equal(arch.down_proj(bf16, 0).weight, arch.down_proj(copy.deepcopy(fp32).to(torch.bfloat16), 0).weight)


@pytest.mark.gpu
@needs_device
def test_weight_level_localisation_on_cuda_gives_cpu_masks_and_trains():
    model = make_tiny("llama").to(DEVICE)
    forget, retain = random_examples(8), random_examples(8, seed=3)
    found = localize("wagle_weights", model, forget, retain, 0, 0.8)
    assert isinstance(found.region, WeightRegion) and all(m.device.type == "cpu" for m in found.region.masks.values())
    on_cpu = localize("wagle_weights", copy.deepcopy(model).cpu(), forget, retain, 0, 0.8)
    agree = sum(int((a == b).sum()) for a, b in zip(found.region.masks.values(), on_cpu.region.masks.values()))
    assert found.region.size == on_cpu.region.size and agree / found.region.total > 0.99
    delta, history = train_region(model, found.region, TrainSpec(forget, TrainConfig(lr=1e-3, epochs=1, batch_size=4),
                                                                 0, progress=False))
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    assert delta.params[str(delta.layers[0])].device.type == torch.device(DEVICE).type


@pytest.mark.gpu
@needs_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_restricted_training_is_bit_identical_outside_the_region_on_cuda(dtype):
    model = make_tiny("llama").to(DEVICE, dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    region = random_region(model, 0.1, seed=0)
    cfg = TrainConfig(lr=5e-2, epochs=2, batch_size=4, weight_decay=0.01, max_grad_norm=0.5)
    delta, _ = train_region(model, region, TrainSpec(random_examples(12), cfg, 0, progress=False))
    delta.merge()
    down = set(arch.down_proj_names(model))
    for name, value in model.state_dict().items():
        if name not in down:
            assert torch.equal(value, before[name]), name
    for layer, name in enumerate(arch.down_proj_names(model)):
        mask = torch.zeros_like(value := model.state_dict()[name], dtype=torch.bool)
        mask[:, region.layer(layer).to(mask.device)] = True
        assert torch.equal(value[~mask], before[name][~mask]), name
    delta.restore()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
def test_gpu_check_runs_tiny_on_cpu_and_its_checks_catch_failures(tmp_path):
    gpu_check = _gpu_check()
    res = gpu_check.main(["--tiny", "--device", "cpu", "--out", str(tmp_path / "r.json")])
    assert res["problems"] == []
    broken = {**res, "alpha0_equals_base": False, "nll_alpha1": res["nll_alpha0"], "losses": [float("nan")],
              "nll_alpha1_hooked": res["nll_alpha0"] + 1.0, "delta_params": -1,
              "device": "cuda:0", "train_peak_bytes": 10 * res["estimate"]["total_bytes"]}
    assert len(gpu_check.check(broken)) == 6
