"""Model mixing: exact end points, exact restore, and θ(0.5) equal to interpolated state dicts."""

import copy
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import make_tiny, random_examples

from workbench.data.formatting import collate
from workbench.mixing import ALPHAS, StateMixer, interpolate_state_dicts, mixing_sweep
from workbench.regions import random_region
from workbench.training import TrainConfig, TrainSpec, train_region

pytestmark = pytest.mark.integration


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def setup():
    """A tiny LLaMA, a region delta trained on random data, θ_before and θ_after state dicts."""
    model = make_tiny("llama")
    before = _state(model)
    data = random_examples(8)
    spec = TrainSpec(data, TrainConfig(lr=5e-2, epochs=2, batch_size=4), 0, progress=False)
    delta, _ = train_region(model, random_region(model, 0.2, seed=1), spec)
    delta.merge(1.0)
    after = _state(model)
    delta.restore()
    assert _equal(_state(model), before) and not _equal(after, before)
    return model, delta, before, after, collate(data, 0)


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _fake_evaluate(batch):
    """An evaluator stand-in: one summary number and a per-example table from the logits."""

    def evaluate(model):
        logits = _logits(model, batch)
        return SimpleNamespace(summary={"mean_logit": float(logits.mean())},
                               per_example=pd.DataFrame({"index": range(len(logits)), "max": logits.amax((1, 2)).numpy()}))

    return evaluate


def test_end_points_are_exact(setup):
    model, delta, before, after, _ = setup
    with delta.mixed(0.0):
        assert _equal(_state(model), before)
    with delta.mixed(1.0):
        assert _equal(_state(model), after)
    assert _equal(interpolate_state_dicts(before, after, 0.0), before)
    assert _equal(interpolate_state_dicts(before, after, 1.0), after)


def test_half_mix_equals_interpolated_state_dict(setup):
    model, delta, before, after, batch = setup
    reference = copy.deepcopy(model)
    reference.load_state_dict(interpolate_state_dicts(before, after, 0.5))
    with delta.mixed(0.5):
        mixed = _logits(model, batch)
    torch.testing.assert_close(mixed, _logits(reference, batch), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mixed, _logits(model, batch))


def test_sweep_tables_and_restore(setup):
    model, delta, before, _, batch = setup
    per_alpha, per_example = mixing_sweep(model, delta, _fake_evaluate(batch), progress=False)
    assert _equal(_state(model), before)
    assert per_alpha["alpha"].tolist() == list(ALPHAS) and len(ALPHAS) == 21
    assert list(per_alpha.columns) == ["alpha", "mean_logit"]
    assert list(per_example.columns) == ["alpha", "index", "max"] and len(per_example) == 21 * 8
    assert per_alpha["mean_logit"].nunique() == 21


def test_sweep_restores_after_an_exception(setup):
    model, delta, before, _, batch = setup
    evaluate, calls = _fake_evaluate(batch), []

    def failing(m):  # fails at the third α, while the model is mixed
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return evaluate(m)

    with pytest.raises(RuntimeError, match="boom"):
        mixing_sweep(model, delta, failing, progress=False)
    assert _equal(_state(model), before)


def test_state_mixer_matches_region_mixing(setup):
    model, delta, before, after, batch = setup
    mixer = StateMixer(model, after)
    for alpha in (0.0, 0.35, 1.0):
        with mixer.mixed(alpha):
            by_state = _state(model)
        with delta.mixed(alpha):
            by_delta = _state(model)
        for name in before:
            torch.testing.assert_close(by_state[name], by_delta[name], rtol=0, atol=1e-7)
    with mixer.mixed(1.0):
        assert _equal(_state(model), after)
    assert _equal(_state(model), before)


def test_sweep_with_the_evaluator():
    from test_evaluation import build_trained

    from workbench.evaluation import EvalConfig, Evaluator

    tok, model, data = build_trained()
    before = _state(model)
    spec = TrainSpec(_forget(tok, data), TrainConfig(lr=3e-2, epochs=3, batch_size=3), tok.pad_token_id, objective="ga",
                     progress=False)
    delta, _ = train_region(model, random_region(model, 0.3, seed=0), spec)
    evaluator = Evaluator(tok, data, EvalConfig(max_new_tokens=8), reference_forget_tr=[0.5, 1.0, 2.0])
    per_alpha, per_example = mixing_sweep(model, delta, evaluator, alphas=(0.0, 0.5, 1.0), progress=False)
    assert _equal(_state(model), before)
    for col in ("alpha", "FS", "RS", "MU", "FQ", "n_forget", "n_fq", "mu_prob_real_authors", "mu_tr_world_facts"):
        assert col in per_alpha.columns
    assert per_alpha.loc[0, "FS"] == pytest.approx(evaluator(model).summary["FS"])
    assert per_alpha.loc[2, "FS"] > per_alpha.loc[0, "FS"]  # gradient ascent made the forget set less extractable
    assert per_example["alpha"].nunique() == 3 and "es" in per_example.columns


def _forget(tok, data):
    from workbench.data.formatting import encode_all

    return encode_all(tok, data.forget)


class _Allocations(__import__("torch").utils._python_dispatch.TorchDispatchMode):
    """Bytes of the tensors torch ops create, alive at once (peak): what mixing materialises."""

    def __init__(self):
        super().__init__()
        self.live, self.peak = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        import weakref

        inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                size = t.untyped_storage().nbytes()
                self.live += size
                self.peak = max(self.peak, self.live)
                weakref.finalize(t, self._free, size)
        return out

    def _free(self, size: int) -> None:
        self.live -= size


def test_state_mixer_holds_one_model_and_streams_the_other_two(tmp_path):
    """Full-parameter mixing never materialises a copy of the model: with θ_before and θ_after in
    folders, construction and every α together allocate at most one tensor of each (read from disk:
    host memory on a GPU machine) and three fp32 slices on the device, whatever the model size. The
    former mixer (θ_before cloned, θ_after moved to the device) held 2× the model beside it; the
    ``before=None`` case (θ_before copied once, to ``offload``) shows that the tracker sees copies."""
    from workbench.models.checkpoints import SafetensorsState

    model = make_tiny("llama", layers=6)
    before = _state(model)
    model.save_pretrained(tmp_path / "before")
    with torch.no_grad():  # full-parameter unlearning: every tensor changes
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    after = _state(model)
    model.save_pretrained(tmp_path / "after")
    model.load_state_dict(before)
    sizes = [p.numel() * p.element_size() for p in model.parameters()]
    chunk = 256
    bound = 2 * max(sizes) + 3 * chunk * 4
    assert bound < sum(sizes) / 3
    with _Allocations() as seen:
        mixer = StateMixer(model, SafetensorsState(tmp_path / "after"), before=SafetensorsState(tmp_path / "before"),
                           chunk_elements=chunk)
        for alpha in (0.0, 0.5, 1.0):
            with mixer.mixed(alpha):
                pass
    assert 0 < seen.peak <= bound, (seen.peak, bound, sum(sizes))
    assert _equal(_state(model), before)
    with mixer.mixed(0.5):
        torch.testing.assert_close(_state(model), interpolate_state_dicts(before, after, 0.5), rtol=0, atol=1e-7)
    with mixer.mixed(1.0):
        assert _equal(_state(model), after)
    with _Allocations() as copying:
        StateMixer(model, SafetensorsState(tmp_path / "after"), chunk_elements=chunk)
    assert copying.peak >= sum(sizes) > bound


class _CountingState(dict):
    """A state dict that counts how often each tensor is read (what a :class:`SafetensorsState` would read from disk)."""

    def __init__(self, tensors):
        super().__init__(tensors)
        self.reads = 0

    def __getitem__(self, name):
        self.reads += 1
        return super().__getitem__(name)


def _bf16_pair(update: float):
    """A bf16 tiny LLaMA (θ_before) and θ_after in fp32 = θ_before + a small seeded update on every tensor,
    the size of a full fine-tuning step at the paper's learning rates (std ``update``)."""
    model = make_tiny("llama").to(torch.bfloat16)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    after = {k: v.float() + update * torch.randn(v.shape, generator=gen) for k, v in before.items()}
    return model, before, after


def test_state_mixer_on_a_bf16_model_is_exact_to_fp32_precision():
    """θ(0.1) of a bf16 model with an update of std 1e-4: the mixed parameters equal the fp32 line
    ``lerp(before, after, 0.1)`` exactly. Written back into bf16 (the former mixer) they moved in whole
    ulps (~4e-3 relative), so only a fraction of the intended step survived; the modules that own them
    compute in fp32 and hand bf16 on, and θ_before comes back bit for bit."""
    model, before, after = _bf16_pair(1e-4)
    mixer = StateMixer(model, after)
    exact = {k: torch.lerp(before[k].float(), after[k], 0.1) for k in before}
    ids = torch.tensor([[1, 5, 9, 12, 3]])
    with mixer.mixed(0.1):
        params = dict(model.named_parameters())
        for name, value in exact.items():
            step, got = (value - before[name].float()).abs().sum(), (params[name].float() - before[name].float()).abs().sum()
            assert torch.equal(params[name].detach().float(), value), f"{name}: {float(got / step):.0%} of the step realised"
        logits = _logits(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        layer = model.model.layers[0].mlp.down_proj
        x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
        out = layer(x)
        assert out.dtype == torch.bfloat16
        in_fp32 = torch.nn.functional.linear(x.float(), exact["model.layers.0.mlp.down_proj.weight"])
        assert torch.equal(out, in_fp32.to(torch.bfloat16))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert set(mixer.names) == set(before)  # every update counts, though most round away in bf16
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert _equal({k: v.detach() for k, v in model.named_parameters()}, before)


def test_state_mixer_reads_each_checkpoint_tensor_once_per_alpha():
    """A sweep reads each changed tensor of θ_after once per α and of θ_before once per α plus once to
    restore at the end (the former mixer read both twice per α: the restore after every α read them again)."""
    model = make_tiny("llama")
    before = _CountingState(_state(model))
    after = _CountingState({k: v + 0.01 for k, v in before.items()})
    mixer = StateMixer(model, after, before=before)
    changed = len(mixer.names)
    assert changed == len(list(model.parameters()))
    before.reads = after.reads = 0
    alphas = (0.0, 0.25, 0.5, 0.75, 1.0)
    mixing_sweep(model, mixer, lambda m: SimpleNamespace(summary={}, per_example=pd.DataFrame({"x": [0]})), alphas,
                 progress=False)
    assert after.reads == len(alphas) * changed
    assert before.reads == (len(alphas) + 1) * changed
    assert _equal(_state(model), dict(before))
