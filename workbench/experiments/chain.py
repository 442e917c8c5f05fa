"""The chain of models every experiment builds on: θp → θr (or θ_full), each trained once and cached.

* θp, the pretrained model: a tiny LLaMA pre-trained here on the data's general-knowledge pairs,
  SmolLM2-135M-Instruct, or any hub/local model;
* θr, θp fine-tuned with all parameters on the retain set (the gold standard Forget Quality
  compares with); θ_full, θp fine-tuned on the full set (the target model of §3).

Each is stored in the content-addressed :class:`~workbench.runs.cache.Cache` under a key of
everything that determines it, including the source of the modules that compute it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from workbench.data import load_data
from workbench.data.formatting import encode_all, pad_id
from workbench.data.schema import UnlearningData
from workbench.models import TinyLlamaConfig, build_tiny, load_pretrained
from workbench.runs import cache as cache_mod
from workbench.training import TrainConfig, finetune

TRAINING_SOURCES = ["workbench.training", "workbench.delta", "workbench.objectives", "workbench.likelihood",
                    "workbench.data.formatting", "workbench.models", "workbench.regions"]
EVAL_SOURCES = TRAINING_SOURCES + ["workbench.evaluation", "workbench.metrics", "workbench.mixing"]


class CheckFailed(RuntimeError):
    """A configuration produced models that make the experiment meaningless; the message names the fix."""


DATA_ARGS = {
    "synthetic-tofu": lambda c: {"n_authors": c.n_retain_authors + c.n_forget_authors,
                                 "n_forget_authors": c.n_forget_authors, "seed": c.seed},
    "tofu": lambda c: {"source": c.data_path() or "locuslab/TOFU", "n_retain_authors": c.n_retain_authors,
                       "n_forget_authors": c.n_forget_authors, "seed": c.seed},
    "synthetic-lume": lambda c: {"n_people": c.n_people, "forget_ratio": c.forget_ratio, "seed": c.seed},
    "lume": lambda c: {"folder": c.data_path(), "n_people": c.n_people, "forget_ratio": c.forget_ratio, "seed": c.seed},
}


def load_config_data(cfg) -> UnlearningData:
    """The data set a config names, with the loader arguments its parameters give."""
    if cfg.data in ("lume",) and not cfg.data_path():
        raise CheckFailed("data='lume' needs a folder: set data_dir (or $WORKBENCH_LUME_DIR) to the folder with "
                          "task2_forget.jsonl and task2_retain.jsonl")
    return load_data(cfg.data, **DATA_ARGS[cfg.data](cfg))


# -- model storage --------------------------------------------------------------------------------------
def _save_model(pair, folder: Path) -> None:
    model, tokenizer = pair
    model.save_pretrained(folder / "model", safe_serialization=True)
    tokenizer.save_pretrained(folder / "model")


def _loader(device: torch.device, dtype: str):
    def load(folder: Path):
        return load_pretrained(str(folder / "model"), device=str(device), dtype=dtype, local_files_only=True)

    return load


def train_cfg(cfg, lr: float, epochs: int, *, weight_decay: float | None = None) -> TrainConfig:
    return TrainConfig(lr=lr, epochs=epochs, batch_size=cfg.batch_size,
                       weight_decay=cfg.weight_decay if weight_decay is None else weight_decay,
                       max_grad_norm=cfg.max_grad_norm or None, seed=cfg.seed)


def model_spec(cfg) -> dict[str, Any]:
    if cfg.model == "tiny-llama":
        return {"kind": "tiny-llama", **dataclasses.asdict(tiny_config(cfg)), "vocab": cfg.vocab_size}
    return {"kind": "pretrained", "name": cfg.model, "dtype": cfg.dtype}


def tiny_config(cfg) -> TinyLlamaConfig:
    heads = max(1, cfg.tiny_d_model // 32)
    return TinyLlamaConfig(n_layers=cfg.tiny_layers, d_model=cfg.tiny_d_model, d_ff=cfg.tiny_d_ff, n_heads=heads,
                           seed=cfg.seed)


def pretrained_model(cfg, data, cache, device, *, force: bool, progress: bool):
    """θp: a tiny LLaMA pre-trained on the data's general-knowledge set, SmolLM2, or a hub/local model."""
    spec = model_spec(cfg)
    inputs = {"model": spec, "data": data.fingerprint(), "epochs": cfg.pretrain_epochs, "lr": cfg.pretrain_lr,
              "train": dataclasses.asdict(train_cfg(cfg, cfg.pretrain_lr, max(cfg.pretrain_epochs, 1)))}
    if spec["kind"] != "tiny-llama":
        model, tok = load_named_model(cfg, device)
        return model, tok, cache_mod.fingerprint(spec)

    def build():
        model, tok = build_tiny(data, tiny_config(cfg), vocab_size=cfg.vocab_size)
        if cfg.pretrain_epochs and data.pretrain:
            finetune(model, encode_all(tok, data.pretrain), train_cfg(cfg, cfg.pretrain_lr, cfg.pretrain_epochs),
                     pad_id(tok), desc="pre-train θp", progress=progress,
                     gradient_checkpointing=cfg.gradient_checkpointing)
        return model, tok

    model, tok = cache.get_or_build("theta_p", inputs, build, _save_model, _loader(device, cfg.dtype),
                                    force=force, sources=TRAINING_SOURCES + ["workbench.data"])
    return model, tok, cache_mod.cache_key("theta_p", inputs, TRAINING_SOURCES + ["workbench.data"])


def load_named_model(cfg, device: torch.device):
    if cfg.model == "smollm2":
        from workbench.models.smollm import load_smollm2

        return load_smollm2(device=str(device), dtype=cfg.dtype)
    return load_pretrained(cfg.model, device=str(device), dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)


def finetuned_model(cfg, data, cache, device, model, tok, parent_key: str, *, which: str, force: bool, progress: bool):
    """θr (``which="retain"``) or θ_full (``"full"``): θp fine-tuned with all parameters."""
    lr, epochs = (cfg.retain_lr, cfg.retain_epochs) if which == "retain" else (cfg.full_lr, cfg.full_epochs)
    examples = data.retain if which == "retain" else data.full
    if getattr(cfg, "replay_pretrain", False):
        examples = examples + data.pretrain
    inputs = {"parent": parent_key, "which": which, "data": data.fingerprint(), "lr": lr, "epochs": epochs,
              "replay": getattr(cfg, "replay_pretrain", False), "train": dataclasses.asdict(train_cfg(cfg, lr, epochs))}
    def build():
        finetune(model, encode_all(tok, examples), train_cfg(cfg, lr, epochs), pad_id(tok),
                 desc=f"fine-tune θ_{which}", progress=progress, gradient_checkpointing=cfg.gradient_checkpointing)
        return model, tok

    key = cache_mod.cache_key(f"theta_{which}", inputs, TRAINING_SOURCES)
    model, tok = cache.get_or_build(f"theta_{which}", inputs, build, _save_model, _loader(device, cfg.dtype),
                                    force=force, sources=TRAINING_SOURCES)
    return key, model, tok


