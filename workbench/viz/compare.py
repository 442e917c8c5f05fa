"""Figures and run-folder output of :func:`workbench.experiments.pair.evaluate_pair`.

Several unlearned models of one base model are compared on the paper's two planes, one curve per
method in one figure: RS against FS (the legend gives each method's AUES, its area shaded) and,
where Forget Quality is defined (a retain model was given), MU against FQ with each method's MU95
marked (filled where MU fell to 95% of MU(θ_before), the dashed line; open at α = 1 where it never
did). Methods take the Okabe–Ito colours in the order given (distinct for up to eight methods; the
name-hashed colours of :func:`workbench.viz.plots.style` can coincide for two arbitrary names).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from workbench.curves import aues_outline
from workbench.experiments.pair import PairResult
from workbench.runs.rundir import RunDir
from workbench.viz import plots

WIDTH, HEIGHT = 640, 480
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", width=WIDTH, height=HEIGHT, xaxis_title=x, yaxis_title=y,
                      legend=dict(orientation="h", x=0, y=-0.18, yanchor="top"), margin=dict(l=60, r=20, t=60, b=120))
    return fig


def _methods(per_alpha: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """``(method, colour, rows in α order)`` in the order the methods were given."""
    groups = per_alpha.groupby("scenario", sort=False)
    return [(m, OKABE_ITO[i % len(OKABE_ITO)], g.sort_values("alpha")) for i, (m, g) in enumerate(groups)]


def fs_rs_figure(per_alpha: pd.DataFrame, summary: pd.DataFrame, *, title: str = "RS vs FS, one curve per method") -> go.Figure:
    fig = go.Figure()
    aues = dict(zip(summary["scenario"], summary["AUES"]))
    for method, color, g in _methods(per_alpha):
        x, y = aues_outline(g["FS"], g["RS"])
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines", line=dict(width=0), fill="tozeroy", showlegend=False,
                                 fillcolor=plots.translucent(color), hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=g["FS"], y=g["RS"], mode="lines+markers", name=f"{method} (AUES {aues[method]:.3f})",
                                 line=dict(color=color, width=2.5), hovertext=plots.hover(g), hoverinfo="text"))
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, 1.05])
    return _layout(fig, title, "Forget Strength (FS)", "Retain Strength (RS)")


def mu_fq_figure(per_alpha: pd.DataFrame, summary: pd.DataFrame, *, threshold: float = 0.95,
                 title: str = "MU vs FQ, one curve per method") -> go.Figure:
    fig = go.Figure()
    by_method = summary.set_index("scenario")
    for method, color, g in _methods(per_alpha):
        s = by_method.loc[method]
        reached = bool(s["MU95_reached"])
        label = f"{method} (MU95 {s['MU95']:.3g}{'' if reached else ', not reached: FQ at α = 1'})"
        fig.add_trace(go.Scatter(x=g["FQ"], y=g["MU"], mode="lines+markers", name=label, line=dict(color=color, width=2.5),
                                 hovertext=plots.hover(g), hoverinfo="text"))
        y = threshold * s["MU_before"] if reached else g["MU"].iloc[-1]
        fig.add_trace(go.Scatter(x=[s["MU95"]], y=[y], mode="markers", showlegend=False, hoverinfo="skip",
                                 marker=dict(symbol=plots.MARK_SYMBOLS[reached], size=12, color=color,
                                             line=dict(width=2, color=color))))
    target = threshold * float(np.nanmean(summary["MU_before"]))
    fig.add_hline(y=target, line=dict(color=plots.TARGET_COLOR, dash="dash", width=1))
    return _layout(fig, title + f" (dashed: {threshold:.0%} of MU before)", "Forget Quality (log10 KS p)", "Model Utility (MU)")


def checkpoint_figures(result: PairResult) -> list[go.Figure]:
    """FS–RS with one curve per method, and MU–FQ where FQ is defined (``result.notes`` says why
    it is not)."""
    figs = [fs_rs_figure(result.per_alpha, result.summary)]
    if result.per_alpha["FQ"].notna().any() and result.per_alpha["MU"].notna().any():
        figs.append(mu_fq_figure(result.per_alpha, result.summary))
    return figs


def save_pair(run: RunDir, result: PairResult) -> dict[str, Path]:
    """``per_alpha``, ``per_example``, ``summary`` and ``ends`` (CSV too), ``notes.json``, ``figures.html``."""
    paths = {"per_alpha": run.save_table(result.per_alpha, "per_alpha"),
             "per_example": run.save_table(result.per_example, "per_example"),
             "summary": run.save_table(result.summary, "summary", csv=True),
             "ends": run.save_table(result.ends(), "ends", csv=True),
             "notes": run.save_json({"notes": result.notes, "settings": result.settings}, "notes")}
    figures = {fig.layout.title.text: fig for fig in checkpoint_figures(result)}
    paths["figures"] = run.save_html(plots.results_report_html(run.path.name, figures, {"summary": result.summary}), "figures")
    return paths
