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
content-addressed :class:`~workbench.runs.cache.Cache`, keyed by everything that determines it,
including the source of the modules that compute it; a changed input recomputes, a repeated run
is served from the cache, and notebooks share models.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbench import objectives as obj
from workbench.data import config_data
from workbench.data.formatting import Encoded, encode_all, pad_id
from workbench.data.schema import UnlearningData
from workbench.delta import RegionDelta
from workbench.evaluation import EvalConfig, Evaluator
from workbench.experiments.chain import (
    EVAL_SOURCES,
    CheckFailed,
    chain_model,
    train_cfg,
)
from workbench.experiments.checks import check_fs, check_injection
from workbench.experiments.preflight import preflight, stage_fits
from workbench.experiments.reference import reference_config, reference_truth_ratios
from workbench.mixing import evaluated_in, mixing_sweep
from workbench.models import architectures as arch
from workbench.models import resolve_device, use_deterministic
from workbench.regions import Region, WeightRegion
from workbench.runs import cache as cache_mod
from workbench.runs.config import ConfigError, method_params, plugin_modules
from workbench.scoring import score_sequences, sequence_batches
from workbench.training import TrainSpec, train_region

__all__ = ["CheckFailed", "Session", "check_fs", "check_injection", "delta_fingerprint", "delta_identity", "open_session"]


def _save_delta(delta: RegionDelta, folder: Path) -> None:
    delta.save(folder / "delta.safetensors")


def _save_frames(frames: tuple[pd.DataFrame, pd.DataFrame], folder: Path) -> None:
    frames[0].to_parquet(folder / "per_alpha.parquet")
    frames[1].to_parquet(folder / "per_example.parquet")


def _load_frames(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return pd.read_parquet(folder / "per_alpha.parquet"), pd.read_parquet(folder / "per_example.parquet")


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
    retain_model: nn.Module | None = None  # a frozen θr, for objectives that compare with it (l2_mlp)
    force: bool = False
    progress: bool = True
    base_es: dict[str, float] | None = None  # the base model's es_summary, computed once (every θo starts there)

    @property
    def pad(self) -> int:
        return pad_id(self.tokenizer)

    # -- θo ----------------------------------------------------------------------------------------
    def inject(self, region: Region, *, check: bool = True) -> tuple[RegionDelta, dict]:
        """Train the forget set into ``region`` of θr (NLL + λ_retain·NLL(retain)); returns θo's delta.

        With ``inject_general`` the retain term also covers θp's general-knowledge set (the one
        ``replay_pretrain`` mixes into θr). The delta is NOT merged; use :meth:`at` to move the model
        to θo. With ``check`` the injection must reach ``min_forget_es`` on the forget set without
        lowering retain ES (and, with ``inject_general``, the general set's ES) by more than
        ``max_retain_es_drop`` (SPEC: otherwise every region looks alike). The report always
        carries the general set's ES before and after where the data has one.
        """
        c = self.cfg
        inputs = {"base": self.base_key, "region": region.fingerprint(), "lr": c.inject_lr, "epochs": c.inject_epochs,
                  "lambda_retain": c.lambda_retain, "train": dataclasses.asdict(train_cfg(c, c.inject_lr, c.inject_epochs))}
        retain = self.items["retain"]
        if c.inject_general:
            retain = retain + self.items["general"]
            inputs["general"] = True  # only when set, so that earlier θo keep their cache keys

        def build():
            self.fits("injection")
            spec = TrainSpec(self.items["forget"], train_cfg(c, c.inject_lr, c.inject_epochs), self.pad, retain=retain,
                             lambda_retain=c.lambda_retain, desc=f"inject into {region.size} vectors",
                             progress=self.progress, gradient_checkpointing=c.gradient_checkpointing)
            delta, _ = train_region(self.model, region, spec)
            return delta

        delta = self._cached_delta("theta_o", inputs, build)
        if self.base_es is None:
            self.base_es = self.es_summary()
        with self.at(delta):
            after = self.es_summary()
        before = self.base_es
        report = {f"{split}_es_{m}": stats[key] for m, stats in (("r", before), ("o", after))
                  for split, key in (("forget", "forget"), ("retain", "retain_eval"), ("general", "general")) if key in stats}
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

    def es_summary(self) -> dict[str, float]:
        """Teacher-forced mean ES on the forget and retain evaluation sets and, where the data has
        one, θp's general-knowledge set (fast, no generation: :func:`workbench.scoring.score_sequences`)."""
        out = {}
        for split in ("forget", "retain_eval", "general"):
            if items := self.items.get(split):
                _, es = score_sequences(self.model, sequence_batches(items, 32, self.pad), len(items))
                out[split] = float(es.mean())
        return out

    def fits(self, stage: str) -> None:
        """Refuse ``stage`` before its work when its memory estimate exceeds the device's memory now."""
        lengths = [len(e.input_ids) for items in self.items.values() for e in items]
        if lengths:  # a session put together by hand, without encoded data, has nothing to estimate
            stage_fits(self.cfg, self.model, max(lengths), stage)

    # -- unlearning --------------------------------------------------------------------------------
    def unlearn(self, region: Region | WeightRegion, objective: str, lr: float, *, start_key: str,
                lambda_retain: float = 0.0) -> RegionDelta:
        """Unlearn the forget set from the CURRENT model state with ``objective``, updating only ``region``.

        The objective's hyper-parameters come from the config (``<name>_<field>``), its training
        items and batching from the objective itself. ``start_key`` identifies the current state
        (e.g. θo's cache key) for the cache.
        """
        c = self.cfg
        params = method_params(c, "objective", objective)
        tc = train_cfg(c, lr, c.unlearn_epochs)
        inputs = {"start": start_key, "region": region.fingerprint(), "objective": objective, "params": params,
                  "train": dataclasses.asdict(tc), "lambda_retain": lambda_retain}

        def build():
            self.fits(f"unlearning with {objective}")
            objective_fn = obj.make(objective, **params)
            items = objective_fn.train_items(self.tokenizer, self.data, self.items["forget"], seed=c.seed)
            ctx = obj.ObjectiveContext(reference_model=self.retain_model if objective_fn.needs_reference_model else None)
            spec = TrainSpec(items, tc, self.pad, objective=objective_fn,
                             retain=self.items["retain"] if lambda_retain else None, lambda_retain=lambda_retain,
                             ctx=ctx, desc=f"{objective} on {region.size} entries", progress=self.progress,
                             gradient_checkpointing=c.gradient_checkpointing)
            delta, _ = train_region(self.model, region, spec)
            return delta

        return self._cached_delta("unlearned", inputs, build)

    def _cached_delta(self, kind: str, inputs: dict, build) -> RegionDelta:
        """A trained delta from the cache (or built); ``delta.cache_key`` is its identity downstream."""
        sources = self.sources(EVAL_SOURCES)
        delta = self.cache.get_or_build(kind, inputs, build, _save_delta,
                                        lambda f: RegionDelta.load(self.model, f / "delta.safetensors"),
                                        force=self.force, sources=sources)
        delta.cache_key = self.cache.key(kind, inputs, sources)
        return delta

    def sources(self, base: list[str]) -> list[str]:
        """Modules whose source (with all they import) is part of a cache key: ``base`` plus plug-ins."""
        return base + plugin_modules(self.cfg.plugins)

    # -- evaluation ----------------------------------------------------------------------------------
    def sweep(self, delta: RegionDelta, *, start_key: str, labels: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The 21-point (``n_alpha``) mixing sweep from the current state (α=0) to the unlearned one.

        Sweeps with one ``start_key`` start from the same model: its α = 0 evaluation is computed once."""
        alphas = np.linspace(0.0, 1.0, self.cfg.n_alpha).round(6).tolist()
        reference = self.evaluator.reference_forget_tr
        inputs = {"start": start_key, "delta": delta_identity(delta), "alphas": alphas,
                  "eval": dataclasses.asdict(self.evaluator.cfg), "reference": None if reference is None else reference.tolist()}
        if eval_dtype := sweep_dtype(self.cfg):
            inputs["eval_dtype"] = eval_dtype

        def build():
            self.fits("sweeps")
            with parked(self.retain_model), evaluated_in(self.model, eval_dtype):
                return mixing_sweep(self.model, delta, self.evaluator, alphas, progress=self.progress,
                                    first=self.evaluator.memoised(self.model, start_key))

        per_alpha, per_example = self.cache.get_or_build(
            "sweep", inputs, build, _save_frames, _load_frames, force=self.force, sources=self.sources(EVAL_SOURCES))
        for frame in (per_alpha, per_example):
            for i, (k, v) in enumerate(labels.items()):
                frame.insert(i, k, v)
        return per_alpha, per_example


def sweep_dtype(cfg) -> str:
    """The dtype sweeps are evaluated in when it is not the model's (``eval_dtype``); '' otherwise."""
    return cfg.eval_dtype if cfg.eval_dtype not in ("", cfg.dtype) else ""


@contextlib.contextmanager
def parked(model: nn.Module | None) -> Iterator[None]:
    """``model`` (the frozen θr some objectives train against) on the host meanwhile: sweeps do not use it,
    and an 8B sweep in float32 has no room for it beside θ(α) (the memory pre-flight counts it so)."""
    device = None if model is None else next(model.parameters()).device
    if device is None or device.type == "cpu":
        yield
        return
    model.to("cpu")
    try:
        yield
    finally:
        model.to(device)


def delta_fingerprint(delta: RegionDelta) -> str:
    return cache_mod.fingerprint({k: cache_mod.array_fingerprint(v) for k, v in delta.state_tensors().items()})


def delta_identity(delta: RegionDelta) -> str:
    """The cache key a delta was built under (which carries its whole lineage: data, θr, region,
    objective, code), or, for a delta made outside the cache, a hash of its tensors."""
    return getattr(delta, "cache_key", None) or delta_fingerprint(delta)


# -- opening a session -------------------------------------------------------------------------------
def open_session(cfg, *, base: str = "retain", cache_root: str | None = None, force: bool = False,
                 progress: bool = True) -> Session:
    """Load data, get θr — fine-tuned here from θp, or brought with ``retain_model`` — or, with
    ``base="full"``, θ_full (``full_model``), and build the evaluator (θr's truth ratios are FQ's reference).
    Every stage's memory is checked against the device once the first model is loaded, before any
    training (:mod:`workbench.experiments.preflight`); on CUDA, torch's deterministic kernels are asked for."""
    torch.manual_seed(cfg.seed)
    data = config_data(cfg)
    device = resolve_device(cfg.device)
    use_deterministic(device)
    cache = cache_mod.Cache(cache_root, device=device)
    r_key, model, tok = chain_model(cfg, data, cache, device, which="retain", force=force, progress=progress,
                                    check=lambda m, t: (check_model(cfg, m), preflight(cfg, data, m, t, base=base)))
    items = {s: encode_all(tok, getattr(data, s)) for s in ("forget", "retain", "retain_eval")}
    items["general"] = encode_all(tok, data.pretrain) if data.pretrain else []
    eval_cfg = EvalConfig(generate=cfg.eval_generate, max_new_tokens=cfg.eval_max_new_tokens,
                          batch_size=cfg.eval_batch_size or "auto")
    session = Session(cfg, data, model, tok, r_key, cache, Evaluator(tok, data, eval_cfg), items, force=force,
                      progress=progress)
    reference = retain_reference(session)
    if any(obj.objective_class(n).needs_reference_model for n in cfg.methods("objective")):
        session.retain_model = frozen_copy(model)
    session.evaluator = Evaluator(tok, data, eval_cfg, reference_forget_tr=reference)
    if base == "full":
        del session.model, model  # θr is only needed for its reference truth ratios
        session.base_key, session.model, _ = chain_model(cfg, data, cache, device, which="full", force=force,
                                                         progress=progress)
    return session


def check_model(cfg, model: nn.Module) -> None:
    """Method parameters that depend on the model (RMU's layer), checked before any fine-tuning."""
    problems = [p for name in cfg.methods("objective")
                for p in obj.make(name, **method_params(cfg, "objective", name)).check_depth(arch.n_layers(model))]
    if problems:
        raise ConfigError(cfg.notebook, problems)


def retain_reference(session: Session) -> np.ndarray:
    """θr's per-example forget truth ratios, Forget Quality's reference (:mod:`workbench.experiments.reference`),
    cached."""
    cfg = session.evaluator.cfg
    inputs = {"model": session.base_key, "eval": dataclasses.asdict(reference_config(cfg))}
    if eval_dtype := sweep_dtype(session.cfg):  # computed like the sweeps' truth ratios it is compared with
        inputs["eval_dtype"] = eval_dtype

    def build():
        with evaluated_in(session.model, eval_dtype):
            return reference_truth_ratios(session.model, session.tokenizer, session.data, cfg)

    return session.cache.get_or_build(
        "reference_truth_ratios", inputs, build,
        lambda tr, f: np.save(f / "truth_ratios.npy", tr), lambda f: np.load(f / "truth_ratios.npy"),
        force=session.force, sources=EVAL_SOURCES)


def frozen_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` as it is now (θr right after :func:`open_session`)."""
    reference = copy.deepcopy(model).eval()
    for p in reference.parameters():
        p.requires_grad_(False)
    return reference
