"""The paper's evaluation for any unlearned model: two checkpoints in, FS–RS and MU–FQ curves out.

Lee et al. (2025, §3 and appendix B) evaluate unlearning by **model mixing**: the straight line
``θ(α) = (1−α)·θ_before + α·θ_after`` is evaluated at α = 0, 0.05, …, 1, and the sweep summarised
by AUES (area under RS over FS) and MU95 (FQ where MU has fallen to 95% of MU(θ_before)). Nothing
in that needs our pipeline: :func:`evaluate_pair` takes θ_before and one or more θ_after (whatever
trained them: open-unlearning, one's own trainer, a LoRA adapter) and gives one sweep per θ_after.

* ``before``: a hub id, a local folder or a loaded model (then pass ``tokenizer``); it is the one
  model on the device. ``after``: one or a list of hub ids, local folders, loaded models or PEFT
  adapter folders on top of ``before`` (an adapter of another base is refused by name), streamed
  from disk or host memory while mixing (:class:`workbench.mixing.StateMixer`; adapters merged on
  the host).
* ``retain_model`` (θr, trained without the forget set) gives Forget Quality its reference (its
  per-example forget truth ratios); without it FQ and MU95 are left out and ``notes`` says why.
  θr is loaded, evaluated and released before θ_before is loaded, so one model is on the device
  at a time (unless ``before`` is given loaded: it is on the device already).
* ``dtype`` is the dtype of the evaluation (float32 by default: in bf16, greedy generation depends
  on the decoding path, :mod:`workbench.generation`). In a lower precision the mixer keeps the
  changed parameters in fp32 (θ(α) exact), and each sweep evaluates its own α = 0 through it.
* The α = 0 point is evaluated once and shared by every sweep. ``eval_config`` chooses splits,
  generation length and ``prompt_format`` (``"open-unlearning"`` to put numbers next to published
  open-unlearning ones).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbench.data import config_data
from workbench.data.schema import UnlearningData
from workbench.evaluation import EvalConfig, Evaluator
from workbench.experiments.preflight import evaluate_fits
from workbench.experiments.reference import reference_truth_ratios
from workbench.experiments.tables import summarise
from workbench.mixing import ALPHAS, StateMixer, mixing_sweep
from workbench.models import load_model
from workbench.models.checkpoints import (
    adapter_base_problem,
    after_tensors,
    checkpoint_name,
    folder_tensors,
    local_folder,
)

NOTEBOOK = "evaluate-checkpoints"
OBJECTIVE = "external"  # the per-α table's objective column: unlearned elsewhere, by whatever method
ENDS = ("FS", "RS", "MU", "FQ")
NO_FQ = "no retain_model (θr) given: Forget Quality compares the forget truth ratios with θr's, so FQ and MU95 are left out"


@dataclass
class PairResult:
    """Sweeps of one θ_before towards each θ_after.

    ``per_alpha``: one row per (method, α) with every summary number (tidy: the columns of
    :data:`workbench.runs.rundir.PER_ALPHA_COLUMNS` first; ``scenario`` is the method's label).
    ``per_example``: one row per (method, α, split, example). ``summary``: one row per method with
    AUES, MU95 and ``MU95_reached`` (False: MU never fell to 95%, MU95 is FQ at α = 1) and the ends.
    ``notes``: why a number is missing. Data only: :mod:`workbench.viz.compare` draws and saves it.
    """

    per_alpha: pd.DataFrame
    per_example: pd.DataFrame
    summary: pd.DataFrame
    notes: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def aues(self) -> dict[str, float]:
        return dict(zip(self.summary["scenario"], self.summary["AUES"]))

    @property
    def mu95(self) -> dict[str, tuple[float, bool]]:
        """``{method: (MU95, reached)}``."""
        return {s: (v, bool(r)) for s, v, r in zip(self.summary["scenario"], self.summary["MU95"], self.summary["MU95_reached"])}

    def ends(self) -> pd.DataFrame:
        """FS, RS, MU and FQ of θ_before (α = 0) and of each θ_after (α = 1)."""
        rows = []
        for method, g in self.per_alpha.groupby("scenario", sort=False):
            g = g.sort_values("alpha")
            for which, row in (("before", g.iloc[0]), ("after", g.iloc[-1])):
                rows.append({"method": method, "model": which, "alpha": row["alpha"], **{k: row[k] for k in ENDS}})
        return pd.DataFrame(rows)


def _label_all(after: Sequence, labels: Sequence[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(after) or len(set(labels)) != len(labels):
            raise ValueError(f"labels: one distinct name per after checkpoint ({len(after)}), got {list(labels)}")
        return list(labels)
    names = [checkpoint_name(a) for a in after]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


def _tokenizer(spec, trust_remote_code: bool = False):
    """θ_before's tokenizer without its model (θr is evaluated in θ_before's prompt format before θ_before is loaded)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(local_folder(spec)), trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _free_device() -> None:
    """After the last reference to a loaded model is dropped: collect its reference cycles and give the
    device's cached blocks back."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def retain_truth_ratios(retain_model, tokenizer, data: UnlearningData, eval_config: EvalConfig, *, device: str,
                        dtype: str, trust_remote_code: bool = False) -> np.ndarray:
    """θr's :func:`~workbench.experiments.reference.reference_truth_ratios`, in ``eval_config``'s prompt
    format. A θr loaded here leaves the device before this returns."""
    model, _ = load_model(retain_model, device=device, dtype=dtype, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    reference = reference_truth_ratios(model, tokenizer, data, eval_config)
    loaded = model is not retain_model
    del model
    if loaded:
        _free_device()
    return reference


def evaluate_pair(before, after, data: UnlearningData, *, retain_model=None, alphas: Sequence[float] = ALPHAS,
                  eval_config: EvalConfig = EvalConfig(), labels: Sequence[str] | None = None, tokenizer=None,
                  device: str = "auto", dtype: str = "float32", trust_remote_code: bool = False,
                  progress: bool = True) -> PairResult:
    """Mixing sweeps from ``before`` to each ``after``; see the module docstring.

    Returns a :class:`PairResult`; :func:`workbench.viz.compare.save_pair` writes it into a run folder.
    """
    evaluate_fits(before, data, eval_config, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    afters = list(after) if isinstance(after, (list, tuple)) else [after]
    if not afters:
        raise ValueError("after: give at least one unlearned checkpoint")
    names = _label_all(afters, labels)
    if problems := [p for a in afters if (p := adapter_base_problem(a, before))]:
        raise ValueError("; ".join(problems))
    notes = {}
    reference = None
    if retain_model:  # θr first, released before θ_before arrives: one model on the device
        tokenizer = tokenizer or (None if isinstance(before, nn.Module) else _tokenizer(before, trust_remote_code))
        reference = retain_truth_ratios(retain_model, tokenizer, data, eval_config, device=device, dtype=dtype,
                                        trust_remote_code=trust_remote_code)
    else:
        notes["FQ"] = notes["MU95"] = NO_FQ
    model, tok = load_model(before, device=device, dtype=dtype, tokenizer=tokenizer, trust_remote_code=trust_remote_code)
    evaluator = Evaluator(tok, data, eval_config, reference_forget_tr=reference)
    # below fp32 the mixer computes the changed modules in fp32 even at α = 0: each sweep evaluates its own
    first = evaluator.evaluate(model) if next(model.parameters()).dtype == torch.float32 else None
    before_state = folder_tensors(local_folder(before)) if isinstance(before, (str, Path)) else None
    start = "θ_before" if isinstance(before, nn.Module) else checkpoint_name(before)
    per_alpha, per_example = [], []
    for seed, (name, spec) in enumerate(zip(names, afters)):
        mixer = StateMixer(model, after_tensors(spec, model, before_spec=before), before=before_state)
        pa, pe = mixing_sweep(model, mixer, evaluator, alphas, progress=progress, first=first)
        tags = {"notebook": NOTEBOOK, "objective": OBJECTIVE, "start": start, "scenario": name, "seed": seed}
        per_alpha.append(pd.concat([pd.DataFrame([tags] * len(pa)), pa], axis=1))
        per_example.append(pe.assign(scenario=name))
    per_alpha = pd.concat(per_alpha, ignore_index=True)
    summary = summarise(per_alpha)
    if reference is None:
        summary["MU95"] = math.nan
    settings = {"before": str(start), "after": [str(a) if not isinstance(a, nn.Module) else n for a, n in zip(afters, names)],
                "retain_model": None if retain_model is None else str(retain_model), "dtype": str(next(model.parameters()).dtype),
                "eval_config": eval_config.__dict__}
    return PairResult(per_alpha, pd.concat(per_example, ignore_index=True), summary, notes, settings)


# -- from a notebook's parameters -------------------------------------------------------------------
def evaluate_checkpoints(cfg) -> PairResult:
    """:func:`evaluate_pair` with a notebook config (:mod:`workbench.runs.evaluate_config`)."""
    import numpy as np

    if not cfg.before or not cfg.after:
        raise ValueError("set 'before' (the model before unlearning) and 'after' (a list of unlearned checkpoints), "
                         "e.g. python -m workbench evaluate --before <folder or hub id> --after <folder or hub id>")
    eval_config = EvalConfig(batch_size=cfg.eval_batch_size, generate=cfg.eval_generate, max_new_tokens=cfg.eval_max_new_tokens,
                             es_floor=cfg.es_floor, prompt_format=cfg.prompt_format, use_chat_template=cfg.use_chat_template)
    alphas = tuple(float(a) for a in np.round(np.linspace(0, 1, cfg.n_alpha), 6))
    return evaluate_pair(cfg.before, list(cfg.after), config_data(cfg), retain_model=cfg.retain_model or None,
                         alphas=alphas, eval_config=eval_config, labels=list(cfg.labels) or None, device=cfg.device,
                         dtype=cfg.dtype, trust_remote_code=cfg.trust_remote_code)
