"""Memory pre-flight: a run whose stages cannot fit the device is refused before any training, with a
message naming the stage, the estimate, the device's memory and the fix; one that fits proceeds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as tf
import yaml

from workbench.experiments import chain, pair, preflight
from workbench.experiments import session as pipeline
from workbench.models import GIB, DoesNotFit, memory
from workbench.regions import random_region
from workbench.runs import config

SMOKE = yaml.safe_load(open("params/oracle-vs-random/smoke.yaml"))
PAPER = yaml.safe_load(open("params/oracle-vs-random/paper-llama.yaml"))
LLAMA_8B = tf.LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False)
GPU_80GB = 80 * 10**9  # an A100 / H100 80 GB: 74.5 GiB
H200 = 139 * GIB


def _fake_device(monkeypatch, n_bytes: int) -> None:
    monkeypatch.setattr(memory, "device_memory", lambda device: (n_bytes, "faked in the test"))


def _paper(**over):
    return config.from_params("oracle-vs-random", {**PAPER, **over})


@pytest.mark.unit
def test_paper_llama_fine_tuning_of_theta_r_is_refused_on_one_h200_and_the_rest_fits(monkeypatch):
    _fake_device(monkeypatch, H200)
    stages = preflight.memory_stages(_paper(), LLAMA_8B, 256)
    with pytest.raises(DoesNotFit) as refused:
        memory.require_fits([(name, *v) for name, v in stages.items()], "cuda")
    message = str(refused.value)
    assert "θr needs 144.1 GiB" in message and "139.0 GiB" in message  # stage, estimate, device memory
    assert "--stage retain" in message and "retain_model=" in message  # the fix
    assert "injection" not in message and "sweeps" not in message  # what fits is not listed
    brought = preflight.memory_stages(_paper(retain_model="/ckpt/theta_r"), LLAMA_8B, 256)
    assert "θr" not in brought
    memory.require_fits([(name, *v) for name, v in brought.items()], "cuda")  # θr brought: everything fits


OLMO2_7B = tf.Olmo2Config(vocab_size=100352, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False)


@pytest.mark.unit
@pytest.mark.parametrize("path", sorted(Path("params").glob("*/paper-*.yaml")), ids=str)
def test_each_paper_file_says_what_to_bring_and_fits_one_80gb_gpu_once_it_is_brought(path, monkeypatch):
    _fake_device(monkeypatch, GPU_80GB)
    notebook, params = path.parent.name, yaml.safe_load(path.read_text())
    brought = ["retain"] + (["full"] if notebook == "revisit-localizers" else [])
    assert all(params.get(f"{w}_model") == "" for w in brought)  # the key is there, with its instructions
    assert all(f"--stage {w}" in path.read_text() for w in brought)
    model = LLAMA_8B if "llama" in path.name else OLMO2_7B
    base = "full" if "full" in brought else "retain"
    stages = preflight.memory_stages(config.from_params(notebook, params), model, 256, base=base)
    with pytest.raises(DoesNotFit) as refused:
        memory.require_fits([(name, *v) for name, v in stages.items()], "cuda")
    assert [line.split(" needs")[0].strip() for line in str(refused.value).splitlines()[1:]] == [
        {"retain": "θr", "full": "θ_full"}[w] for w in brought]
    ready = config.from_params(notebook, {**params, **{f"{w}_model": f"outputs/theta_{w}" for w in brought}})
    stages = preflight.memory_stages(ready, model, 256, base=base)
    memory.require_fits([(name, *v) for name, v in stages.items()], "cuda")


@pytest.mark.unit
def test_a_frozen_reference_model_counts_in_every_stage_after_theta_r():
    l2 = config.from_params("l2-mlp-supervision", yaml.safe_load(open("params/l2-mlp-supervision/paper-llama.yaml")))
    with_ref = preflight.memory_stages(l2, LLAMA_8B, 256)  # the L2 MLP objective keeps a frozen θr
    plain = preflight.memory_stages(_paper(objectives=["npo"]), LLAMA_8B, 256)
    weights = with_ref["injection"][0]["weights_bytes"]  # bf16, as the frozen copy
    assert with_ref["injection"][0]["total_bytes"] - plain["injection"][0]["total_bytes"] == weights
    assert with_ref["sweeps"][0]["total_bytes"] == plain["sweeps"][0]["total_bytes"]  # parked on the host meanwhile
    assert with_ref["θr"][0]["total_bytes"] == plain["θr"][0]["total_bytes"]


def _cfg(**over):
    return config.from_params("oracle-vs-random", {**SMOKE, "objectives": ["npo"], "localizers": ["activations"],
                                                   "device": "cpu", "pretrain_epochs": 0, **over})


@pytest.mark.integration
def test_a_session_that_cannot_fit_is_refused_before_any_training_and_one_that_fits_proceeds(tmp_path, monkeypatch):
    trained = []
    original = chain.finetune
    monkeypatch.setattr(chain, "finetune", lambda *a, **k: trained.append(k.get("desc")) or original(*a, **k))
    _fake_device(monkeypatch, GIB // 2)
    with pytest.raises(DoesNotFit) as refused:
        pipeline.open_session(_cfg(), cache_root=str(tmp_path), progress=False)
    message = str(refused.value)
    assert trained == []  # refused before θr's fine-tuning
    for stage in ("θr needs", "injection needs", "unlearning with npo needs", "localization with activations needs",
                  "sweeps needs"):
        assert stage in message
    assert "0.5 GiB" in message and "train_distributed.sh full" in message and "lower batch_size" in message
    _fake_device(monkeypatch, 64 * GIB)
    session = pipeline.open_session(_cfg(), cache_root=str(tmp_path), progress=False)
    assert trained == ["fine-tune θ_retain"]
    _fake_device(monkeypatch, GIB // 2)  # memory taken meanwhile: the next stage stops before its work
    with pytest.raises(DoesNotFit, match="injection needs"):
        session.inject(random_region(session.model, 0.1, seed=7))


@pytest.mark.integration
def test_evaluate_pair_is_refused_before_any_model_is_loaded(tmp_path, monkeypatch):
    from workbench.data import load_data

    tf.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                   num_attention_heads=4).save_pretrained(tmp_path / "before")  # config.json is all it reads
    monkeypatch.setattr(pair, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    _fake_device(monkeypatch, GIB // 2)
    data = load_data("synthetic-tofu", n_authors=4, n_forget_authors=1, seed=0)
    with pytest.raises(DoesNotFit) as refused:
        pair.evaluate_pair(str(tmp_path / "before"), [str(tmp_path / "before")], data, device="cpu", progress=False)
    assert "evaluate (mixing sweeps) needs" in str(refused.value) and "0.5 GiB" in str(refused.value)
    _fake_device(monkeypatch, 64 * GIB)
    with pytest.raises(pytest.fail.Exception, match="a model was loaded"):  # it fits: on to loading
        pair.evaluate_pair(str(tmp_path / "before"), [str(tmp_path / "before")], data, device="cpu", progress=False)


@pytest.mark.unit
def test_sweeps_park_the_frozen_theta_r_on_the_host_and_bring_it_back():
    """An 8B sweep in float32 has no room for the frozen θr beside θ(α) on an 80 GB GPU (OLMo-2-7B's l2 file: 75 GiB
    with it); the pre-flight leaves it out of the sweeps' estimate because the sweep parks it on the host."""
    from workbench.experiments.session import parked

    class OnGpu(torch.nn.Module):  # a module that says it is on a GPU and records where it is sent
        def __init__(self):
            super().__init__()
            self.moves, self.where = [], torch.device("cuda", 0)
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def parameters(self, recurse=True):
            yield type("P", (), {"device": self.where})()

        def to(self, device):
            self.moves.append(str(device))
            self.where = torch.device(device)
            return self

    model = OnGpu()
    with parked(model):
        assert model.where.type == "cpu"
    assert model.moves == ["cpu", "cuda:0"]
    with pytest.raises(RuntimeError), parked(model):
        raise RuntimeError("a sweep that fails still gives θr back")
    assert model.where == torch.device("cuda", 0)
    with parked(None):  # no objective needs θr
        pass
    olmo_l2 = config.from_params("l2-mlp-supervision",
                                 yaml.safe_load(Path("params/l2-mlp-supervision/paper-olmo.yaml").read_text()))
    stages = preflight.memory_stages(olmo_l2, OLMO2_7B, 256)
    assert "reference_bytes" not in stages["sweeps"][0] and "reference_bytes" in stages["unlearning with l2_mlp"][0]
