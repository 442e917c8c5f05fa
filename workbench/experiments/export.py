"""Models that leave the workbench: any model a run computed, as a Hugging Face folder.

A run folder keeps tables, not models. The models live in the content-addressed cache
(:mod:`workbench.runs.cache`): θp, θr and θ_full as model folders, θo and every unlearned model as
fp32 region deltas on top of their start (:mod:`workbench.delta`); the sweep's θ(α) is the start
with the delta mixed in at α. :func:`export_model` rebuilds the chosen model from the run's
``params.json`` through the same cached steps the notebook took — served from the cache where the
entries are there, recomputed (with a message and progress bars) where they are not — and writes
``config.json``, the tokenizer (with its chat template, if it has one) and ``model.safetensors``:
a folder that ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``,
``python -m workbench evaluate`` and open-unlearning's evaluator load.

What a run has, named as :func:`export_model` and ``python -m workbench export`` name it:

* ``theta_p`` and ``theta_r``: every run (θr is FQ's reference everywhere);
* ``theta_full``: runs whose sweeps start from θ_full (revisit-localizers);
* ``theta_o`` of a target seed: the controlled notebooks (oracle-vs-random, lume, l2-mlp-supervision);
* ``unlearned``: one sweep of ``per_alpha.parquet`` (objective, scenario, seed) at ``alpha``:
  α = 1 is the unlearned model, α = 0 the sweep's start (θo or θ_full).

In fp32 the exported weights are the run's θ(α) bit for bit. In bf16 the sweep applies the fp32
delta through hooks, while a saved folder can only hold the region entries rounded to bf16.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workbench import objectives as obj
from workbench.data import config_data
from workbench.data.formatting import encode_all
from workbench.evaluation import EvalConfig, Evaluator
from workbench.experiments.chain import chain_model, pretrained_model
from workbench.experiments.controlled import ORACLE, RANDOM, theta_o
from workbench.experiments.revisit import RANDOM_WEIGHTS, THETA_FULL, localized_region
from workbench.experiments.session import Session, delta_identity, frozen_copy
from workbench.models import resolve_device, save_model_folder, use_deterministic
from workbench.regions import Region, random_region, random_weight_region
from workbench.runs import cache as cache_mod
from workbench.runs import config
from workbench.runs.rundir import PARAMS, PER_ALPHA

__all__ = ["MODELS", "ExportError", "export_model", "run_models"]

MODELS = ("theta_p", "theta_r", "theta_full", "theta_o", "unlearned")
EXPORT_INFO = "workbench_export.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
# What each cache entry is, for the "recomputing" message.
ENTRY_NAMES = {"theta_p": "θp", "theta_retain": "θr", "theta_full": "θ_full", "theta_o": "θo's region delta",
               "unlearned": "the unlearning delta"}
# The weight of the objective's retain term while unlearning, where a notebook sets one (Figure 1).
LAMBDA_RETAIN = {"l2-mlp-supervision": lambda cfg: cfg.retain_l2_weight}


class ExportError(ValueError):
    """The run folder, the model asked for or the output folder is wrong; the message says how."""


# -- what a run has ---------------------------------------------------------------------------------
def _theta_o_seed(start: str) -> int | None:
    tail = start.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() and theta_o(int(tail)) == start else None


def run_models(run: str | os.PathLike) -> dict[str, Any]:
    """The models a finished run computed: ``{"notebook", "theta_o_seeds", "theta_full", "sweeps"}``,
    ``sweeps`` being the (objective, start, scenario, seed) rows of its ``per_alpha`` table."""
    folder = Path(run)
    if not (folder / PARAMS).is_file():
        raise ExportError(f"{folder} is not a run folder (no {PARAMS}); give outputs/<notebook>/<run-id>/ "
                          "as `python -m workbench status` lists them")
    table = folder / f"{PER_ALPHA}.parquet"
    if not table.is_file():
        raise ExportError(f"{folder} has no {table.name}: the run did not finish; export models of a finished run "
                          "(rerun it with the same parameters: its models come from the cache)")
    sweeps = pd.read_parquet(table, columns=["objective", "start", "scenario", "seed"]).drop_duplicates()
    seeds = sorted({s for s in map(_theta_o_seed, sweeps["start"]) if s is not None})
    info = json.loads((folder / PARAMS).read_text())
    return {"notebook": info["notebook"], "info": info, "theta_o_seeds": seeds,
            "theta_full": bool((sweeps["start"] == THETA_FULL).any()), "sweeps": sweeps.reset_index(drop=True)}


@dataclass(frozen=True)
class Choice:
    """One model of a run: ``model`` (one of :data:`MODELS`), with the sweep and α of an unlearned one."""

    model: str
    seed: int | None = None
    objective: str | None = None
    scenario: str | None = None
    start: str | None = None
    alpha: float = 1.0

    def describe(self) -> str:
        if self.model == "unlearned":
            return f"{self.objective}/{self.scenario}/seed {self.seed} from {self.start} at α = {self.alpha:g}"
        return f"{self.model}" + (f" of target seed {self.seed}" if self.seed is not None else "")


def choose(has: dict[str, Any], run: Path, *, model: str | None, objective: str | None, scenario: str | None,
           seed: int | None, alpha: float) -> Choice:
    """Check the request against what the run computed; a refusal lists what it has."""
    model = model or ("unlearned" if objective else None)
    if model not in MODELS:
        raise ExportError(f"say which model to export: --model one of {list(MODELS)} "
                          f"(an --objective alone means 'unlearned'); got {model!r}")
    if model != "unlearned" and (objective or scenario or alpha != 1.0):
        raise ExportError(f"--objective, --scenario and --alpha name an unlearned model, not {model}; drop them")
    if model == "theta_o":
        if seed not in has["theta_o_seeds"]:
            where = (f"its θo target seeds are {has['theta_o_seeds']}" if has["theta_o_seeds"]
                     else f"{has['notebook']} computes no θo (its sweeps start from θ_full)")
            raise ExportError(f"run {run} has no θo of target seed {seed}: {where}; pass --seed")
        return Choice(model, seed=seed)
    if model == "theta_full" and not has["theta_full"]:
        raise ExportError(f"run {run} ({has['notebook']}) computes no θ_full; it has θp, θr and "
                          f"θo of seeds {has['theta_o_seeds']}")
    if model != "unlearned":
        return Choice(model)
    if not 0.0 <= alpha <= 1.0:
        raise ExportError(f"--alpha must be within [0, 1] (0: the sweep's start, 1: the unlearned model); got {alpha}")
    sweeps = has["sweeps"]
    if objective not in set(sweeps["objective"]):
        raise ExportError(f"run {run} has no objective {objective!r}; it has {sorted(set(sweeps['objective']))}")
    mine = sweeps[sweeps["objective"] == objective]
    row = mine[(mine["scenario"] == scenario) & (mine["seed"] == seed)]
    if row.empty:
        listed = ", ".join(f"--scenario {r.scenario} --seed {r.seed}" for r in mine.itertuples())
        raise ExportError(f"run {run} has no {objective} sweep with scenario {scenario!r} and seed {seed}; "
                          f"its {objective} sweeps: {listed}")
    return Choice(model, int(seed), objective, scenario, row["start"].iloc[0], float(alpha))


# -- rebuilding the model ---------------------------------------------------------------------------
class NotingCache(cache_mod.Cache):
    """The run's cache, saying so when an entry is missing and recomputed, and recording which were."""

    def __init__(self, root: str | os.PathLike | None = None, *, device=None):
        super().__init__(root, device=device)
        self.recomputed: list[str] = []

    def get_or_build(self, kind, inputs, build, save, load, force=False, sources=()):
        def announced():
            self.recomputed.append(kind)
            print(f"{ENTRY_NAMES.get(kind, kind)} is not in the cache {self.root}: recomputing it from the run's "
                  "parameters", file=sys.stderr)
            return build()

        return super().get_or_build(kind, inputs, announced, save, load, force=force, sources=sources)


def _session(cfg, data, cache, key: str, model, tok, progress: bool) -> Session:
    """A session on ``model`` for injecting and unlearning only: no evaluation, so no reference eval."""
    items = {s: encode_all(tok, getattr(data, s)) for s in ("forget", "retain", "retain_eval")}
    items["general"] = encode_all(tok, data.pretrain) if data.pretrain else []
    session = Session(cfg, data, model, tok, key, cache, Evaluator(tok, data, EvalConfig(generate=False)), items,
                      progress=progress)
    if any(obj.objective_class(n).needs_reference_model for n in cfg.methods("objective")):
        session.retain_model = frozen_copy(model)
    return session


def _regions(run: Path) -> pd.DataFrame:
    path = run / "regions.parquet"
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["start", "scenario", "seed"])


def _drawn_region(regions: pd.DataFrame, start: str, scenario: str, seed: int) -> Region | None:
    """The region the run drew for (scenario, seed) from ``start``, as its regions table stores it."""
    if "region_json" not in regions:
        return None
    rows = regions[(regions["start"] == start) & (regions["scenario"] == scenario) & (regions["seed"] == seed)]
    return Region.from_json(rows["region_json"].iloc[0]) if len(rows) else None


def _controlled_region(session: Session, regions: pd.DataFrame, choice: Choice, v_tgt: Region) -> Region:
    if choice.scenario == ORACLE:
        return v_tgt
    drawn = _drawn_region(regions, choice.start, choice.scenario, choice.seed)
    if drawn is None:  # a run from before regions tables kept the regions: draw it as controlled() did
        drawn = random_region(session.model, session.cfg.region_fraction, choice.seed, exclude=v_tgt)
    return drawn


def _revisit_region(session: Session, choice: Choice):
    """§3's region of a scenario on θ_full (as :func:`workbench.experiments.revisit.revisit` draws it) and its lr."""
    cfg, model, name = session.cfg, session.model, choice.scenario
    if name == RANDOM:
        return random_region(model, cfg.region_fraction, choice.seed), cfg.lr_for(RANDOM)
    if name == RANDOM_WEIGHTS:
        return random_weight_region(model, cfg.weight_fraction, choice.seed), cfg.lr_weight_level
    weights = cfg.weight_level and name == cfg.weight_localizer
    region = localized_region(session, name, cfg.weight_fraction if weights else cfg.region_fraction)
    return region, (cfg.lr_weight_level if weights else cfg.lr_for(name))


def build_model(cfg, run: Path, choice: Choice, cache: cache_mod.Cache, *, progress: bool = True):
    """The chosen model (weights at θ(α) for an unlearned one) and its tokenizer, plus the cache keys
    that identify it."""
    data = config_data(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if choice.model == "theta_p":
        model, tok, key = pretrained_model(cfg, data, cache, device, force=False, progress=progress)
        return model, tok, {"theta_p": key}
    from_full = choice.model == "theta_full" or choice.start == THETA_FULL
    which = "full" if from_full else "retain"
    key, model, tok = chain_model(cfg, data, cache, device, which=which, force=False, progress=progress)
    keys = {f"theta_{which}": key}
    if choice.model in ("theta_r", "theta_full"):
        return model, tok, keys
    session = _session(cfg, data, cache, key, model, tok, progress)
    if from_full:
        start_key = key
        region, lr = _revisit_region(session, choice)
    else:
        seed = choice.seed if choice.model == "theta_o" else _theta_o_seed(choice.start)
        regions = _regions(run)
        v_tgt = _drawn_region(regions, theta_o(seed), ORACLE, seed)
        if v_tgt is None:
            v_tgt = random_region(model, cfg.region_fraction, seed)
        delta_o, _ = session.inject(v_tgt, check=False)
        delta_o.merge(1.0)  # the model is θo from here on
        start_key = keys["theta_o"] = delta_identity(delta_o)
        if choice.model == "theta_o":
            return model, tok, keys
        region, lr = _controlled_region(session, regions, choice, v_tgt), cfg.lr_for(choice.objective)
    lambda_retain = LAMBDA_RETAIN.get(cfg.notebook, lambda c: 0.0)(cfg)
    delta = session.unlearn(region, choice.objective, lr, start_key=start_key, lambda_retain=lambda_retain)
    keys["unlearned"] = delta_identity(delta)
    delta.merge(choice.alpha)
    return model, tok, keys


# -- writing the folder -----------------------------------------------------------------------------
def older_transformers_tokenizer(folder: Path) -> None:
    """What older transformers need in ``tokenizer_config.json`` that transformers 5 leaves out: the chat
    template (5 writes it to ``chat_template.jinja`` only; readers of ``tokenizer_config.json`` alone miss
    it) and, for a plain ``PreTrainedTokenizerFast``, ``model_input_names`` without ``token_type_ids``
    (transformers 4.45 returns them by default, and ``model(**tokenizer(text))`` then fails)."""
    template, tok_cfg = folder / CHAT_TEMPLATE_FILE, folder / "tokenizer_config.json"
    if not tok_cfg.is_file():
        return
    data = json.loads(tok_cfg.read_text(encoding="utf-8"))
    new = dict(data)
    if template.is_file():
        new.setdefault("chat_template", template.read_text(encoding="utf-8"))
    if new.get("tokenizer_class") == "PreTrainedTokenizerFast":
        new.setdefault("model_input_names", ["input_ids", "attention_mask"])
    if new != data:
        tok_cfg.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_out(out: Path, run: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(f"--out {out} is not empty; choose another folder, or pass --force to replace it")
        if any(p.is_dir() for p in out.iterdir()) or out.resolve() in (run.resolve(), *run.resolve().parents):
            raise ExportError(f"--out {out} holds folders (or the run): --force replaces only a model folder "
                              "(files only); choose another folder")


@contextlib.contextmanager
def run_threads(n: int | None):
    """Compute with the threads the run computed with: they set the last bits of a recomputed model."""
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n or previous))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def export_model(run: str | os.PathLike, out: str | os.PathLike, *, model: str | None = None,
                 objective: str | None = None, scenario: str | None = None, seed: int | None = None,
                 alpha: float = 1.0, force: bool = False, cache_root: str | os.PathLike | None = None,
                 progress: bool = True) -> Path:
    """Write the model ``model`` (see :data:`MODELS`) of the finished run ``run`` as a Hugging Face folder ``out``.

    ``model="unlearned"`` (implied by ``objective``) takes the sweep ``objective``/``scenario``/``seed`` at
    ``alpha``; ``theta_o`` takes the target ``seed``. Models come from the cache (``cache_root``, default
    ``$WORKBENCH_CACHE`` or ``<repo>/.cache``) or are recomputed from the run's parameters. A non-empty
    ``out`` is refused unless ``force`` (and then only a folder of files is replaced). The folder also
    holds ``workbench_export.json``: the run, the model, its cache keys and what was recomputed.
    """
    run, out = Path(run), Path(out)
    has = run_models(run)
    choice = choose(has, run, model=model, objective=objective, scenario=scenario, seed=seed, alpha=alpha)
    _check_out(out, run, force)
    info = has["info"]
    cfg = config.from_params(has["notebook"], info["params"])
    device = resolve_device(cfg.device)
    use_deterministic(device)  # as open_session does: the flags are part of every cache key
    cache = NotingCache(cache_root, device=device)
    print(f"exporting {choice.describe()} of {run} → {out}", file=sys.stderr)
    with run_threads(info.get("threads")):
        net, tok, keys = build_model(cfg, run, choice, cache, progress=progress)
    tmp = out.with_name(f".{out.name}.export-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model_folder(net, tok, tmp)
        older_transformers_tokenizer(tmp)
        record = {"run": str(run.resolve()), "notebook": has["notebook"], "model": choice.model, "objective": choice.objective,
                  "scenario": choice.scenario, "seed": choice.seed, "start": choice.start,
                  "alpha": choice.alpha if choice.model == "unlearned" else None, "dtype": cfg.dtype,
                  "cache_keys": keys, "recomputed": cache.recomputed, "run_git": info.get("git"),
                  "run_threads": info.get("threads")}
        (tmp / EXPORT_INFO).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if cache.recomputed:
        print(f"recomputed {[ENTRY_NAMES.get(k, k) for k in cache.recomputed]}: with the run's code, threads and CPU "
              f"they equal the run's models; otherwise their last bits may differ (run: git {info.get('git')}, "
              f"{info.get('threads')} threads)", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)
    return out
