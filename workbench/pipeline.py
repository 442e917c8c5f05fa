"""The shared steps of every experiment, cached: θp → θr (or θ_full) → θo → unlearned deltas → sweeps.

Lee et al. (2025) build every result from the same chain of models:

* θp, the pretrained model (a tiny LLaMA pre-trained here on general-knowledge pairs, SmolLM2, or
  any hub model);
* θr, θp fine-tuned with all parameters on the retain set — the gold standard that Forget Quality
  compares with; θ_full, θp fine-tuned on the full set (the target model of §3);
* θo, θr with the forget set injected into a random region ``V_tgt`` only (§4);
* region-restricted unlearning of θo (or θ_full) with an objective, then a model-mixing sweep.

A :class:`Session` holds ONE model object and moves it along that chain in place: region deltas
are merged and restored exactly, so nothing is reloaded or deep-copied per step or per α. Every
trained artefact (θp, θr, θ_full, θo's delta, each unlearning delta, each sweep) is stored in the
content-addressed :class:`~workbench.cache.Cache`, keyed by everything that determines it,
including the source of the modules that compute it; a changed input recomputes, a repeated run
is served from the cache, and notebooks share models.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbench import cache as cache_mod
from workbench import objectives as obj
from workbench.data import load_data
from workbench.data.formatting import Encoded, collate, collate_pairs, encode_all, pad_id
from workbench.data.schema import UnlearningData
from workbench.delta import RegionDelta
from workbench.evaluation import EvalConfig, Evaluator
from workbench.mixing import mixing_sweep
from workbench.models import TinyLlamaConfig, build_tiny, load_pretrained, resolve_device
from workbench.regions import Region, WeightRegion
from workbench.training import TrainConfig, finetune, train_region

TRAINING_SOURCES = ["workbench.training", "workbench.delta", "workbench.objectives", "workbench.data.formatting",
                    "workbench.models"]
EVAL_SOURCES = TRAINING_SOURCES + ["workbench.evaluation", "workbench.metrics", "workbench.mixing"]


class CheckFailed(RuntimeError):
    """A configuration produced models that make the experiment meaningless; the message names the fix."""


# -- data ---------------------------------------------------------------------------------------------
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


def _save_delta(delta: RegionDelta, folder: Path) -> None:
    delta.save(folder / "delta.safetensors")


def _save_frames(frames: tuple[pd.DataFrame, pd.DataFrame], folder: Path) -> None:
    frames[0].to_parquet(folder / "per_alpha.parquet")
    frames[1].to_parquet(folder / "per_example.parquet")


def _load_frames(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(folder / "per_alpha.parquet"), pd.read_parquet(folder / "per_example.parquet")


def train_cfg(cfg, lr: float, epochs: int, *, weight_decay: float | None = None) -> TrainConfig:
    return TrainConfig(lr=lr, epochs=epochs, batch_size=cfg.batch_size,
                       weight_decay=cfg.weight_decay if weight_decay is None else weight_decay,
                       max_grad_norm=cfg.max_grad_norm or None, seed=cfg.seed)


@dataclass
class Session:
    """One model moved along θp → θr → θo → unlearned, with its data, evaluator and cache.

    Build it with :func:`open_session`. ``model`` is always in a known state: θr (or θ_full) outside
    the context managers below.
    """

    cfg: Any
    data: UnlearningData
    model: nn.Module
    tokenizer: Any
    base_key: str
    cache: cache_mod.Cache
    evaluator: Evaluator
    items: dict[str, list[Encoded]] = field(default_factory=dict)
    reference: pd.DataFrame | None = None
    force: bool = False
    progress: bool = True

    @property
    def pad(self) -> int:
        return pad_id(self.tokenizer)

    # -- θo ----------------------------------------------------------------------------------------
    def inject(self, region: Region, *, check: bool = True) -> tuple[RegionDelta, dict]:
        """Train the forget set into ``region`` of θr (NLL + λ_retain·NLL(retain)); returns θo's delta.

        The delta is NOT merged; use :meth:`at` to move the model to θo. With ``check`` the
        injection must reach ``min_forget_es`` on the forget set without lowering retain ES by more
        than ``max_retain_es_drop`` (SPEC: otherwise every region looks alike).
        """
        c = self.cfg
        inputs = {"base": self.base_key, "region": region.to_json(), "lr": c.inject_lr, "epochs": c.inject_epochs,
                  "lambda_retain": c.lambda_retain, "train": dataclasses.asdict(train_cfg(c, c.inject_lr, c.inject_epochs))}

        def build():
            delta, _ = train_region(self.model, region, self.items["forget"], train_cfg(c, c.inject_lr, c.inject_epochs),
                                    self.pad, retain=self.items["retain"], lambda_retain=c.lambda_retain,
                                    desc=f"inject into {region.size} vectors", progress=self.progress)
            return delta

        delta = self.cache.get_or_build("theta_o", inputs, build, _save_delta,
                                        lambda f: RegionDelta.load(self.model, f / "delta.safetensors"),
                                        force=self.force, sources=TRAINING_SOURCES)
        with self.at(delta):
            stats = self.es_summary()
        before = self.es_summary()
        report = {"forget_es_r": before["forget"], "retain_es_r": before["retain_eval"],
                  "forget_es_o": stats["forget"], "retain_es_o": stats["retain_eval"]}
        if check:
            check_injection(report, c)
        return delta, report

    @contextlib.contextmanager
    def at(self, delta: RegionDelta) -> Iterator[None]:
        """The model with ``delta`` merged (θo, or an unlearned model); restored exactly on exit."""
        delta.merge(1.0)
        try:
            yield
        finally:
            delta.restore()

    @torch.no_grad()
    def es_summary(self) -> dict[str, float]:
        """Teacher-forced mean ES on the forget and retain evaluation sets (fast, no generation)."""
        from workbench.metrics import extraction_strength

        out = {}
        for split in ("forget", "retain_eval"):
            vals = []
            for start in range(0, len(self.items[split]), 32):
                b = {k: v.to(self.device) for k, v in collate(self.items[split][start:start + 32], self.pad).items()}
                logits = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                vals.append(extraction_strength(logits, b["labels"]).cpu())
            out[split] = float(torch.cat(vals).mean())
        return out

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- unlearning --------------------------------------------------------------------------------
    def unlearn(self, region: Region | WeightRegion, objective: str, lr: float, *, start_key: str,
                reference_model: nn.Module | None = None, lambda_retain: float = 0.0) -> RegionDelta:
        """Unlearn the forget set from the CURRENT model state, updating only ``region``.

        ``start_key`` identifies the current state (e.g. θo's cache key) for the cache.
        """
        c = self.cfg
        params = objective_params(c, objective)
        tc = train_cfg(c, lr, c.unlearn_epochs)
        inputs = {"start": start_key, "region": region.to_json(), "objective": objective, "params": params,
                  "train": dataclasses.asdict(tc), "lambda_retain": lambda_retain}

        def build():
            objective_fn = obj.make(objective, **params)
            data, collate_fn = self.forget_items_for(objective)
            ctx = obj.ObjectiveContext(reference_model=reference_model)
            delta, _ = train_region(self.model, region, data, tc, self.pad, objective=objective_fn,
                                    retain=self.items["retain"] if lambda_retain else None, lambda_retain=lambda_retain,
                                    ctx=ctx, collate_fn=collate_fn, desc=f"{objective} on {region.size} entries",
                                    progress=self.progress)
            return delta

        return self.cache.get_or_build("unlearned", inputs, build, _save_delta,
                                       lambda f: RegionDelta.load(self.model, f / "delta.safetensors"),
                                       force=self.force, sources=TRAINING_SOURCES)

    def forget_items_for(self, objective: str):
        """Training items and collate function of an objective (DPO trains on refusal/answer pairs)."""
        if objective == "dpo":
            pairs = obj.dpo_pairs(self.tokenizer, self.data.forget, self.data.refusals, seed=self.cfg.seed)
            return pairs, collate_pairs
        return self.items["forget"], collate

    # -- evaluation ----------------------------------------------------------------------------------
    def sweep(self, delta: RegionDelta, *, start_key: str, labels: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The 21-point (``n_alpha``) mixing sweep from the current state (α=0) to the unlearned one."""
        alphas = np.linspace(0.0, 1.0, self.cfg.n_alpha).round(6).tolist()
        inputs = {"start": start_key, "delta": delta_fingerprint(delta), "alphas": alphas,
                  "eval": dataclasses.asdict(self.evaluator.cfg),
                  "reference": None if self.evaluator.reference_forget_tr is None else self.evaluator.reference_forget_tr.tolist()}
        per_alpha, per_example = self.cache.get_or_build(
            "sweep", inputs, lambda: mixing_sweep(self.model, delta, self.evaluator, alphas, progress=self.progress),
            _save_frames, _load_frames, force=self.force, sources=EVAL_SOURCES)
        for frame in (per_alpha, per_example):
            for i, (k, v) in enumerate(labels.items()):
                frame.insert(i, k, v)
        return per_alpha, per_example


def objective_params(cfg, objective: str) -> dict[str, Any]:
    """The hyperparameters of an objective as the config gives them (SPEC §3 defaults)."""
    table = {
        "wga": lambda: {"alpha": cfg.wga_alpha},
        "npo": lambda: {"beta": cfg.npo_beta},
        "dpo": lambda: {"beta": cfg.dpo_beta},
        "rmu": lambda: {"layer": None if cfg.rmu_layer < 0 else cfg.rmu_layer, "c": cfg.rmu_c, "seed": cfg.seed},
    }
    return table.get(objective, dict)()


def delta_fingerprint(delta: RegionDelta) -> str:
    return cache_mod.fingerprint({k: cache_mod.array_fingerprint(v) for k, v in delta.state_tensors().items()})


def check_injection(report: dict, cfg) -> None:
    """θo must hold the forget set (ES ≥ min_forget_es) while keeping the retain set."""
    if report["forget_es_o"] < cfg.min_forget_es:
        raise CheckFailed(
            f"injection too weak: θo's forget ES is {report['forget_es_o']:.3f} < min_forget_es={cfg.min_forget_es} "
            f"(θr: {report['forget_es_r']:.3f}). Raise 'inject_epochs' (now {cfg.inject_epochs}) or 'inject_lr' "
            f"(now {cfg.inject_lr}), or widen the model ('tiny_d_ff') / region ('region_fraction')."
        )
    drop = report["retain_es_r"] - report["retain_es_o"]
    if drop > cfg.max_retain_es_drop:
        raise CheckFailed(
            f"injection damaged the retain set: retain ES fell by {drop:.3f} > max_retain_es_drop={cfg.max_retain_es_drop}. "
            f"Raise 'lambda_retain' (now {cfg.lambda_retain}) or lower 'inject_lr' (now {cfg.inject_lr})."
        )


def check_fs(per_alpha: pd.DataFrame, *, lr_key: str, lr: float, what: str) -> str | None:
    """SPEC §3's rule: FS at α = 1 approaches but does not reach 1 (we require it in [0.8, 1))."""
    fs = float(per_alpha.loc[per_alpha["alpha"].idxmax(), "FS"])
    if fs >= 1.0:
        return f"{what}: FS at α=1 is {fs:.3f} (reached 1); lower '{lr_key}' (now {lr})"
    if fs < 0.8 or math.isnan(fs):
        return f"{what}: FS at α=1 is {fs:.3f} < 0.8 (did not unlearn); raise '{lr_key}' (now {lr}) or 'unlearn_epochs'"
    return None


# -- opening a session -------------------------------------------------------------------------------
def open_session(cfg, *, base: str = "retain", cache_root: str | None = None, force: bool = False,
                 progress: bool = True) -> Session:
    """Load data and θp, train (or fetch) θr — or θ_full with ``base="full"`` — and build the evaluator."""
    torch.manual_seed(cfg.seed)
    data = load_config_data(cfg)
    cache = cache_mod.Cache(cache_root)
    device = resolve_device(cfg.device)
    model, tok, p_key = pretrained_model(cfg, data, cache, device, force=force, progress=progress)
    check_model(cfg, model)
    r_key, model, tok = finetuned_model(cfg, data, cache, device, model, tok, p_key, which="retain",
                                        force=force, progress=progress)
    items = {s: encode_all(tok, getattr(data, s)) for s in ("forget", "retain", "retain_eval")}
    eval_cfg = EvalConfig(generate=cfg.eval_generate, max_new_tokens=cfg.eval_max_new_tokens)
    session = Session(cfg, data, model, tok, r_key, cache, Evaluator(tok, data, eval_cfg), items, force=force,
                      progress=progress)
    reference = retain_reference(session)
    session.reference = reference
    session.evaluator = Evaluator(tok, data, eval_cfg, reference_forget_tr=reference["truth_ratio"].to_numpy())
    if base == "full":
        del session.model, model  # θr is only needed for its reference truth ratios
        theta_p, tok, p_key = pretrained_model(cfg, data, cache, device, force=force, progress=progress)
        f_key, session.model, _ = finetuned_model(cfg, data, cache, device, theta_p, tok, p_key, which="full",
                                                  force=force, progress=progress)
        session.base_key = f_key
    return session


def check_model(cfg, model: nn.Module) -> None:
    """Parameters that depend on the model, checked before any fine-tuning (RMU's layer)."""
    from workbench import architectures, config

    uses_rmu = "rmu" in getattr(cfg, "objectives", []) or getattr(cfg, "objective", "") == "rmu"
    if uses_rmu:
        config.resolve_rmu_layer(cfg.rmu_layer, architectures.n_layers(model))


def retain_reference(session: Session) -> pd.DataFrame:
    """θr's per-example forget-set results (its truth ratios are Forget Quality's reference)."""
    inputs = {"model": session.base_key, "eval": dataclasses.asdict(session.evaluator.cfg)}
    result = session.cache.get_or_build(
        "reference_eval", inputs, lambda: session.evaluator(session.model).per_example,
        lambda df, f: df.to_parquet(f / "per_example.parquet"), lambda f: pd.read_parquet(f / "per_example.parquet"),
        force=session.force, sources=EVAL_SOURCES)
    return result[result["split"] == "forget"].reset_index(drop=True)


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
                     pad_id(tok), desc="pre-train θp", progress=progress)
        return model, tok

    model, tok = cache.get_or_build("theta_p", inputs, build, _save_model, _loader(device, cfg.dtype),
                                    force=force, sources=TRAINING_SOURCES + ["workbench.data"])
    return model, tok, cache_mod.cache_key("theta_p", inputs, TRAINING_SOURCES + ["workbench.data"])


def load_named_model(cfg, device: torch.device):
    if cfg.model == "smollm2":
        from workbench.smollm import load_smollm2

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
                 desc=f"fine-tune θ_{which}", progress=progress)
        return model, tok

    key = cache_mod.cache_key(f"theta_{which}", inputs, TRAINING_SOURCES)
    model, tok = cache.get_or_build(f"theta_{which}", inputs, build, _save_model, _loader(device, cfg.dtype),
                                    force=force, sources=TRAINING_SOURCES)
    return key, model, tok


def reference_copy(session: Session) -> nn.Module:
    """A frozen copy of the session's model as it is now (θr right after :func:`open_session`)."""
    import copy

    reference = copy.deepcopy(session.model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference
