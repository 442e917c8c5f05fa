"""``python -m workbench.distributed …``: one training run on every process of an accelerate launch.

A tiny random model on fixed random data (what the tests launch on CPU with gloo), a real model on
encoded examples, or — with ``--notebook`` and ``--params`` — θr or θ_full exactly as that notebook
would fine-tune it (same θp, data, chat formatting, replay and optimiser settings, from
:func:`workbench.experiments.chain.training_job`), written as a complete Hugging Face folder that
the notebook then takes as ``retain_model`` / ``full_model``::

    scripts/train_distributed.sh full --notebook oracle-vs-random \
        --params params/oracle-vs-random/paper-llama.yaml --stage retain --out outputs/theta_r

See :mod:`workbench.distributed` for the launch commands.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from workbench import objectives as obj
from workbench.data.formatting import Encoded, PreferencePair
from workbench.data.synthetic import random_token_examples
from workbench.delta import RegionDelta
from workbench.distributed import (
    distributed_refusal,
    make_accelerator,
    train_distributed,
)
from workbench.models.tiny import random_model
from workbench.objectives.nll import NLL
from workbench.regions import random_region
from workbench.training import TrainConfig, TrainSpec


def load_encoded(path: str | Path) -> list[Encoded]:
    """Encoded examples from JSON lines ``{"input_ids": [...], "prompt_len": n}``."""
    lines = Path(path).read_text().splitlines()
    return [Encoded(tuple(r["input_ids"]), int(r["prompt_len"])) for r in map(json.loads, filter(None, lines))]


def _examples(source: str, n: int, seed: int) -> list:
    """``synthetic`` random examples, ``synthetic-pairs`` random preference pairs (DPO), or a file."""
    if source == "synthetic-pairs":
        wins, loses = random_token_examples(n, seed=seed), random_token_examples(n, seed=seed + 1000)
        return [PreferencePair(win=w, lose=l) for w, l in zip(wins, loses)]
    return random_token_examples(n, seed=seed) if source == "synthetic" else load_encoded(source)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workbench.distributed",
                                description="Train on every process of an accelerate launch")
    p.add_argument("--mode", choices=["restricted", "full"], default="restricted")
    p.add_argument("--model", default="tiny", help="'tiny' (random, seeded), 'smollm2', a hub id or a local path")
    p.add_argument("--dtype", default="float32", help="weights dtype: float32, bfloat16 (delta stays fp32)")
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (random tokens), 'synthetic-pairs' (random preference pairs) or a JSON-lines file")
    p.add_argument("--retain", default=None, help="'synthetic' or JSON-lines retain examples (with --lambda-retain)")
    p.add_argument("--lambda-retain", type=float, default=0.0)
    p.add_argument("--n-examples", type=int, default=16, help="size of the random data set")
    p.add_argument("--objective", default=NLL.name, help="a registered objective (default: the learning loss)")
    p.add_argument("--region-fraction", type=float, default=0.1)
    p.add_argument("--region-seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8, help="global batch, split over the processes")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--optimizer", default="adamw", help="adamw (default), adam or sgd (exactness tests)")
    p.add_argument("--notebook", default=None, help="train θr/θ_full as this notebook would (with --params)")
    p.add_argument("--params", action="append", default=[], metavar="FILE|KEY=VALUE",
                   help="the notebook's parameter file(s) and overrides, as for `python -m workbench run`")
    p.add_argument("--stage", choices=["retain", "full"], default="retain", help="θr (retain) or θ_full (full)")
    p.add_argument("--check-only", action="store_true", help="validate the arguments and exit (before a launch)")
    p.add_argument("--dump-ranks", action="store_true", help="every rank writes its trainable tensors (tests)")
    p.add_argument("--out", required=True)
    return p


def _load_model(args, accelerator) -> tuple[nn.Module, int]:
    from workbench.models import load_model, resolve_dtype

    if args.model == "tiny":
        return random_model("llama", seed=args.seed).to(accelerator.device, resolve_dtype(args.dtype)), 0
    model, tokenizer = load_model(args.model, device=str(accelerator.device), dtype=args.dtype)
    return model, tokenizer.pad_token_id


def _trainable(result: nn.Module | RegionDelta) -> dict[str, torch.Tensor]:
    if isinstance(result, RegionDelta):
        return {f"delta.{k}": v.detach().cpu().contiguous() for k, v in result.params.items()}
    return {k: v.detach().cpu().contiguous() for k, v in result.state_dict().items()}


def _save(accelerator, result, history: list[dict], args, out: Path) -> None:
    from safetensors.torch import save_file

    state = None if isinstance(result, RegionDelta) else accelerator.get_state_dict(result)
    if args.dump_ranks:
        save_file(_trainable(result), str(out / f"rank{accelerator.process_index}.safetensors"))
        info = {"rank": accelerator.process_index, "world": accelerator.num_processes,
                "distributed_type": str(accelerator.distributed_type), "threads": torch.get_num_threads()}
        (out / f"rank{accelerator.process_index}.json").write_text(json.dumps(info))
    if accelerator.is_main_process:
        if state is None:
            result.save(out / "delta.safetensors")
        else:
            save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
        (out / "history.json").write_text(json.dumps(history, indent=1))


def check_args(args) -> None:
    """Refuse, before any process starts, what cannot run distributed (the objective says why)."""
    refusal = distributed_refusal(obj.make(args.objective), restricted=args.mode == "restricted")
    if refusal:
        raise SystemExit(f"error: {refusal}")
    if args.params and not args.notebook:
        raise SystemExit("error: --params needs --notebook (the notebook whose θr/θ_full to train)")
    if args.notebook and args.mode != "full":
        raise SystemExit("error: --notebook trains θr/θ_full: use --mode full")


def notebook_job(args, accelerator):
    """θp, the examples and the optimiser settings of the notebook's θr / θ_full (θp built once, on rank 0)."""
    from workbench.data import config_data
    from workbench.experiments import chain
    from workbench.runs import config, grid
    from workbench.runs.cache import Cache

    cfg = config.from_params(args.notebook, config.absolute_paths(grid.merge_params(args.params)))
    data = config_data(cfg)
    with accelerator.main_process_first():  # rank 0 builds (or finds) θp in the cache, the others load it
        # fp32 weights: FSDP's mixed precision computes in bf16 and keeps fp32 shards as master weights
        model, tok, key = chain.pretrained_model(cfg, data, Cache(), accelerator.device, force=False,
                                                 progress=False, dtype="float32")
    return cfg, chain.training_job(cfg, data, args.stage, model, tok, key)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    check_args(args)
    if args.check_only:
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    accelerator = make_accelerator()
    if args.notebook:
        return _train_notebook_stage(args, accelerator, out)
    model, pad = _load_model(args, accelerator)
    data = _examples(args.data, args.n_examples, args.seed)
    retain = _examples(args.retain, args.n_examples, args.seed + 1) if args.retain else None
    cfg = TrainConfig(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      max_steps=args.max_steps, optimizer=args.optimizer)
    region = random_region(model, args.region_fraction, seed=args.region_seed) if args.mode == "restricted" else None
    spec = TrainSpec(data, cfg, pad, objective=args.objective, retain=retain, lambda_retain=args.lambda_retain,
                     gradient_checkpointing=args.gradient_checkpointing, progress=False)
    result, history = train_distributed(accelerator, model, spec, region=region)
    _save(accelerator, result, history, args, out)
    _finish(accelerator, out if args.dump_ranks else None)


def _finish(accelerator, dump: Path | None = None) -> None:
    """Wait for every rank, and for every rank to have left that barrier, then destroy the process group.

    A gloo barrier followed at once by the group's destruction is a known way for a rank to fail (gloo issue
    155: a rank tears its connections down while a peer may still be reading the barrier's last message).
    CI once saw rank 1 of a two-process test abort ("terminate called without an active exception") where
    the same test passes every other time. The second rendezvous goes through the launch's key-value store,
    not the group's connections. ``dump``: write ``rank<r>.exit.json`` saying that the rank waited and the
    group is gone (the two-process tests read it)."""
    accelerator.wait_for_everyone()
    rank, world = accelerator.process_index, accelerator.num_processes
    waited = _all_left_barrier(rank, world)
    accelerator.end_training()
    if dump is not None:
        state = {"waited_for_every_rank": waited, "process_group": torch.distributed.is_initialized()}
        (dump / f"rank{rank}.exit.json").write_text(json.dumps(state))


def _all_left_barrier(rank: int, world: int) -> bool:
    """Say in the store that ``rank`` has left the final barrier and wait until every rank has (False: no
    process group, nothing to wait for)."""
    dist = torch.distributed
    if not dist.is_initialized():
        return False
    store = dist.distributed_c10d._get_default_store()  # the launch's TCPStore: no gloo connection involved
    store.set(f"workbench/left-barrier/{rank}", "1")
    store.wait([f"workbench/left-barrier/{r}" for r in range(world)])
    return True


def _train_notebook_stage(args, accelerator, out: Path) -> None:
    from workbench.data.formatting import pad_id
    from workbench.models import save_model_folder
    from workbench.runs.rundir import package_versions

    cfg, job = notebook_job(args, accelerator)
    spec = TrainSpec(job.examples, job.train, pad_id(job.tokenizer), gradient_checkpointing=cfg.gradient_checkpointing,
                     progress=False)
    trained, history = train_distributed(accelerator, job.model, spec)
    state = accelerator.get_state_dict(trained)
    if accelerator.is_main_process:
        save_model_folder(trained, job.tokenizer, out, state_dict={k: v.contiguous() for k, v in state.items()})
        (out / "workbench_training.json").write_text(json.dumps(
            {"notebook": args.notebook, "stage": args.stage, "params": cfg.to_dict(), "train": job.train.as_dict(),
             "processes": accelerator.num_processes, "distributed_type": str(accelerator.distributed_type),
             "versions": package_versions(), "history": history}, indent=1, default=str))
    _finish(accelerator)


if __name__ == "__main__":
    main()
