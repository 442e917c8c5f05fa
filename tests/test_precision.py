"""Full fine-tuning in bf16 keeps small updates (fp32 master weights), where stepping bf16 in place
rounds them away; gradient checkpointing changes memory, not results."""

import copy
from pathlib import Path

import pytest
import torch
from conftest import make_tiny, random_examples

from workbench.precision import FP32Masters, _is_checkpointing
from workbench.training import TrainConfig, finetune

pytestmark = pytest.mark.integration

# The paper's θr learning rate; 12 examples in batches of 4 for 10 epochs = 30 constant-rate steps.
LR = 1e-5
CFG = TrainConfig(lr=LR, epochs=10, batch_size=4, weight_decay=0.0, max_grad_norm=None, seed=0, schedule="constant")


def _bf16_spacing(x: torch.Tensor) -> torch.Tensor:
    """One bf16 ulp at each value: |x| in [2^(e-1), 2^e) has spacing 2^(e-8) (8 significant bits)."""
    _, exponent = torch.frexp(x.float())
    return torch.ldexp(torch.ones_like(x, dtype=torch.float32), exponent - 8).clamp_min(2.0**-126)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().clone() for k, v in model.named_parameters()}


def test_bf16_fine_tuning_tracks_fp32_while_plain_bf16_adamw_stands_still():
    base = make_tiny("llama", seed=0)
    data = random_examples(12)
    ref = copy.deepcopy(base)
    finetune(ref, data, CFG, 0, progress=False)
    masters = copy.deepcopy(base).to(torch.bfloat16)
    start = _weights(masters)  # θ as bf16 numbers: where both bf16 runs begin
    finetune(masters, data, CFG, 0, progress=False)
    plain = copy.deepcopy(base).to(torch.bfloat16)
    finetune(plain, data, TrainConfig(**{**CFG.as_dict(), "fp32_master": False}), 0, progress=False)

    ref_w, master_w, plain_w = _weights(ref), _weights(masters), _weights(plain)
    moved = torch.cat([(ref_w[k] - base.state_dict()[k]).abs().flatten() for k in ref_w])
    assert moved.median() > 5 * LR  # fp32 AdamW moved the typical weight by many learning rates
    ref_all = torch.cat([ref_w[k].flatten() for k in ref_w])
    master_all = torch.cat([master_w[k].flatten() for k in ref_w])
    plain_all = torch.cat([plain_w[k].flatten() for k in ref_w])
    start_all = torch.cat([start[k].flatten() for k in ref_w])
    rounded = ref_all.to(torch.bfloat16).float()  # the fp32 path's result, as bf16 can hold it
    # bf16 path: its weights are the fp32 path's rounded to bf16, give or take one ulp (its forward
    # runs in bf16, so its gradients differ slightly and Adam's direction flips on tiny gradients).
    within = ((master_all - ref_all).abs() <= _bf16_spacing(ref_all)).float().mean()
    crossed = rounded != start_all  # entries whose fp32 update is big enough to show in bf16
    followed = (master_all[crossed] == rounded[crossed]).float().mean()
    plain_followed = (plain_all[crossed] == rounded[crossed]).float().mean()
    print(f"\n{crossed.float().mean():.1%} of entries change in bf16 after fp32 training; of these the "
          f"fp32-master run reproduces {followed:.1%}, plain bf16 AdamW {plain_followed:.1%}; "
          f"{within:.2%} of fp32-master weights within one bf16 ulp of the fp32 run; "
          f"plain bf16 AdamW left {(plain_all == start_all).float().mean():.1%} of entries unchanged")
    assert within > 0.98
    assert crossed.float().mean() > 0.5 and followed > 0.6  # the rest sit one ulp off (rounding ties)
    assert (plain_all == start_all).float().mean() > 0.5  # in-place bf16 AdamW rounds most updates away
    assert plain_followed < 0.1


def test_masters_move_gradients_and_free_the_bf16_ones():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    masters = FP32Masters([p])
    (p.float() * torch.arange(4.0)).sum().backward()
    assert p.grad is None and masters.params[0].dtype == torch.float32
    torch.testing.assert_close(masters.params[0].grad, torch.arange(4.0))
    with torch.no_grad():
        masters.params[0].add_(1e-4)  # below bf16's spacing at 1.0
    masters.write_back()
    assert torch.equal(p.detach(), torch.ones(4, dtype=torch.bfloat16))  # rounded ...
    assert torch.all(masters.params[0] > 1.0)  # ... but kept in the master
    masters.remove()


def test_gradient_checkpointing_does_not_change_fine_tuning():
    a, b = make_tiny("llama", seed=1), make_tiny("llama", seed=1)
    data = random_examples(8)
    cfg = TrainConfig(lr=1e-2, epochs=2, batch_size=4)
    finetune(a, data, cfg, 0, progress=False)
    finetune(b, data, cfg, 0, progress=False, gradient_checkpointing=True)
    assert not _is_checkpointing(b)  # switched off again afterwards
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-6, msg=name)


def test_a_bf16_session_sweeps_in_eval_dtype_as_an_fp32_copy_would():
    """``eval_dtype = float32`` (the paper files): a bf16 model's sweep is the sweep of the same bf16
    numbers held in fp32, with θ(α) merged exactly, number for number; the model is bf16 again after,
    bit for bit, and the cache keeps bf16 and fp32 sweeps apart. Without it the sweep runs in bf16."""
    from types import SimpleNamespace

    import pandas as pd
    from test_evaluation import build_trained

    from workbench.delta import RegionDelta
    from workbench.evaluation import EvalConfig, Evaluator
    from workbench.experiments.session import Session
    from workbench.mixing import mixing_sweep
    from workbench.regions import random_region
    from workbench.runs.cache import Cache

    tok, model, data = build_trained()
    model = model.to(torch.bfloat16)
    delta = RegionDelta(model, random_region(model, 0.3, seed=0))
    with torch.no_grad():
        for p in delta.params.values():
            p.add_(2e-3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    evaluator = Evaluator(tok, data, EvalConfig(batch_size=8, max_new_tokens=8), reference_forget_tr=[0.5, 1.0, 2.0])
    cfg = SimpleNamespace(n_alpha=3, dtype="bfloat16", eval_dtype="float32", plugins=[])
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        session = Session(cfg, data, model, tok, "base", Cache(root), evaluator, progress=False)
        swept, _ = session.sweep(delta, start_key="θo", labels={})
        assert all(torch.equal(v, start[k]) for k, v in model.state_dict().items())
        reference = copy.deepcopy(model).float()
        ref_delta = RegionDelta.load(reference, _saved(delta, root))
        expected, _ = mixing_sweep(reference, ref_delta, Evaluator(tok, data, evaluator.cfg, reference_forget_tr=[0.5, 1.0, 2.0]),
                                   (0.0, 0.5, 1.0), progress=False)
        pd.testing.assert_frame_equal(swept, expected)
        in_bf16, _ = Session(SimpleNamespace(**{**vars(cfg), "eval_dtype": ""}), data, model, tok, "base", Cache(root),
                             Evaluator(tok, data, evaluator.cfg, reference_forget_tr=[0.5, 1.0, 2.0]),
                             progress=False).sweep(delta, start_key="θo", labels={})
        assert len(list(Path(root).glob("sweep/*"))) == 2 and not in_bf16.equals(swept)


def _saved(delta, root) -> str:
    path = f"{root}/delta.safetensors"
    delta.save(path)
    return path


def test_eval_dtype_is_checked_and_the_paper_files_sweep_in_float32():
    import yaml

    from workbench.runs import config

    with pytest.raises(config.ConfigError, match="'eval_dtype': unknown dtype 'fp32'"):
        config.from_params("lume", {"eval_dtype": "fp32"})
    root = Path(__file__).resolve().parents[1] / "params"
    papers = sorted(root.glob("*/paper-*.yaml"))
    assert len(papers) == 8
    for path in papers:
        params = yaml.safe_load(path.read_text())
        assert (params["dtype"], params["eval_dtype"]) == ("bfloat16", "float32"), path
        config.from_params(path.parent.name, params)
