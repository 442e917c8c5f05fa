"""Data-parallel training (workbench.distributed): sharding is exact, and two real processes
(accelerate + gloo on CPU) communicate and reproduce the single-process result."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench import objectives as obj
from workbench.data.formatting import PreferencePair, collate
from workbench.data.synthetic import random_token_examples
from workbench.delta import RegionDelta
from workbench.distributed import (
    ModelView,
    RestrictedModule,
    answer_tokens,
    distributed_refusal,
    enable_checkpointing,
    examples,
    shard_rows,
    shard_weight,
)
from workbench.models.tiny import random_model
from workbench.regions import random_region
from workbench.training import TrainConfig, TrainSpec, finetune, train_region

ROOT = Path(__file__).resolve().parents[1]


def _nll(model, batch):
    return obj.mean_nll(obj.forward_logits(model, batch), batch["labels"])


def _delta_grads(delta, loss):
    grads = torch.autograd.grad(loss, list(delta.params.values()))
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.unit
@pytest.mark.parametrize("world", [2, 3])
def test_weighted_shards_average_to_the_global_loss_and_gradient(world):
    model = random_model("llama", seed=0)
    delta = RegionDelta(model, random_region(model, 0.2, seed=1)).attach()
    batch = collate(random_token_examples(7), 0)  # unequal lengths and answer-token counts per row
    assert len({answer_tokens(shard_rows(batch, r, world)) for r in range(world)}) > 1
    shard_losses = [
        _nll(model, local) * shard_weight(local, batch, world, answer_tokens)
        for local in (shard_rows(batch, r, world) for r in range(world))
    ]
    expected = _nll(model, batch)
    torch.testing.assert_close(sum(shard_losses) / world, expected)
    averaged = sum(_delta_grads(delta, loss) for loss in shard_losses) / world
    torch.testing.assert_close(averaged, _delta_grads(delta, expected), rtol=1e-5, atol=1e-7)


def _pairs(n: int, seed: int) -> list[PreferencePair]:
    wins, loses = random_token_examples(n, seed=seed), random_token_examples(n, seed=seed + 1000)
    return [PreferencePair(win=w, lose=l) for w, l in zip(wins, loses)]


@pytest.mark.unit
@pytest.mark.parametrize("world", [2, 3])
def test_dpo_shards_keep_pairs_together_and_average_to_the_global_loss(world):
    model = random_model("llama", seed=0)
    delta = RegionDelta(model, random_region(model, 0.2, seed=1)).attach()
    dpo = obj.make("dpo")
    ctx = obj.ObjectiveContext(reference=delta.disabled)
    with torch.no_grad():  # move away from π_ref, or every DPO gradient is the same
        for p in delta.params.values():
            p.add_(0.05 * torch.randn_like(p))
    batch = dpo.collate(_pairs(7, 0), 0)
    shards = [shard_rows(batch, r, world, dpo.rank_rows) for r in range(world)]
    for local in shards:  # every rank holds whole pairs: k wins, then the k matching loses
        k = examples(local) // 2
        assert local["preferred"].tolist() == [True] * k + [False] * k
    losses = [dpo(model, local, ctx) * shard_weight(local, batch, world, examples) for local in shards]
    expected = dpo(model, batch, ctx)
    torch.testing.assert_close(sum(losses) / world, expected)
    averaged = sum(_delta_grads(delta, loss) for loss in losses) / world
    torch.testing.assert_close(averaged, _delta_grads(delta, expected), rtol=1e-5, atol=1e-7)


@pytest.mark.unit
def test_objectives_that_cannot_run_distributed_are_refused_before_a_launch():
    assert "DDP cannot follow" in distributed_refusal(obj.make("rmu"), restricted=True)
    assert "separate frozen model" in distributed_refusal(obj.make("l2_mlp"), restricted=True)
    assert "π_ref" in distributed_refusal(obj.make("npo"), restricted=False)
    assert distributed_refusal(obj.make("dpo"), restricted=True) is None
    assert distributed_refusal(obj.make("npo"), restricted=True) is None
    cmd = [sys.executable, "-m", "workbench.distributed", "--objective", "rmu", "--check-only", "--out", "x"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0 and "cannot be trained distributed" in done.stderr
    script = subprocess.run(["bash", "scripts/train_distributed.sh", "restricted", "--objective", "rmu", "--out", "x"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHON": sys.executable})
    assert script.returncode != 0 and "cannot be trained distributed" in script.stderr
    assert "accelerate" not in script.stderr.lower()  # refused before `accelerate launch` started


@pytest.mark.unit
def test_shard_rows_splits_every_tensor_and_refuses_tiny_batches():
    batch = collate(random_token_examples(5), 0)
    parts = [shard_rows(batch, r, 2) for r in range(2)]
    assert [p["input_ids"].shape[0] for p in parts] == [3, 2]
    assert torch.equal(torch.cat([p["labels"] for p in parts]), batch["labels"])
    with pytest.raises(ValueError, match="raise batch_size"):
        shard_rows(batch, 0, 8)


@pytest.mark.unit
def test_restricted_module_exposes_only_the_delta():
    model = random_model("llama", seed=0)
    delta = RegionDelta(model, random_region(model, 0.1, seed=0))
    wrapper = RestrictedModule(model, delta)
    assert {id(p) for p in wrapper.parameters()} == {id(p) for p in delta.params.values()}
    view = ModelView(wrapper, model)
    assert view.config is model.config
    batch = collate(random_token_examples(2), 0)
    assert torch.equal(view(input_ids=batch["input_ids"]).logits, model(input_ids=batch["input_ids"]).logits)


@pytest.mark.unit
def test_gradient_checkpointing_keeps_delta_gradients():
    model = random_model("llama", seed=0).train()
    delta = RegionDelta(model, random_region(model, 0.2, seed=2)).attach()
    batch = collate(random_token_examples(4), 0)
    plain = _delta_grads(delta, _nll(model, batch))
    enable_checkpointing(model)
    torch.testing.assert_close(_delta_grads(delta, _nll(model, batch)), plain)


# -- two real processes ---------------------------------------------------------------------------
RUN_ARGS = ["--n-examples", "12", "--batch-size", "6", "--epochs", "2", "--lr", "1e-2", "--seed", "3"]
RESTRICTED_ARGS = ["--mode", "restricted", "--region-fraction", "0.2", "--region-seed", "1",
                   "--retain", "synthetic", "--lambda-retain", "2"]


def _launch(out: Path, extra: list[str], port: int) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # `--cpu --num_processes 2` silently runs one process; only this form gives 2 ranks over gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(port), "-m", "workbench.distributed",
           "--out", str(out), "--dump-ranks", *RUN_ARGS, *extra]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def _check_ranks_communicated(out: Path) -> dict:
    infos = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [i["rank"] for i in infos] == [0, 1]
    assert all(i["world"] == 2 and i["distributed_type"].endswith("MULTI_CPU") for i in infos), infos
    assert all(i["threads"] == 1 for i in infos)
    # no rank tore its connections down before every rank had left the final barrier (gloo issue 155)
    assert [json.loads((out / f"rank{r}.exit.json").read_text()) for r in range(2)] == [
        {"waited_for_every_rank": True, "process_group": False}] * 2
    ranks = [load_file(out / f"rank{r}.safetensors") for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:  # each rank saw different rows: only the all-reduce keeps them equal
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    return ranks[0]


def _cfg() -> TrainConfig:
    return TrainConfig(lr=1e-2, epochs=2, batch_size=6, seed=3)


@pytest.mark.integration
def test_two_process_restricted_training_equals_one_process(tmp_path):
    _launch(tmp_path, RESTRICTED_ARGS, port=29561)
    trained = _check_ranks_communicated(tmp_path)
    model = random_model("llama", seed=3)
    region = random_region(model, 0.2, seed=1)
    delta, history = train_region(model, region, TrainSpec(random_token_examples(12, seed=3), _cfg(), 0,
                                                           retain=random_token_examples(12, seed=4),
                                                           lambda_retain=2.0, progress=False))
    assert set(trained) == {f"delta.{layer}" for layer in delta.layers}
    for layer in delta.layers:
        torch.testing.assert_close(trained[f"delta.{layer}"], delta.params[str(layer)].detach(), rtol=0, atol=2e-5)
    assert not torch.equal(trained[f"delta.{delta.layers[0]}"], delta.before(delta.layers[0]))
    losses = [h["loss"] for h in json.loads((tmp_path / "history.json").read_text())]
    assert losses == pytest.approx([h["loss"] for h in history], rel=1e-5)
    loaded = RegionDelta.load(model, tmp_path / "delta.safetensors")
    layer = str(delta.layers[0])
    torch.testing.assert_close(loaded.params[layer], delta.params[layer].detach(), rtol=0, atol=2e-5)


@pytest.mark.integration
def test_two_process_dpo_equals_one_process(tmp_path):
    """DPO's win/lose rows stay together on a rank, and π_ref (the delta disabled) is per rank."""
    _launch(tmp_path, ["--mode", "restricted", "--objective", "dpo", "--data", "synthetic-pairs",
                       "--region-fraction", "0.2", "--region-seed", "1"], port=29563)
    trained = _check_ranks_communicated(tmp_path)
    model = random_model("llama", seed=3)
    delta, history = train_region(model, random_region(model, 0.2, seed=1), TrainSpec(_pairs(12, 3), _cfg(), 0,
                                                                                      objective="dpo",
                                                                                      progress=False))
    moved = max((delta.params[str(l)].detach() - delta.before(l)).abs().max().item() for l in delta.layers)
    for layer in delta.layers:
        torch.testing.assert_close(trained[f"delta.{layer}"], delta.params[str(layer)].detach(), rtol=0,
                                   atol=1e-3 * moved)
    losses = [h["loss"] for h in json.loads((tmp_path / "history.json").read_text())]
    assert losses == pytest.approx([h["loss"] for h in history], rel=1e-5, abs=1e-6)


def _update_tolerance(update: torch.Tensor) -> float:
    # float32 rounding of an all-reduced mean vs a one-process sum: relative ~1e-6 of the gradient;
    # with SGD the parameter error is lr·Σ(gradient error), far below 1e-4 of the update itself.
    return 1e-4 * float(update.abs().max()) + 1e-7


@pytest.mark.slow
@pytest.mark.integration
def test_two_process_full_finetuning_equals_one_process(tmp_path):
    """SGD makes the comparison exact up to float rounding on any machine: its update is linear in
    the gradient, whereas Adam divides by √v and turns float noise in near-zero gradients into
    learning-rate-sized steps. A wrong reduction (no all-reduce, a sum instead of a mean, wrong
    shard weights) changes the update by O(1) of its size, far outside the tolerance."""
    _launch(tmp_path, ["--mode", "full", "--optimizer", "sgd", "--lr", "0.5"], port=29562)
    trained = _check_ranks_communicated(tmp_path)
    model = random_model("llama", seed=3)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(**{**_cfg().as_dict(), "optimizer": "sgd", "lr": 0.5})
    history = finetune(model, random_token_examples(12, seed=3), cfg, 0, progress=False)
    saved = load_file(tmp_path / "model.safetensors")
    for name, value in model.state_dict().items():
        atol = _update_tolerance(value - start[name])
        torch.testing.assert_close(trained[name], value, rtol=0, atol=atol, msg=name)
        torch.testing.assert_close(saved[name], value, rtol=0, atol=atol, msg=name)
    losses = [h["loss"] for h in json.loads((tmp_path / "history.json").read_text())]
    assert losses == pytest.approx([h["loss"] for h in history], rel=1e-5)
