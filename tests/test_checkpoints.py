"""Bring your own θr / θ_full: folders the workbench writes are complete and load in transformers 4.x,
a brought checkpoint replaces fine-tuning and is keyed by its content, and θr trained on two
processes from a notebook's parameter file is what that notebook takes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from workbench.data import config_data
from workbench.experiments import chain, session
from workbench.models import load_pretrained, resolve_device, save_model_folder
from workbench.models.tiny import train_bpe_tokenizer
from workbench.runs import config, grid
from workbench.runs.cache import Cache

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "params/oracle-vs-random/smoke.yaml").read_text())


def _cfg(**over):
    return config.from_params("oracle-vs-random", {**SMOKE, "objectives": ["npo"], "localizers": [], "device": "cpu",
                                                   **over})


@pytest.mark.integration
def test_saved_folders_name_what_transformers_4_can_load(tmp_path):
    import transformers as tf

    tok = train_bpe_tokenizer(["hello world " * 10, "the quick brown fox"], vocab_size=300)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=4, rope_theta=500000.0)).eval()
    folder = save_model_folder(model, tok, tmp_path / "m")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    saved = json.loads((folder / "config.json").read_text())
    assert saved["rope_theta"] == 500000.0  # 4.x ignores rope_parameters and would silently use 10,000
    again, tok2 = load_pretrained(str(folder), device="cpu")
    ids = torch.tensor([tok("hello world")["input_ids"]])
    assert torch.equal(again(ids).logits, model(ids).logits) and tok2("hello world") == tok("hello world")


def _theta_r_folder(cfg, cache_root: Path, folder: Path) -> Path:
    cache = Cache(cache_root)
    data = config_data(cfg)
    _, model, tok = chain.chain_model(cfg, data, cache, resolve_device("cpu"), which="retain", force=False,
                                      progress=False)
    return save_model_folder(model, tok, folder)


@pytest.mark.integration
def test_a_brought_retain_model_replaces_fine_tuning_and_is_keyed_by_content(tmp_path, monkeypatch):
    folder = _theta_r_folder(_cfg(), tmp_path / "elsewhere", tmp_path / "theta_r")
    trained = []
    monkeypatch.setattr(chain, "finetune", lambda *a, **k: trained.append(k.get("desc")))
    s = session.open_session(_cfg(retain_model=str(folder)), cache_root=str(tmp_path / "cache"), progress=False)
    assert trained == []  # neither θp nor θr was trained
    assert not (tmp_path / "cache" / "theta_p").exists() and not (tmp_path / "cache" / "theta_retain").exists()
    expected, _ = load_pretrained(str(folder), device="cpu")
    for (name, a), b in zip(s.model.state_dict().items(), expected.state_dict().values()):
        assert torch.equal(a, b), name
    copy = Path(shutil.copytree(folder, tmp_path / "copied"))  # same content elsewhere: same key
    cache = Cache(tmp_path / "cache")
    key = chain.external_model(_cfg(retain_model=str(copy)), config_data(_cfg()), cache, "cpu", which="retain")[0]
    assert key == s.base_key
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\1")  # one changed weight: a new key
    assert chain.external_model(_cfg(retain_model=str(copy)), config_data(_cfg()), cache, "cpu", which="retain")[0] != key


@pytest.mark.integration
def test_a_brought_checkpoint_with_another_forget_set_gets_its_own_entries(tmp_path):
    """Everything downstream of a brought θr keys on its key alone: with two forget authors instead of one, the
    same checkpoint must not be served the first forget set's reference truth ratios (20 where there are 40)."""
    folder = _theta_r_folder(_cfg(), tmp_path / "elsewhere", tmp_path / "theta_r")
    one, two = (session.open_session(_cfg(retain_model=str(folder), n_forget_authors=n), cache_root=str(tmp_path / "c"),
                                     progress=False) for n in (1, 2))
    assert one.base_key != two.base_key
    assert len(two.data.forget) == 2 * len(one.data.forget) == len(two.evaluator.reference_forget_tr)


@pytest.mark.integration
def test_a_brought_full_model_replaces_fine_tuning_on_the_full_set(tmp_path, monkeypatch):
    folder = _theta_r_folder(_cfg(), tmp_path / "elsewhere", tmp_path / "theta_full")  # any checkpoint will do
    smoke = yaml.safe_load((ROOT / "params/revisit-localizers/smoke.yaml").read_text())
    revisit = config.from_params("revisit-localizers", {**smoke, "full_model": str(folder), "device": "cpu"})
    monkeypatch.setattr(chain, "finetune", lambda *a, **k: pytest.fail("θ_full was fine-tuned although brought"))
    key, model, _ = chain.chain_model(revisit, config_data(revisit), Cache(tmp_path / "cache"), "cpu",
                                      which="full", force=False, progress=False)
    expected, _ = load_pretrained(str(folder), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    assert key == chain.external_model(revisit, config_data(revisit), Cache(tmp_path / "cache"), "cpu", which="full")[0]


@pytest.mark.slow
@pytest.mark.notebooks
def test_two_ranks_train_theta_r_that_the_notebook_takes_without_retraining(tmp_path):
    """End to end on CPU: θr trained on 2 gloo ranks from the smoke parameter file, then the
    oracle-vs-random smoke run with ``retain_model=`` (its θr is not retrained)."""
    cache, out = tmp_path / "cache", tmp_path / "theta_r"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "WORKBENCH_CACHE": str(cache),
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29581",
           "-m", "workbench.distributed", "--mode", "full", "--notebook", "oracle-vs-random",
           "--params", "params/oracle-vs-random/smoke.yaml", "--stage", "retain", "--out", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    info = json.loads((out / "workbench_training.json").read_text())
    assert info["processes"] == 2 and info["distributed_type"].endswith("MULTI_CPU")
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}

    # The same θr as the notebook's own fine-tuning (same θp, data and formatting), up to float noise.
    inprocess = _theta_r_folder(_cfg(), cache, tmp_path / "inprocess")
    a, _ = load_pretrained(str(out), device="cpu")
    b, _ = load_pretrained(str(inprocess), device="cpu")
    p0, _ = load_pretrained(str(next((cache / "theta_p").glob("*/model"))), device="cpu")
    for (name, x), y, z in zip(a.state_dict().items(), b.state_dict().values(), p0.state_dict().values()):
        assert (x - y).abs().max() <= 0.05 * (y - z).abs().max() + 1e-6, name

    shutil.rmtree(cache / "theta_retain")  # the notebook must not need (or rebuild) it
    name, path = grid.resolve_notebook("oracle-vs-random")
    params = grid.validate(name, path, grid.merge_params(["params/oracle-vs-random/smoke.yaml", f"retain_model={out}"],
                                                         ROOT))
    spec = grid.RunSpec(notebook=name, path=str(path), params=params, run_id="byo", outputs=str(tmp_path / "o"))
    old = os.environ.get("WORKBENCH_CACHE")
    os.environ["WORKBENCH_CACHE"] = str(cache)
    try:
        result = grid.execute(spec)
    finally:
        os.environ.pop("WORKBENCH_CACHE") if old is None else os.environ.__setitem__("WORKBENCH_CACHE", old)
    assert result.state == "complete", result.error
    assert not (cache / "theta_retain").exists()  # θr was taken, not retrained
    assert json.loads((Path(result.run_dir) / "params.json").read_text())["params"]["retain_model"] == str(out)


TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"


def _fake_hub(monkeypatch, repo: Path, cache: Path) -> list[dict]:
    """``huggingface_hub.snapshot_download`` over a local folder laid out as a hub repository: the
    files the patterns select (the hub's own filter) are copied into a snapshot folder."""
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    calls = []

    def snapshot_download(repo_id, *, revision=None, allow_patterns=None, ignore_patterns=None, **_):
        calls.append({"repo_id": repo_id, "allow_patterns": allow_patterns})
        files = [str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()]
        snapshot = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "0123abc"
        for name in filter_repo_objects(files, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(repo / name, snapshot / name)
        snapshot.mkdir(parents=True, exist_ok=True)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


@pytest.mark.integration
def test_a_hub_checkpoint_keeps_its_chat_template_and_sentencepiece_model(tmp_path, monkeypatch):
    """transformers >= 5 saves a chat template as chat_template.jinja; SentencePiece tokenizers live in
    tokenizer.model. Both used to be left behind by the download (safetensors and json only), and the
    model was then evaluated with the plain prompt without a word. Other weight formats stay behind."""
    from transformers import AutoTokenizer

    from workbench.models.checkpoints import local_folder

    tok = train_bpe_tokenizer(["hello world " * 10, "the quick brown fox"], vocab_size=300)
    tok.chat_template = TEMPLATE
    repo = tmp_path / "repo"
    import transformers as tf

    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                               num_hidden_layers=1, num_attention_heads=2))
    save_model_folder(model, tok, repo)
    assert (repo / "chat_template.jinja").is_file()  # where transformers 5 keeps it
    (repo / "tokenizer.model").write_bytes(b"sentencepiece model")
    (repo / "original").mkdir()
    (repo / "original" / "consolidated.00.pth").write_bytes(b"\0" * 64)
    _fake_hub(monkeypatch, repo, tmp_path / "hub")
    folder = local_folder("org/model")
    names = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert {"chat_template.jinja", "tokenizer.model", "model.safetensors", "config.json"} <= names
    assert "original/consolidated.00.pth" not in names
    assert AutoTokenizer.from_pretrained(folder).chat_template == TEMPLATE


@pytest.mark.integration
def test_a_hub_checkpoint_with_only_pytorch_bin_weights_gets_them(tmp_path, monkeypatch):
    from workbench.models.checkpoints import local_folder

    tok = train_bpe_tokenizer(["hello world " * 10], vocab_size=300)
    import transformers as tf

    model = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                                               num_hidden_layers=1, num_attention_heads=2))
    save_model_folder(model, tok, tmp_path / "repo")
    _to_pytorch_bin(tmp_path / "repo", model)
    calls = _fake_hub(monkeypatch, tmp_path / "repo", tmp_path / "hub")
    folder = local_folder("org/bin-only")
    assert (folder / "pytorch_model.bin").is_file() and len(calls) == 2
    again, _ = load_pretrained(str(folder), device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def _to_pytorch_bin(folder: Path, model) -> None:
    """The folder as older transformers saved it: weights in pytorch_model.bin, no safetensors (5.x writes none)."""
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
