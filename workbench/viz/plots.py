"""Figures of a mixing sweep: FS–RS and MU–FQ curves (plotly figures, never shown here).

A sweep evaluates ``θ(α) = (1−α)·θ_before + α·θ_after`` at α = 0 … 1 and gives one point per α.
Lee et al. (2025) read it on two planes:

* **FS–RS** — Retain Strength against Forget Strength. A good unlearning run moves right (forgets)
  while staying high (keeps retain knowledge); AUES is the area under this curve, extended flat to
  FS = 0 and FS = 1 (the shaded area drawn here; the number itself comes from
  :mod:`workbench.curves`).
* **MU–FQ** — Model Utility against Forget Quality (log10 KS p-value). MU95 is FQ where MU crosses
  95% of MU(α = 0), the dashed threshold line.

Every function takes the tidy per-α table (``notebook, objective, scenario, seed, alpha, FS, RS,
MU, FQ``; see :data:`workbench.runs.PER_ALPHA_COLUMNS`) and draws one curve per
(objective, scenario, seed) group. They return ``plotly.graph_objects.Figure`` and never call
``.show()``: notebooks show them, :mod:`workbench.viz.widgets` wraps them, runs save them as HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative

from workbench.curves import aues_outline
from workbench.runs.rundir import GROUP

PALETTE = qualitative.Plotly


def groups(per_alpha: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """``((objective, scenario, seed), rows sorted by α)`` for each curve, in a stable order."""
    return [(key, df.sort_values("alpha")) for key, df in per_alpha.groupby(GROUP, sort=True)]


def label(key: tuple) -> str:
    objective, scenario, seed = key
    return f"{objective} · {scenario} · seed {seed}"


def mu_threshold(rows: pd.DataFrame, threshold: float = 0.95) -> float:
    """``threshold · MU(α = 0)`` of one curve."""
    return float(threshold * rows.loc[rows["alpha"].idxmin(), "MU"])


def translucent(color: str, alpha: float = 0.15) -> str:
    """``#rrggbb`` → ``rgba(r, g, b, alpha)``: the area must not hide the curves drawn over it."""
    r, g, b = hex_to_rgb(color)
    return f"rgba({r}, {g}, {b}, {alpha})"


def _hover(rows: pd.DataFrame) -> list[str]:
    return [f"α={a:.2f}<br>FS={fs:.3f} RS={rs:.3f}<br>MU={mu:.3f} FQ={fq:.2f}"
            for a, fs, rs, mu, fq in rows[["alpha", "FS", "RS", "MU", "FQ"]].itertuples(index=False)]


# -- traces (shared with the widgets) -------------------------------------------------------------
def fs_rs_traces(rows: pd.DataFrame, name: str, color: str, *, area: bool = False, width: float = 2) -> list[go.Scatter]:
    traces = []
    if area:
        x, y = aues_outline(rows["FS"].to_numpy(), rows["RS"].to_numpy())
        traces.append(go.Scatter(x=x, y=y, mode="lines", fill="tozeroy", line=dict(width=0, color=color),
                                 fillcolor=translucent(color), name=f"AUES area · {name}", hoverinfo="skip", legendgroup=name,
                                 showlegend=False))
    traces.append(go.Scatter(x=rows["FS"], y=rows["RS"], mode="lines+markers", name=name, legendgroup=name,
                             line=dict(color=color, width=width), marker=dict(size=4),
                             hovertext=_hover(rows), hoverinfo="text+name"))
    return traces


def mu_fq_traces(rows: pd.DataFrame, name: str, color: str, *, threshold: float | None = 0.95,
                 width: float = 2) -> list[go.Scatter]:
    traces = [go.Scatter(x=rows["FQ"], y=rows["MU"], mode="lines+markers", name=name, legendgroup=name,
                         line=dict(color=color, width=width), marker=dict(size=4),
                         hovertext=_hover(rows), hoverinfo="text+name")]
    if threshold is not None:
        level = mu_threshold(rows, threshold)
        traces.append(go.Scatter(x=[rows["FQ"].min(), rows["FQ"].max()], y=[level, level], mode="lines",
                                 line=dict(color=color, dash="dash", width=1), name=f"MU95 line · {name}",
                                 legendgroup=name, showlegend=False, hoverinfo="name"))
    return traces


def _layout(fig: go.Figure, title: str | None, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title=x, yaxis_title=y, template="plotly_white",
                      legend=dict(font=dict(size=10)), margin=dict(l=50, r=20, t=50, b=40))
    return fig


# -- figures ----------------------------------------------------------------------------------------
def fs_rs_figure(per_alpha: pd.DataFrame, *, area: bool = False, title: str | None = "RS vs FS") -> go.Figure:
    """One RS(FS) curve per group; ``area`` shades each curve's AUES area."""
    fig = go.Figure()
    for i, (key, rows) in enumerate(groups(per_alpha)):
        fig.add_traces(fs_rs_traces(rows, label(key), PALETTE[i % len(PALETTE)], area=area))
    fig.update_xaxes(range=[0, 1.02])
    return _layout(fig, title, "Forget Strength (FS)", "Retain Strength (RS)")


def mu_fq_figure(per_alpha: pd.DataFrame, *, threshold: float | None = 0.95,
                 title: str | None = "MU vs FQ") -> go.Figure:
    """One MU(FQ) curve per group with its MU95 threshold line (``threshold=None`` hides it)."""
    fig = go.Figure()
    for i, (key, rows) in enumerate(groups(per_alpha)):
        fig.add_traces(mu_fq_traces(rows, label(key), PALETTE[i % len(PALETTE)], threshold=threshold))
    return _layout(fig, title, "Forget Quality (log10 KS p)", "Model Utility (MU)")


def results_report_html(title: str, figures: Mapping[str, go.Figure],
                        tables: Mapping[str, pd.DataFrame] | None = None, *, plotlyjs: bool | str = True) -> str:
    """One standalone offline page: plotly.js inlined once, then each figure (under its name) and table.
    Every HTML file the workbench writes with figures comes from here. ``plotlyjs`` is ``True``
    (inline, about 5 MB) or the path of a shared ``plotly.min.js`` next to the page."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em} table{border-collapse:collapse}"
             " td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>",
             f"<h1>{escape(title)}</h1>"]
    for i, (name, fig) in enumerate(figures.items()):
        parts += [f"<h2>{escape(name)}</h2>", fig.to_html(full_html=False, include_plotlyjs=plotlyjs if i == 0 else False)]
    for name, df in (tables or {}).items():
        parts += [f"<h2>{escape(name)}</h2>", df.to_html(index=False, float_format=lambda v: f"{v:.4g}")]
    return "\n".join(parts + ["</body></html>"])
