"""evaluate_pair: the paper's evaluation for checkpoints trained anywhere (hub id, folder, model, adapter).

Tiny and exact: θ_before is a tiny LLaMA that memorised a few pairs, θ_after that model with
every tensor moved by seeded noise (what full-parameter unlearning looks like to the mixer), saved
as folders. The sweep's ends equal plain evaluations of the two models; one θ_after given three ways
gives one curve three times; a LoRA adapter gives the curve of its merged model; without θr, FQ
and MU95 are left out with a reason.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_evaluation import build_trained, perturbed_copy

import workbench as wb
from workbench.evaluation import EvalConfig, Evaluator
from workbench.experiments.pair import NO_FQ, evaluate_pair
from workbench.models import save_model_folder
from workbench.viz import compare

pytestmark = pytest.mark.integration
CFG = EvalConfig(batch_size=8, max_new_tokens=12)
ALPHAS = (0.0, 0.5, 1.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    tok, model, data = build_trained()
    root = tmp_path_factory.mktemp("pair")
    save_model_folder(model, tok, root / "before")
    unlearned = perturbed_copy(model, seed=0)
    save_model_folder(unlearned, tok, root / "ga")
    return tok, model, unlearned, data, root


def test_ends_are_the_two_models_and_one_after_three_ways_gives_one_curve(pair):
    tok, model, unlearned, data, root = pair
    result = evaluate_pair(str(root / "before"), [str(root / "ga"), unlearned, str(root / "ga")], data,
                           retain_model=str(root / "before"), alphas=ALPHAS, eval_config=CFG,
                           labels=["folder", "model", "again"], device="cpu", progress=False)
    forget_tr = Evaluator(tok, data, replace(CFG, generate=False, splits=("forget",))).evaluate(model).per_example["truth_ratio"]
    evaluator = Evaluator(tok, data, CFG, reference_forget_tr=forget_tr)
    at_0, at_1 = evaluator.evaluate(model).summary, evaluator.evaluate(unlearned).summary
    assert at_0["FQ"] == 0.0 and at_1["FS"] != at_0["FS"]  # θr = θ_before: identical truth ratios, KS p = 1
    for method, g in result.per_alpha.groupby("scenario"):
        g = g.sort_values("alpha")
        for key in ("FS", "RS", "MU", "FQ"):
            assert g[key].iloc[0] == pytest.approx(at_0[key], abs=1e-6), (method, key)
            assert g[key].iloc[-1] == pytest.approx(at_1[key], abs=1e-5), (method, key)
    curves = [g.sort_values("alpha")[["FS", "RS", "MU", "FQ"]].to_numpy() for _, g in result.per_alpha.groupby("scenario")]
    np.testing.assert_allclose(curves[0], curves[1], atol=1e-5)
    np.testing.assert_allclose(curves[0], curves[2], atol=1e-5)
    assert set(result.summary["scenario"]) == {"folder", "model", "again"} and result.summary["AUES"].between(0, 1).all()
    assert set(result.mu95) == {"folder", "model", "again"} and not result.notes
    ends = result.ends()
    assert set(ends["model"]) == {"before", "after"} and len(ends) == 6
    # one figure per plane, one curve (plus its shaded area) per method
    figs = compare.checkpoint_figures(result)
    assert len(figs) == 2 and sum(t.mode == "lines+markers" for t in figs[0].data) == 3


def test_without_a_retain_model_fq_is_left_out_with_a_reason(pair, tmp_path):
    tok, model, unlearned, data, root = pair
    result = evaluate_pair(model, unlearned, data, tokenizer=tok, alphas=ALPHAS,
                           eval_config=EvalConfig(batch_size=8, generate=False), device="cpu", progress=False)
    assert result.per_alpha["FQ"].isna().all() and result.summary["MU95"].isna().all()
    assert result.notes["FQ"] == NO_FQ and "retain_model" in result.notes["MU95"]
    assert np.isfinite(result.summary["AUES"]).all()
    assert len(compare.checkpoint_figures(result)) == 1  # FS–RS only
    run = wb.RunDir.create("evaluate-checkpoints", {"before": "model"}, outputs=tmp_path, run_id="x")
    paths = compare.save_pair(run, result)
    assert {"per_alpha", "per_example", "summary", "ends", "notes", "figures"} <= set(paths)
    assert (run.path / "figures.html").read_text().count("plotly") > 0
    assert pd.read_csv(run.path / "summary.csv")["scenario"].tolist() == ["LlamaForCausalLM"]


def test_bad_inputs_are_refused_with_the_fix(pair):
    tok, model, unlearned, data, root = pair
    with pytest.raises(ValueError, match="needs its tokenizer"):
        evaluate_pair(model, unlearned, data, alphas=ALPHAS, device="cpu", progress=False)
    with pytest.raises(ValueError, match="one distinct name per after checkpoint"):
        evaluate_pair(model, [unlearned, unlearned], data, tokenizer=tok, labels=["a"], device="cpu", progress=False)


def _lora_folder(model, root):
    peft = pytest.importorskip("peft", reason="peft not installed (pip install 'loc-unlearn-workbench[peft]')")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["down_proj", "q_proj"], init_lora_weights=False)
    adapted = peft.get_peft_model(copy.deepcopy(model), config)
    adapted.save_pretrained(root / "lora")
    return root / "lora", adapted.merge_and_unload()


def test_a_lora_adapter_folder_is_its_merged_model(pair):
    tok, model, unlearned, data, root = pair
    folder, merged = _lora_folder(model, root)
    cfg = EvalConfig(batch_size=8, generate=False)
    result = evaluate_pair(str(root / "before"), str(folder), data, alphas=(0.0, 1.0), eval_config=cfg, device="cpu",
                           progress=False)
    end = Evaluator(tok, data, cfg).evaluate(merged).summary
    last = result.per_alpha.sort_values("alpha").iloc[-1]
    assert result.per_alpha["scenario"].iloc[0] == "lora"
    assert last["FS"] == pytest.approx(end["FS"], abs=1e-6) and last["RS"] == pytest.approx(end["RS"], abs=1e-6)


def test_an_adapter_without_peft_names_the_fix(pair, monkeypatch):
    import builtins

    from workbench.models.checkpoints import ADAPTER_CONFIG, merged_adapter

    tok, model, unlearned, data, root = pair
    folder = root / "fake-adapter"
    folder.mkdir(exist_ok=True)
    (folder / ADAPTER_CONFIG).write_text("{}")
    real_import = builtins.__import__
    def no_peft(name, *args, **kwargs):
        if name == "peft":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ImportError, match=r"adapter folder.*pip install 'loc-unlearn-workbench\[peft\]'"):
        merged_adapter(folder, model)


def _recording_loader(monkeypatch):
    """Wrap the loader evaluate_pair uses: for each load, how many models loaded earlier are still alive
    (on the device) at that moment."""
    import weakref

    from workbench.experiments import pair as pair_mod

    real, alive, seen = pair_mod.load_model, [], []

    def load(*args, **kwargs):
        seen.append(sum(ref() is not None for ref in alive))
        model, tok = real(*args, **kwargs)
        alive.append(weakref.ref(model))
        return model, tok

    monkeypatch.setattr(pair_mod, "load_model", load)
    return seen


def test_theta_r_leaves_the_device_before_theta_before_arrives(pair, monkeypatch):
    """θr's reference truth ratios are computed and θr released before θ_before is loaded (it used to be
    loaded beside θ_before); the numbers are those of θr = θ_before (FQ = 0 at α = 0)."""
    tok, model, unlearned, data, root = pair
    seen = _recording_loader(monkeypatch)
    result = evaluate_pair(str(root / "before"), str(root / "ga"), data, retain_model=str(root / "before"), alphas=(0.0, 1.0),
                           eval_config=EvalConfig(batch_size=8, generate=False), device="cpu", progress=False)
    assert seen == [0, 0]  # two loads (θr, then θ_before), each with no other model alive
    assert result.per_alpha.sort_values("alpha")["FQ"].iloc[0] == 0.0


def test_theta_r_reference_is_the_forget_truth_ratio_of_a_full_evaluation_in_both_paths(pair, tmp_path):
    """θr's reference truth ratios (forget split only, no generation) equal the forget rows' truth ratios of
    a full evaluation with generation, which is what sessions used to cache; the session's cached copy and
    evaluate_pair's θr give those numbers too."""
    from types import SimpleNamespace

    from workbench.experiments.reference import reference_truth_ratios
    from workbench.experiments.session import Session, retain_reference
    from workbench.runs.cache import Cache

    tok, model, unlearned, data, root = pair
    full = Evaluator(tok, data, CFG).evaluate(model).per_example
    expected = full[full["split"] == "forget"]["truth_ratio"].to_numpy()
    assert len(expected) == len(data.forget) and np.isfinite(expected).all()
    # other batches (the forget split alone): equal to fp32 rounding (one ulp of an NLL, 6e-8 relative, seen here)
    np.testing.assert_allclose(reference_truth_ratios(model, tok, data, CFG), expected, rtol=1e-6, atol=0)
    session = Session(SimpleNamespace(dtype="float32", eval_dtype=""), data, model, tok, "θr", Cache(tmp_path),
                      Evaluator(tok, data, CFG), progress=False)
    for _ in range(2):  # built, then served from the cache
        np.testing.assert_allclose(retain_reference(session), expected, rtol=1e-6, atol=0)
    assert len(list((tmp_path / "reference_truth_ratios").iterdir())) == 1
    result = evaluate_pair(model, unlearned, data, retain_model=str(root / "before"), tokenizer=tok, alphas=(0.0,),
                           eval_config=CFG, device="cpu", progress=False)
    assert result.per_alpha["FQ"].iloc[0] == 0.0  # θr's truth ratios are θ_before's own: KS p = 1


def test_an_adapter_of_another_base_is_refused_by_name_before_loading(pair, monkeypatch):
    import json

    from workbench.experiments import pair as pair_mod

    tok, model, unlearned, data, root = pair
    folder = root / "foreign-lora"
    folder.mkdir(exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/other-model", "peft_type": "LORA"}))
    monkeypatch.setattr(pair_mod, "load_model", lambda *a, **k: pytest.fail("loaded a model before refusing"))
    with pytest.raises(ValueError, match=r"PEFT adapter of 'org/other-model'.*'before' is .*before'.*--before org/other-model"):
        evaluate_pair(str(root / "before"), str(folder), data, alphas=ALPHAS, device="cpu", progress=False)
    # the same base under its own name, or recorded as the before folder, is accepted
    from workbench.models.checkpoints import adapter_base_problem

    assert adapter_base_problem(str(folder), "org/other-model") is None
    assert adapter_base_problem(str(folder), "/models/hub/models--org--other-model/snapshots/abc123") is None


def test_an_adapter_is_merged_on_the_host_without_a_copy_of_the_model_where_it_is(pair, monkeypatch):
    """With a loaded θ_before (on the device), the adapter's base is a host copy made tensor by tensor
    (``host_copy``), in fp32; the former code deep-copied the whole model where it was, then moved it.
    Every tensor deep-copied in place is recorded; the merge equals θ + BA computed in fp32."""
    from torch import nn

    from workbench.models.checkpoints import merged_adapter

    tok, model, unlearned, data, root = pair
    folder, _ = _lora_folder(model, root)
    bf16 = copy.deepcopy(model).to(torch.bfloat16)
    reference = merged_adapter(folder, copy.deepcopy(bf16).float())
    copied = []
    for cls in (torch.Tensor, nn.Parameter):
        def record(self, memo, _original=cls.__deepcopy__):
            copied.append(self.numel() * self.element_size())
            return _original(self, memo)
        monkeypatch.setattr(cls, "__deepcopy__", record)
    merged = merged_adapter(folder, bf16)
    model_bytes = sum(p.numel() * p.element_size() for p in bf16.parameters())
    assert sum(copied) < model_bytes / 10, (sum(copied), model_bytes)
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" and torch.equal(v, reference[k]) for k, v in merged.items())


def test_a_before_folder_with_only_pytorch_model_bin_is_read_like_an_after_folder(pair, tmp_path):
    import shutil

    from test_checkpoints import _to_pytorch_bin

    tok, model, unlearned, data, root = pair
    before_bin = Path(shutil.copytree(root / "before", tmp_path / "before-bin"))
    _to_pytorch_bin(before_bin, model)
    cfg = EvalConfig(batch_size=8, generate=False)
    kwargs = dict(alphas=ALPHAS, eval_config=cfg, device="cpu", progress=False)
    from_bin = evaluate_pair(str(before_bin), str(root / "ga"), data, **kwargs).per_alpha
    from_safetensors = evaluate_pair(str(root / "before"), str(root / "ga"), data, **kwargs).per_alpha
    columns = ["alpha", "FS", "RS", "MU"]
    pd.testing.assert_frame_equal(from_bin[columns], from_safetensors[columns])
