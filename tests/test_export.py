"""``workbench export``: a run's models leave the workbench as Hugging Face folders, unchanged.

One smoke run of oracle-vs-random (NPO only, no localizers) into a temporary outputs folder and
cache. Its θo, θr and unlearned models are exported, reloaded with ``transformers.Auto*`` and
compared with the same models as the run computed them (the session's θo with the unlearning delta
mixed in at α, as the sweep evaluated them): the logits are equal bit for bit in fp32, and the
workbench's evaluator gives the run's own per-α numbers at α = 0 and α = 1. The command line is
run in a subprocess, the refusals through ``cli.main``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from workbench.data.formatting import collate, encode_all
from workbench.evaluation import Evaluator
from workbench.experiments.export import export_model, older_transformers_tokenizer, run_threads
from workbench.experiments.session import delta_identity, open_session
from workbench.models.folders import make_v4_compatible
from workbench.regions import random_region
from workbench.runs import cli, config, grid

ROOT = Path(__file__).resolve().parents[1]
NB = "oracle-vs-random"
SEED, OBJECTIVE = 7, "npo"
RANDOM_SEED = 1000 * SEED + 1  # the first Random region of target seed 7 (config.random_seeds_for)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """(run folder, cache root) of one smoke run, executed as `workbench run` executes it."""
    outputs, cache = tmp_path_factory.mktemp("outputs"), tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("WORKBENCH_CACHE", str(cache))
    name, path = grid.resolve_notebook(NB)
    params = grid.merge_params([f"params/{NB}/smoke.yaml", f"objectives=[{OBJECTIVE}]", "localizers=[]"], ROOT)
    spec = grid.RunSpec(notebook=name, path=str(path), params=grid.validate(name, path, params), run_id="smoke",
                        outputs=str(outputs), threads=1)
    result = grid.execute(spec)
    mp.undo()
    assert result.state == "complete", result.error
    return Path(result.run_dir), cache


@pytest.fixture(scope="module")
def run_models(smoke_run):
    """The run's models as its sweeps evaluated them: θo of seed 7 and its NPO deltas (oracle, random).

    Computed with the run's threads (as ``export`` does): the thread count is part of every cache key, so
    under the Makefile's two threads the session would otherwise train its own θr, equal only in the last
    bits to the one-thread run's."""
    run, cache = smoke_run
    info = json.loads((run / "params.json").read_text())
    cfg = config.from_params(NB, info["params"])
    entries = _entries(cache)
    with run_threads(info["threads"]):
        session = open_session(cfg, cache_root=str(cache), progress=False)
        v_tgt = random_region(session.model, cfg.region_fraction, SEED)
        delta_o, _ = session.inject(v_tgt)
        start = delta_identity(delta_o)
        deltas = {}
        with session.at(delta_o):
            for scenario, region in (("oracle", v_tgt), ("random", random_region(session.model, cfg.region_fraction,
                                                                                  RANDOM_SEED, exclude=v_tgt))):
                deltas[scenario] = session.unlearn(region, OBJECTIVE, cfg.lr_for(OBJECTIVE), start_key=start)
    built = sorted(set(_entries(cache)) - set(entries))
    assert not built, f"the test's session built {built}: it should take every model from the run's cache entries"
    return session, delta_o, deltas


def _entries(cache: Path) -> list[str]:
    """The cache's entries (kind/key folders), lock files left out."""
    return [f"{kind.name}/{entry.name}" for kind in cache.iterdir() if kind.is_dir()
            for entry in kind.iterdir() if not entry.name.startswith(".")]


def _reload(folder: Path):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder)


@torch.no_grad()
def _logits(model, session) -> torch.Tensor:
    batch = collate(encode_all(session.tokenizer, session.data.forget[:8] + session.data.retain[:8]), session.pad)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.notebooks
def test_exported_models_reload_to_the_run_models_logits(smoke_run, run_models, tmp_path):
    run, cache = smoke_run
    session, delta_o, deltas = run_models
    exports = {
        "theta_r": (dict(model="theta_r"), None, None),
        "theta_o": (dict(model="theta_o", seed=SEED), None, 0.0),
        "oracle_1": (dict(objective=OBJECTIVE, scenario="oracle", seed=SEED), "oracle", 1.0),
        "random_half": (dict(objective=OBJECTIVE, scenario="random", seed=RANDOM_SEED, alpha=0.5), "random", 0.5),
    }
    for name, (request, scenario, alpha) in exports.items():
        folder = export_model(run, tmp_path / name, cache_root=cache, progress=False, **request)
        record = json.loads((folder / "workbench_export.json").read_text())
        assert record["recomputed"] == [], f"{name} should come from the run's cache"
        model, tok = _reload(folder)
        assert tok.get_vocab() == session.tokenizer.get_vocab()
        if alpha is None:
            expected = _logits(session.model, session)
        else:
            with session.at(delta_o), deltas[scenario or "oracle"].mixed(alpha):
                expected = _logits(session.model, session)
        assert torch.equal(_logits(model, session), expected), name


@pytest.mark.notebooks
def test_exported_theta_o_and_unlearned_give_the_runs_per_alpha_numbers(smoke_run, run_models, tmp_path):
    run, cache = smoke_run
    session = run_models[0]
    per_alpha = pd.read_parquet(run / "per_alpha.parquet")
    sweep = per_alpha[(per_alpha.objective == OBJECTIVE) & (per_alpha.scenario == "oracle") & (per_alpha.seed == SEED)]
    folders = {0.0: export_model(run, tmp_path / "theta_o", model="theta_o", seed=SEED, cache_root=cache, progress=False),
               1.0: export_model(run, tmp_path / "unlearned", objective=OBJECTIVE, scenario="oracle", seed=SEED,
                                 cache_root=cache, progress=False)}
    ends = sweep.set_index("alpha")
    numbers = [c for c in ends.columns if c.startswith(("FS", "RS", "MU", "FQ", "forget_", "retain_eval_", "n_"))]
    assert (ends.loc[0.0, numbers] != ends.loc[1.0, numbers]).any()  # the two ends can tell the models apart
    for alpha, folder in folders.items():
        model, tok = _reload(folder)
        evaluator = Evaluator(tok, session.data, session.evaluator.cfg,
                              reference_forget_tr=session.evaluator.reference_forget_tr)
        summary = evaluator(model).summary
        got = pd.Series({c: summary[c] for c in numbers}, dtype=float)
        pd.testing.assert_series_equal(got, ends.loc[alpha, numbers].astype(float), check_names=False, rtol=0, atol=1e-9)


@pytest.mark.notebooks
def test_a_missing_cache_is_recomputed_with_a_message_and_gives_the_same_model(smoke_run, tmp_path, capsys):
    run, cache = smoke_run
    cached = export_model(run, tmp_path / "cached", model="theta_o", seed=SEED, cache_root=cache, progress=False)
    fresh = export_model(run, tmp_path / "fresh", model="theta_o", seed=SEED, cache_root=tmp_path / "empty-cache",
                         progress=False)
    err = capsys.readouterr().err
    assert "θr is not in the cache" in err and "recomputing it from the run's parameters" in err
    assert json.loads((fresh / "workbench_export.json").read_text())["recomputed"] == ["theta_p", "theta_retain", "theta_o"]
    from safetensors.torch import load_file

    a, b = load_file(str(cached / "model.safetensors")), load_file(str(fresh / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.notebooks
def test_the_export_command_writes_a_loadable_folder(smoke_run, tmp_path):
    run, cache = smoke_run
    out = tmp_path / "npo-oracle"
    env = {**os.environ, "WORKBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "workbench", "export", str(run), "--objective", OBJECTIVE,
                           "--scenario", "oracle", "--seed", str(SEED), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(out)
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    model, _ = _reload(out)
    in_process = export_model(run, tmp_path / "in-process", objective=OBJECTIVE, scenario="oracle", seed=SEED,
                              cache_root=cache, progress=False)
    from safetensors.torch import load_file

    assert all(torch.equal(v, load_file(str(in_process / "model.safetensors"))[k])
               for k, v in load_file(str(out / "model.safetensors")).items())


@pytest.mark.notebooks
def test_workbench_evaluate_on_exported_models_redraws_the_run_s_sweep(smoke_run, tmp_path):
    """The README tour: θo, an unlearned model and θr exported, then `workbench evaluate` as a pair on the
    run's data: every α of its sweep (its own mixing of the two folders) equals the run's."""
    run, cache = smoke_run
    folders = {name: export_model(run, tmp_path / name, cache_root=cache, progress=False, **request) for name, request in
               {"theta_o": dict(model="theta_o", seed=SEED), "theta_r": dict(model="theta_r"),
                "oracle": dict(objective=OBJECTIVE, scenario="oracle", seed=SEED)}.items()}
    env = {**os.environ, "WORKBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    smoke = json.loads((run / "params.json").read_text())["params"]
    data = [f"{k}={smoke[k]}" for k in ("data", "n_retain_authors", "n_forget_authors", "eval_max_new_tokens", "n_alpha")]
    done = subprocess.run([sys.executable, "-m", "workbench", "evaluate", "--before", str(folders["theta_o"]),
                           "--after", str(folders["oracle"]), "--retain-model", str(folders["theta_r"]),
                           *[a for d in data for a in ("-p", d)], "--run-id", "pair", "--outputs", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = pd.read_parquet(tmp_path / "out" / "evaluate-checkpoints" / "pair" / "per_alpha.parquet")
    ours = pd.read_parquet(run / "per_alpha.parquet")
    ours = ours[(ours.objective == OBJECTIVE) & (ours.scenario == "oracle") & (ours.seed == SEED)]
    numbers = ["alpha", "FS", "RS", "MU", "FQ", "forget_es", "forget_rougeL", "retain_eval_tr_closeness"]
    pd.testing.assert_frame_equal(theirs[numbers].reset_index(drop=True), ours[numbers].reset_index(drop=True),
                                  rtol=0, atol=1e-9)


@pytest.mark.notebooks
@pytest.mark.parametrize("args, message", [
    (["--objective", "dpo", "--scenario", "oracle", "--seed", "7"], "has no objective 'dpo'; it has ['npo']"),
    (["--objective", "npo", "--scenario", "oracle", "--seed", "8"], "--scenario oracle --seed 7, --scenario random"),
    (["--model", "theta_o", "--seed", "3"], "its θo target seeds are [7]"),
    (["--model", "theta_full"], "computes no θ_full"),
    (["--objective", "npo", "--scenario", "oracle", "--seed", "7", "--alpha", "1.5"], "within [0, 1]"),
    (["--seed", "7"], "say which model to export"),
    (["--model", "theta_o", "--seed", "7", "--objective", "npo"], "name an unlearned model, not theta_o"),
])
def test_unknown_models_are_refused_with_what_the_run_has(smoke_run, tmp_path, capsys, args, message):
    run, cache = smoke_run
    assert cli.main(["export", str(run), *args, "--out", str(tmp_path / "x"), "--cache", str(cache)]) == cli.EXIT_INVALID
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.notebooks
def test_an_existing_folder_is_replaced_only_with_force(smoke_run, tmp_path, capsys):
    run, cache = smoke_run
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["export", str(run), "--model", "theta_r", "--out", str(out), "--cache", str(cache)]
    assert cli.main(argv) == cli.EXIT_INVALID
    assert "is not empty" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    assert cli.main([*argv, "--force"]) == 0
    assert (out / "config.json").is_file() and not (out / "notes.txt").exists()
    (out / "sub").mkdir()
    assert cli.main([*argv, "--force"]) == cli.EXIT_INVALID  # --force never deletes a tree of folders
    assert "holds folders" in capsys.readouterr().err


@pytest.mark.integration
def test_a_folder_that_is_not_a_run_is_refused(tmp_path, capsys):
    assert cli.main(["export", str(tmp_path), "--model", "theta_r", "--out", str(tmp_path / "x")]) == cli.EXIT_INVALID
    assert "is not a run folder (no params.json)" in capsys.readouterr().err


@pytest.mark.unit
def test_tokenizer_config_carries_what_older_transformers_read(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel({"<unk>": 0, "hi": 1, "<eos>": 2}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, eos_token="<eos>", unk_token="<unk>")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}<eos>"
    tok.save_pretrained(tmp_path)
    make_v4_compatible(tmp_path)  # as save_model_folder does first
    older_transformers_tokenizer(tmp_path)
    written = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert written["chat_template"] == tok.chat_template
    assert written["model_input_names"] == ["input_ids", "attention_mask"]  # 4.45 would add token_type_ids
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)  # a reader of tokenizer_config.json alone
    assert AutoTokenizer.from_pretrained(tmp_path).apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False) == "hi <eos>"


@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    """``run(nb)``: (run folder, cache) of notebook ``nb``'s smoke run, made once by ``workbench run``."""
    made = {}

    def run(nb: str) -> tuple[Path, Path]:
        if nb not in made:
            outputs, cache = tmp_path_factory.mktemp("outputs"), tmp_path_factory.mktemp("cache")
            env = {**os.environ, "WORKBENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, "-m", "workbench", "run", nb, "-p", f"params/{nb}/smoke.yaml",
                                   "--run-id", "smoke", "--outputs", str(outputs)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stderr[-3000:]
            made[nb] = outputs / nb / "smoke", cache
        return made[nb]

    return run


@pytest.mark.notebooks
@pytest.mark.parametrize("nb, request_", [
    ("revisit-localizers", dict(objective="npo", scenario="activations", seed=0)),  # a localizer's region on θ_full
    ("revisit-localizers", dict(objective="npo", scenario="random", seed=0, alpha=0.5)),
    ("l2-mlp-supervision", dict(objective="l2_mlp", scenario="random", seed=11)),  # its retain term's weight
])
def test_every_notebook_s_models_are_rebuilt_from_the_run_s_own_cache_entries(other_runs, tmp_path, nb, request_):
    """The export rebuilds each step under the cache key the run used (regions, learning rates, retain
    weight): nothing is recomputed, so the model is the run's."""
    run, cache = other_runs(nb)
    folder = export_model(run, tmp_path / "model", cache_root=cache, progress=False, **request_)
    assert json.loads((folder / "workbench_export.json").read_text())["recomputed"] == []
