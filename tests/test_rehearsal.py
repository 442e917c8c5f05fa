"""The rehearsal (scripts/rehearsal.sh, ``make rehearsal``): the paper parameter files end to end on stand-ins.

* ``unit``: a stand-in laid out as a hub cache resolves offline by its hub id (``snapshot_download``
  with ``local_files_only``, and :func:`workbench.models.load_pretrained` by id and commit), keeps the
  architecture features that matter, and its chat template is found through that loading path.
* ``slow``: every notebook's rehearsal run folder is complete and its per-example table's prompts
  start with the stand-in's chat-template header; θr / θ_full were trained on 2 ranks; ``evaluate``
  and ``benchmarks/gpu_check.py`` ran. Reads ``$REHEARSAL_DIR`` when it holds a finished rehearsal
  (``make rehearsal`` runs the script, then this test), else runs the whole rehearsal (about 50 min on 2 cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from workbench.models import standins

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["revisit-localizers", "oracle-vs-random", "l2-mlp-supervision", "lume"]
MODELS = {"llama": standins.LLAMA_ID, "olmo": standins.OLMO_ID}
TEXTS = ["The author's full name is Hsiao Yun-Hwa.", "What genre does the writer specialise in?",
         "Leadership books, written in Taipei, Taiwan."] * 20


def small(spec: standins.StandIn) -> standins.StandIn:
    """The same stand-in with 2 layers and a 300-token vocabulary (seconds to build)."""
    return dataclasses.replace(spec, config={**spec.config, "num_hidden_layers": 2}, vocab_size=300)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty hub cache that huggingface_hub and transformers read, offline."""
    from huggingface_hub import constants

    hub = tmp_path / "hf" / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return hub


@pytest.mark.unit
@pytest.mark.parametrize("hub_id", sorted(standins.STANDINS))
def test_a_stand_in_resolves_offline_by_its_hub_id_with_its_chat_template(offline_hub, hub_id):
    from huggingface_hub import snapshot_download

    from workbench.data.formatting import prompt_text
    from workbench.models import load_pretrained

    spec = small(standins.STANDINS[hub_id])
    commit = standins.build_standin(spec, TEXTS, offline_hub)
    repo = offline_hub / standins.repo_folder(hub_id)
    assert (repo / "refs" / "main").read_text() == commit
    folder = Path(snapshot_download(hub_id, local_files_only=True))
    assert folder == repo / "snapshots" / commit
    assert (folder / "chat_template.jinja").read_text() == spec.chat_template
    assert all(p.is_symlink() and p.resolve().parent == repo / "blobs" for p in folder.iterdir())

    model, tokenizer = load_pretrained(hub_id, device="cpu", dtype="bfloat16", revision=commit)
    assert type(model).__name__ == spec.config_class.replace("Config", "ForCausalLM")
    assert tokenizer.chat_template == spec.chat_template
    assert prompt_text(tokenizer, "Who wrote it?").startswith(spec.header)
    assert tokenizer.eos_token == spec.eos and tokenizer.bos_token == spec.bos
    assert not model.config.tie_word_embeddings


@pytest.mark.unit
def test_the_llama_stand_in_has_grouped_query_attention_and_llama3_rope(offline_hub):
    from workbench.models import load_pretrained

    standins.build_standin(small(standins.STANDINS[standins.LLAMA_ID]), TEXTS, offline_hub)
    model, _ = load_pretrained(standins.LLAMA_ID, device="cpu", dtype="bfloat16")
    config = model.config
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.rope_parameters["rope_type"] == "llama3" and config.rope_parameters["rope_theta"] == 500000.0
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()


@pytest.mark.unit
def test_the_olmo_stand_in_has_query_key_norms(offline_hub):
    from workbench.models import load_pretrained

    standins.build_standin(small(standins.STANDINS[standins.OLMO_ID]), TEXTS, offline_hub)
    model, tokenizer = load_pretrained(standins.OLMO_ID, device="cpu")
    attention = model.model.layers[0].self_attn
    assert hasattr(attention, "q_norm") and hasattr(attention, "k_norm")
    assert tokenizer.pad_token == "<|pad|>"


@pytest.mark.unit
def test_a_rebuilt_stand_in_has_the_same_commit(tmp_path):
    spec = small(standins.STANDINS[standins.LLAMA_ID])
    assert standins.build_standin(spec, TEXTS, tmp_path / "a") == standins.build_standin(spec, TEXTS, tmp_path / "b")


@pytest.mark.integration
def test_the_per_example_table_shows_the_prompt_with_its_chat_template():
    """What makes "was the chat template applied?" answerable from a run's files."""
    from workbench.data import load_data
    from workbench.evaluation import EvalConfig, Evaluator

    spec = small(standins.STANDINS[standins.LLAMA_ID])
    tokenizer = standins.standin_tokenizer(spec, TEXTS)
    data = load_data("synthetic-tofu", n_authors=2, n_forget_authors=1, seed=0)
    table = Evaluator(tokenizer, data, EvalConfig(generate=False)).evaluate(standins.standin_model(spec, tokenizer)).per_example
    assert table["prompt"].str.startswith(spec.header).all()
    assert table["prompt"].str.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n").all()


@pytest.mark.unit
def test_a_hub_checkpoint_is_keyed_by_the_commit_it_loaded(offline_hub, tmp_path):
    """transformers 5 dropped ``config._commit_hash``: the key must still change with the hub commit."""
    from workbench.experiments.chain import checkpoint_identity
    from workbench.models import load_pretrained
    from workbench.runs.cache import Cache

    spec = small(standins.STANDINS[standins.LLAMA_ID])
    first = standins.build_standin(spec, TEXTS, offline_hub)
    second = standins.build_standin(dataclasses.replace(spec, seed=1), TEXTS, offline_hub)  # a new "main"
    cache = Cache(tmp_path / "cache")
    model, _ = load_pretrained(standins.LLAMA_ID, device="cpu")
    assert checkpoint_identity(cache, model, standins.LLAMA_ID)["commit"] == second
    old, _ = load_pretrained(standins.LLAMA_ID, device="cpu", revision=first)
    assert checkpoint_identity(cache, old, standins.LLAMA_ID, revision=first)["commit"] == first


# -- the rehearsal itself -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory) -> Path:
    given = os.environ.get("REHEARSAL_DIR")
    if given and (Path(given) / "timings.tsv").is_file():
        return Path(given)
    folder = tmp_path_factory.mktemp("rehearsal")
    done = subprocess.run(["bash", "scripts/rehearsal.sh"], cwd=ROOT, env={**os.environ, "REHEARSAL_DIR": str(folder)},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-4000:]
    return folder


def steps_ok(folder: Path) -> dict[tuple[str, str], str]:
    rows = [line.split("\t") for line in (folder / "timings.tsv").read_text().splitlines() if line]
    return {(model, step): state for model, step, _, state in rows}


REHEARSAL_TIMEOUT = 4 * 3600  # seconds, when the fixture runs the whole rehearsal itself


@pytest.mark.slow
@pytest.mark.timeout(REHEARSAL_TIMEOUT)
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_each_notebook_ran_on_the_stand_in_with_its_chat_template(rehearsal, model, notebook):
    from workbench.runs.rundir import RunDir

    run = rehearsal / "outputs" / notebook / f"rehearsal-{model}"
    assert RunDir(run).is_complete(), f"{run} is not a complete run"
    params = json.loads((run / "params.json").read_text())["params"]
    assert params["model"] == MODELS[model] and params["dtype"] == "bfloat16" and params["gradient_checkpointing"]
    assert Path(params["retain_model"]).resolve().is_relative_to(Path(rehearsal).resolve())  # θr from train_distributed
    prompts = per_example_prompts(run)
    header = standins.STANDINS[MODELS[model]].header
    assert prompts and all(p.startswith(header) for p in prompts), prompts[:2]


def per_example_prompts(run: Path) -> list[str]:
    """The prompts of the run's per-example table."""
    return pd.read_parquet(run / "per_example.parquet", columns=["prompt"])["prompt"].astype(str).tolist()


@pytest.mark.slow
@pytest.mark.timeout(REHEARSAL_TIMEOUT)
@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_distributed_stages_evaluate_and_gpu_check_ran(rehearsal, model):
    states = steps_ok(rehearsal)
    assert all(states.get((model, s)) == "ok" for s in ("theta_r", "theta_r_lume", "theta_full", "restricted",
                                                         "evaluate", "gpu_check")), states
    for stage in ("theta_r", "theta_r_lume", "theta_full"):
        info = json.loads((rehearsal / model / stage / "workbench_training.json").read_text())
        assert info["processes"] == 2 and info["distributed_type"].endswith("MULTI_CPU")
    assert (rehearsal / model / "delta" / "delta.safetensors").is_file()
    assert not json.loads((rehearsal / model / "gpu_check.json").read_text())["problems"]
    from workbench.runs.rundir import RunDir

    assert RunDir(rehearsal / "outputs" / "evaluate-checkpoints" / f"rehearsal-{model}").is_complete()
