"""The chain of models every experiment builds on: θp → θr (or θ_full), each trained once and cached.

* θp, the pretrained model: a tiny LLaMA pre-trained here on the data's general-knowledge pairs,
  SmolLM2-135M-Instruct, or any hub/local model;
* θr, θp fine-tuned with all parameters on the retain set (the gold standard Forget Quality
  compares with); θ_full, θp fine-tuned on the full set (the target model of §3).

Each is stored in the content-addressed :class:`~workbench.runs.cache.Cache` under a key of
everything that determines it, including the source of this module and of everything it imports.

At paper scale θr and θ_full are better trained elsewhere (full fine-tuning of 8B does not fit one
GPU): ``retain_model`` / ``full_model`` name a hub id or a local folder that replaces the
fine-tuning, and the chain then keys everything downstream by that checkpoint's *content* (a hash
of its files, or the hub commit), never by its name. :func:`training_job` is the one statement of
what θr / θ_full are trained on (data, formatting, replay, optimiser settings); the in-process
fine-tuning and ``python -m workbench.distributed --params …`` both use it, so a checkpoint
trained on several GPUs is the one the notebook would have trained.

Fine-tuning θr / θ_full checks its memory estimate against the device before it starts
(:func:`finetune_stage`); the whole run's pre-flight is :mod:`workbench.experiments.preflight`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.data.formatting import encode_all, pad_id
from workbench.models import (
    TinyLlamaConfig,
    build_tiny,
    estimate_memory,
    hub_commit,
    load_model,
    require_fits,
    save_model_folder,
)
from workbench.runs import cache as cache_mod
from workbench.training import TrainConfig, finetune

# Modules whose source (with everything they import, workbench.runs.deps) keys each artefact.
TRAINING_SOURCES = ["workbench.experiments.chain"]  # θp, θr, θ_full
EVAL_SOURCES = ["workbench.experiments.session"]  # θo, unlearned deltas, sweeps, reference evaluations


class CheckFailed(RuntimeError):
    """A configuration produced models that make the experiment meaningless; the message names the fix."""


# -- model storage --------------------------------------------------------------------------------------
def _save_model(pair, folder: Path) -> None:
    save_model_folder(*pair, folder / "model")


def _loader(device: torch.device, dtype: str):
    return lambda folder: load_model(folder / "model", device=str(device), dtype=dtype)


def train_cfg(cfg, lr: float, epochs: int, *, weight_decay: float | None = None) -> TrainConfig:
    return TrainConfig(lr=lr, epochs=epochs, batch_size=cfg.batch_size,
                       weight_decay=cfg.weight_decay if weight_decay is None else weight_decay,
                       max_grad_norm=cfg.max_grad_norm or None, seed=cfg.seed)


def model_spec(cfg) -> dict[str, Any]:
    if cfg.model == "tiny-llama":
        return {"kind": "tiny-llama", **dataclasses.asdict(tiny_config(cfg)), "vocab": cfg.vocab_size, "dtype": cfg.dtype}
    return {"kind": "pretrained", "name": cfg.model, "revision": cfg.model_revision, "dtype": cfg.dtype}


def tiny_config(cfg) -> TinyLlamaConfig:
    heads = max(1, cfg.tiny_d_model // 32)
    return TinyLlamaConfig(n_layers=cfg.tiny_layers, d_model=cfg.tiny_d_model, d_ff=cfg.tiny_d_ff, n_heads=heads,
                           seed=cfg.seed)


def pretrained_model(cfg, data, cache, device, *, force: bool, progress: bool, dtype: str | None = None):
    """θp: a tiny LLaMA pre-trained on the data's general-knowledge set, SmolLM2, or a hub/local model."""
    spec = model_spec(cfg)
    inputs = {"model": spec, "data": data.fingerprint(), "epochs": cfg.pretrain_epochs, "lr": cfg.pretrain_lr,
              "train": dataclasses.asdict(train_cfg(cfg, cfg.pretrain_lr, max(cfg.pretrain_epochs, 1)))}
    if spec["kind"] != "tiny-llama":
        model, tok = load_model(cfg.model, device=str(device), dtype=dtype or cfg.dtype, revision=cfg.model_revision,
                                trust_remote_code=cfg.trust_remote_code)
        return model, tok, cache_mod.fingerprint({**spec, **checkpoint_identity(cache, model, cfg.model, cfg.model_revision)})

    def build():
        model, tok = build_tiny(data, tiny_config(cfg), vocab_size=cfg.vocab_size)
        if cfg.pretrain_epochs and data.pretrain:
            finetune(model, encode_all(tok, data.pretrain), train_cfg(cfg, cfg.pretrain_lr, cfg.pretrain_epochs),
                     pad_id(tok), desc="pre-train θp", progress=progress,
                     gradient_checkpointing=cfg.gradient_checkpointing)
        return model, tok

    model, tok = cache.get_or_build("theta_p", inputs, build, _save_model, _loader(device, dtype or cfg.dtype),
                                    force=force, sources=TRAINING_SOURCES)
    return model, tok, cache.key("theta_p", inputs, TRAINING_SOURCES)


def checkpoint_identity(cache, model, name_or_path: str, revision: str = "") -> dict[str, Any]:
    """What a loaded checkpoint *is*: the hash of its folder's files, or its hub commit (never its name)."""
    folder = Path(name_or_path).expanduser()
    if folder.is_dir():
        return {"folder_sha256": cache.folder_fingerprint(folder)}
    return {"hub": name_or_path, "commit": getattr(model.config, "_commit_hash", None) or hub_commit(name_or_path, revision)}


@dataclasses.dataclass
class TrainingJob:
    """Everything that determines θr or θ_full: θp, the encoded examples, the optimiser settings."""

    which: str
    model: Any
    tokenizer: Any
    parent_key: str
    examples: list
    train: TrainConfig

    def inputs(self, cfg, data) -> dict[str, Any]:
        return {"parent": self.parent_key, "which": self.which, "data": data.fingerprint(),
                "lr": self.train.lr, "epochs": self.train.epochs, "replay": getattr(cfg, "replay_pretrain", False),
                "train": dataclasses.asdict(self.train)}


def training_job(cfg, data, which: str, model, tok, parent_key: str) -> TrainingJob:
    """θr (``which="retain"``) or θ_full (``"full"``) as the notebooks define it: θp fine-tuned with all
    parameters on the retain (or full) set, plus θp's general-knowledge set with ``replay_pretrain``."""
    lr, epochs = (cfg.retain_lr, cfg.retain_epochs) if which == "retain" else (cfg.full_lr, cfg.full_epochs)
    examples = data.retain if which == "retain" else data.full
    if getattr(cfg, "replay_pretrain", False):
        examples = examples + data.pretrain
    return TrainingJob(which, model, tok, parent_key, encode_all(tok, examples), train_cfg(cfg, lr, epochs))


def finetuned_model(cfg, data, cache, device, model, tok, parent_key: str, *, which: str, force: bool, progress: bool):
    """θr (``which="retain"``) or θ_full (``"full"``): θp fine-tuned with all parameters."""
    job = training_job(cfg, data, which, model, tok, parent_key)
    inputs = job.inputs(cfg, data)

    def build():
        require_fits([(THETA[which], *finetune_stage(cfg, model.config, max_length(job.examples), which))],
                     next(model.parameters()).device)
        finetune(model, job.examples, job.train, pad_id(tok), desc=f"fine-tune θ_{which}", progress=progress,
                 gradient_checkpointing=cfg.gradient_checkpointing)
        return model, tok

    key = cache.key(f"theta_{which}", inputs, TRAINING_SOURCES)
    model, tok = cache.get_or_build(f"theta_{which}", inputs, build, _save_model, _loader(device, cfg.dtype),
                                    force=force, sources=TRAINING_SOURCES)
    return key, model, tok


def external_model(cfg, data, cache, device, *, which: str):
    """θr / θ_full trained elsewhere (``retain_model`` / ``full_model``), keyed by its content and by the data
    the run uses it with: every entry downstream (θr's reference truth ratios, θo, unlearning runs, sweeps) keys
    on this key alone, so another forget set on the same checkpoint must not be served the first one's."""
    name, revision = getattr(cfg, f"{which}_model"), getattr(cfg, f"{which}_revision")
    model, tok = load_model(name, device=str(device), dtype=cfg.dtype, revision=revision,
                            trust_remote_code=cfg.trust_remote_code)
    identity = {"which": which, "dtype": cfg.dtype, **checkpoint_identity(cache, model, name, revision)}
    print(f"θ_{which} from {name}: {identity}")
    return cache_mod.fingerprint({**identity, "data": data.fingerprint()}), model, tok


def chain_model(cfg, data, cache, device, *, which: str, force: bool, progress: bool,
                check: Callable[[Any, Any], None] | None = None):
    """θr or θ_full, whichever way the config says: brought (``<which>_model``) or fine-tuned here.

    ``check(model, tokenizer)`` runs on the first model loaded (θp before any fine-tuning, or the
    brought one), so a parameter or a memory need that does not fit the model fails before hours of training.
    """
    if getattr(cfg, f"{which}_model", ""):
        key, model, tok = external_model(cfg, data, cache, device, which=which)
        if check:
            check(model, tok)
        return key, model, tok
    theta_p, tok, p_key = pretrained_model(cfg, data, cache, device, force=force, progress=progress)
    if check:
        check(theta_p, tok)
    return finetuned_model(cfg, data, cache, device, theta_p, tok, p_key, which=which, force=force, progress=progress)


# -- memory of fine-tuning (the whole run's pre-flight: workbench.experiments.preflight) ----------------------
def max_length(items) -> int:
    """Tokens of the longest encoded example (training pads each batch to its longest)."""
    return max((len(e.input_ids) for e in items), default=1)


THETA = {"retain": "θr", "full": "θ_full"}


def finetune_stage(cfg, config, seq_len: int, which: str) -> tuple[dict, str]:
    """Memory estimate of fine-tuning θr (``which="retain"``) or θ_full with all parameters on a model
    with HF ``config``, and what to do when it does not fit."""
    est = estimate_memory(config, 0.0, cfg.batch_size, seq_len, mode="full", dtype=cfg.dtype,
                          gradient_checkpointing=cfg.gradient_checkpointing)
    return est, (f"{THETA[which]} full fine-tuning of {cfg.model} does not fit here: train it with "
                 f"`scripts/train_distributed.sh full --notebook {getattr(cfg, 'notebook', '<notebook>')} --params <this file> "
                 f"--stage {which} --out <folder>` (FSDP over several GPUs) and pass {which}_model=<folder>")
