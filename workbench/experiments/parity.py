"""Parity with open-unlearning (OU), the framework most published TOFU numbers come from.

``shared/reference/ou-parity/`` holds a small LLaMA and OU's own TOFU evaluation of it, per example
(its README says how it was produced). :func:`run` evaluates that model with
``EvalConfig(prompt_format="open-unlearning", es_floor=True)`` (OU's tokenisation, its ES floor,
greedy generation of at most 200 tokens) and pairs every per-example number the two share with
OU's. Naming differs: OU's ``forget_truth_ratio`` is the mean of min(TR, 1/TR), the workbench's
truth-ratio *closeness*; OU's ``forget_quality`` is the KS p-value, the workbench's FQ its log10.
Aggregates on OU's side are recomputed from its per-example values (on the rows evaluated), and
:func:`run` checks that on all rows they equal OU's own ``agg_value``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import metrics as m
from workbench.data import subsample
from workbench.data.tofu import load_tofu
from workbench.evaluation import EvalConfig, Evaluator
from workbench.models import load_model

OU_CONFIG = EvalConfig(batch_size=32, max_new_tokens=200, es_floor=True, prompt_format="open-unlearning",
                       use_chat_template=False)
PREFIX = {"forget": "forget", "retain_eval": "retain", "real_authors": "ra", "world_facts": "wf"}
# our column -> (OU metric of the split, field); None: the split has no such OU metric
COLUMNS = {
    "prob": ("{p}_Q_A_Prob", "prob"),
    "prob_norm": ("{p}_Q_A_Prob_normalised", "prob"),
    "truth_ratio": ("{p}_Truth_Ratio", "score"),
    "rougeL_recall": ("{p}_Q_A_ROUGE", "rougeL_recall"),
    "es": ("extraction_strength", "score"),
}
OU_NAMES = {"forget_Truth_Ratio": "forget_truth_ratio"}


@dataclass
class Report:
    """Per-example pairs (``pairs``: split, column, index, ours, theirs), aggregates and generations."""

    pairs: pd.DataFrame
    aggregates: pd.DataFrame
    generations_total: int = 0
    generations_equal: int = 0
    generation_differences: list[str] = field(default_factory=list)
    seconds: float = math.nan


def ou_metric(split: str, column: str) -> str | None:
    name, _ = COLUMNS[column]
    if column == "es":
        return name if split == "forget" else None
    if column == "prob_norm" and split not in ("real_authors", "world_facts"):
        return None
    name = name.format(p=PREFIX[split])
    return OU_NAMES.get(name, name)


def run(reference: str | Path, tofu: str | Path, *, rows: int | None = None, seed: int = 0) -> Report:
    reference = Path(reference)
    ou = json.loads((reference / "ou_eval.json").read_text())
    as_retain = json.loads((reference / "ou_eval_as_retain.json").read_text())
    data, index = subsample(load_tofu(tofu, forget_split="forget10"), rows, seed)
    model, tok = load_model(reference / "model", device="cpu", dtype="float32")
    ref_tr = _values(as_retain, "forget_truth_ratio", "score", index["forget"])
    start = time.perf_counter()
    result = Evaluator(tok, data, OU_CONFIG, reference_forget_tr=ref_tr).evaluate(model)
    seconds = time.perf_counter() - start
    pairs = _pairs(result.per_example, ou, index)
    report = Report(pairs, _aggregates(result.summary, pairs, ou, ref_tr, full=rows is None), seconds=seconds)
    _compare_generations(report, result.per_example, ou, index)
    return report


def _values(ou: dict, metric: str, key: str, rows: list[int]) -> np.ndarray:
    by_index = ou[metric]["value_by_index"]
    return np.array([by_index[str(i)][key] for i in rows], dtype=float)


def _pairs(per_example: pd.DataFrame, ou: dict, index: dict[str, list[int]]) -> pd.DataFrame:
    frames = []
    for split, g in per_example.groupby("split", sort=False):
        original = [index[split][i] for i in g["index"]]
        for column in COLUMNS:
            metric = ou_metric(split, column)
            if metric is None:
                continue
            _, key = COLUMNS[column]
            frames.append(pd.DataFrame({"split": split, "column": column, "metric": metric, "index": original,
                                        "ours": g[column].to_numpy(dtype=float),
                                        "theirs": _values(ou, metric, key, original)}))
    return pd.concat(frames, ignore_index=True)


def _ou_closeness(tr: np.ndarray) -> float:
    return float(np.mean(np.minimum(tr, 1 / (tr + 1e-10))))  # OU's closer_to_1_better, with its guard


def _aggregates(summary: dict, pairs: pd.DataFrame, ou: dict, ref_tr: np.ndarray, *, full: bool) -> pd.DataFrame:
    """Aggregates of the two sides; OU's recomputed from its per-example values on the rows evaluated."""
    theirs = {metric: float(np.mean(g["theirs"])) for metric, g in pairs.groupby("metric")}
    forget_tr = pairs[pairs.metric == "forget_truth_ratio"]["theirs"].to_numpy()
    theirs["forget_truth_ratio"] = _ou_closeness(forget_tr)
    for p in ("retain", "ra", "wf"):
        theirs[f"{p}_Truth_Ratio"] = float(np.mean(np.maximum(0, 1 - pairs[pairs.metric == f"{p}_Truth_Ratio"]["theirs"])))
    components = ["retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE",
                  "ra_Truth_Ratio", "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"]
    theirs["model_utility"] = m.model_utility({c: theirs[c] for c in components})
    from scipy.stats import ks_2samp

    theirs["forget_quality"] = float(np.log10(ks_2samp(1 / (forget_tr + 1e-10), 1 / (ref_tr + 1e-10)).pvalue))
    if full:  # recomputation = OU's own numbers (they are what the table shows)
        for metric in theirs:
            own = ou[metric]["agg_value"]
            own = math.log10(own) if metric == "forget_quality" else own
            assert math.isclose(theirs[metric], own, rel_tol=1e-9, abs_tol=1e-12), (metric, theirs[metric], own)
    ours = {"forget_Q_A_Prob": "forget_prob", "forget_truth_ratio": "forget_tr_closeness", "forget_Q_A_ROUGE": "forget_rougeL",
            "extraction_strength": "forget_es", "forget_quality": "FQ", "model_utility": "MU",
            "retain_Q_A_Prob": "retain_eval_prob", "retain_Truth_Ratio": "retain_eval_tr_score",
            "retain_Q_A_ROUGE": "retain_eval_rougeL"}
    for p, split in (("ra", "real_authors"), ("wf", "world_facts")):
        ours |= {f"{p}_Q_A_Prob": f"{split}_prob", f"{p}_Q_A_Prob_normalised": f"{split}_prob_norm",
                 f"{p}_Truth_Ratio": f"{split}_tr_score", f"{p}_Q_A_ROUGE": f"{split}_rougeL"}
    rows = [{"metric": k, "ours_key": v, "ours": float(summary[v]), "theirs": theirs[k]} for k, v in ours.items()]
    out = pd.DataFrame(rows)
    out["difference"] = out["ours"] - out["theirs"]
    worst = pairs.assign(d=(pairs.ours - pairs.theirs).abs()).groupby("metric")["d"].max()
    out["max_example_difference"] = out["metric"].map(worst)
    return out


def _compare_generations(report: Report, per_example: pd.DataFrame, ou: dict, index: dict[str, list[int]]) -> None:
    for split, g in per_example.groupby("split", sort=False):
        by_index = ou[f"{PREFIX[split]}_Q_A_ROUGE"]["value_by_index"]
        for i, text in zip(g["index"], g["generation"]):
            theirs = by_index[str(index[split][i])]["generation"]
            report.generations_total += 1
            if text == theirs:
                report.generations_equal += 1
            else:
                report.generation_differences.append(
                    f"{split} row {index[split][i]}: ours {text[:80]!r} | theirs {theirs[:80]!r}")


REASONS = {
    "forget_quality": "log10 of OU's KS p (OU's reference: ou_eval_as_retain.json); KS is rank-based, so "
                      "OU's 1/(TR+1e-10) transform changes nothing",
    "forget_truth_ratio": "OU's name for mean min(TR, 1/TR) (the workbench's tr_closeness); OU adds 1e-10 guards",
    "extraction_strength": "OU's loop floors ES at 1/|y|: the workbench's es_floor=True",
    "model_utility": "harmonic mean of the same nine components",
}


def table_markdown(report: Report) -> str:
    """The parity table: metric, ours, theirs, difference, largest per-example difference, reason."""
    lines = ["| metric (OU name) | ours | theirs | difference | max per-example |diff| | reason |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for r in report.aggregates.itertuples():
        reason = REASONS.get(r.metric, "same definition; float32 batching/padding differences only")
        worst = "—" if pd.isna(r.max_example_difference) else f"{r.max_example_difference:.1e}"
        lines.append(f"| {r.metric} (ours: {r.ours_key}) | {r.ours:.6f} | {r.theirs:.6f} | {r.difference:+.1e} | {worst} "
                     f"| {reason} |")
    return "\n".join(lines)
