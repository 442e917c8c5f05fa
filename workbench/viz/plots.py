"""Figures of mixing sweeps that answer the paper's question: does the Oracle (or a localizer's)
region unlearn better than a Random one? (plotly figures, never shown here)

A sweep evaluates ``θ(α) = (1−α)·θ_before + α·θ_after`` at α = 0 … 1 and gives one point per α.
Lee et al. (2025) read it on two planes:

* **FS–RS** — Retain Strength against Forget Strength. A good unlearning run moves right (forgets)
  while staying high (keeps retain knowledge); AUES is the area under this curve, extended flat to
  FS = 0 and FS = 1.
* **MU–FQ** — Model Utility against Forget Quality (log10 KS p). MU95 is FQ where MU falls to 95%
  of MU(θ_before) (the dashed line); a sweep whose MU never gets there is marked "not reached",
  and its MU95 is FQ at α = 1.

Both figures are **small multiples**: one panel per objective (or, when several localizers are
compared with Random, per localizer), on shared axes. Every scenario has one colour in every
figure (:func:`style`: Oracle vermillion, Random grey, each localizer the colour its class
declares). Each sweep is a thin line and the mean over a scenario's sweeps a bold one; the shaded
area is :func:`workbench.curves.aues_outline` of that mean curve, and the numbers written on the
panel are the mean ± std of :func:`workbench.curves.aues` / ``mu95_with_flag`` over the sweeps.

Every function takes the tidy per-α table (:data:`workbench.runs.rundir.PER_ALPHA_COLUMNS`).
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import hex_to_rgb, qualitative
from plotly.subplots import make_subplots

from workbench.curves import aues, aues_outline, mu95_with_flag
from workbench.experiments.controlled import ORACLE, RANDOM
from workbench.experiments.revisit import RANDOM_WEIGHTS
from workbench.experiments.tables import baseline_of
from workbench.localizers import LOCALIZERS
from workbench.runs.rundir import sweep_keys, with_start

FIXED_STYLES = {ORACLE: ("Oracle", "#D55E00"), RANDOM_WEIGHTS: ("Random (weights)", "#222222")}
FALLBACK = qualitative.Dark24
BASELINES = (RANDOM, RANDOM_WEIGHTS)
PANEL_WIDTH, PANEL_HEIGHT, MAX_COLUMNS = 290, 300, 4  # four panels side by side fit a 1366-pixel laptop screen
MIN_WIDTH = 660  # one panel: room for a two-column legend
THIN, BOLD = 1.0, 3.5
TARGET_COLOR = "#888888"
MARK_NAMES = {True: "MU95: where MU crossed the dashed line (filled)",
              False: "MU95 not reached: FQ at α = 1 (open)"}
MARK_SYMBOLS = {True: "circle", False: "circle-open"}


def style(scenario: str) -> tuple[str, str]:
    """``(title, colour)`` of a scenario, the same in every figure and the explorer."""
    if scenario in FIXED_STYLES:
        return FIXED_STYLES[scenario]
    cls = LOCALIZERS.get(scenario)
    fallback = FALLBACK[zlib.crc32(scenario.encode()) % len(FALLBACK)]  # stable across runs and processes
    return ((cls.title or scenario), (cls.color or fallback)) if cls else (scenario, fallback)


def natural_key(value) -> list:
    """Sort key that puts "θo seed 7" before "θo seed 19"."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(value))]


def translucent(color: str, alpha: float = 0.1) -> str:
    """``#rrggbb`` → ``rgba(r, g, b, alpha)``: an area must not hide the curves drawn over it."""
    r, g, b = hex_to_rgb(color)
    return f"rgba({r}, {g}, {b}, {alpha})"


def hover(rows: pd.DataFrame) -> list[str]:
    return [f"α={a:.2f}<br>FS={fs:.3f} RS={rs:.3f}<br>MU={mu:.3f} FQ={fq:.2f}"
            for a, fs, rs, mu, fq in rows[["alpha", "FS", "RS", "MU", "FQ"]].itertuples(index=False)]


def mu_threshold(rows: pd.DataFrame, threshold: float = 0.95) -> float:
    """``threshold · MU(α = 0)`` of one curve."""
    return float(threshold * rows.loc[rows["alpha"].idxmin(), "MU"])


# -- panels ---------------------------------------------------------------------------------------
@dataclass
class Panel:
    """One small multiple: a compared scenario and its Random baseline, for one objective."""

    title: str
    scenarios: tuple[str, str]
    rows: pd.DataFrame

    def sweeps(self, scenario: str) -> list[tuple[tuple, pd.DataFrame]]:
        """``(key, rows sorted by α)`` of each sweep of ``scenario`` (runs kept apart)."""
        rows = self.rows[self.rows.scenario == scenario]
        return [(k, g.sort_values("alpha")) for k, g in rows.groupby(sweep_keys(rows), sort=True)]

    def mean_curve(self, scenario: str) -> pd.DataFrame:
        """The scenario's mean over its sweeps at each α (the bold curve)."""
        rows = self.rows[self.rows.scenario == scenario]
        return rows.groupby("alpha", as_index=False)[["FS", "RS", "MU", "FQ"]].mean()


def panels(per_alpha: pd.DataFrame) -> list[Panel]:
    """One panel per objective and compared scenario (Oracle, or each localizer), with its baseline."""
    per_alpha = with_start(per_alpha)
    present = sorted(per_alpha.scenario.unique())
    compared = [s for s in present if s not in BASELINES] or present
    out = []
    for objective, g in per_alpha.groupby("objective", sort=True):
        for a in (s for s in compared if s in set(g.scenario)):
            b = baseline_of(a)
            title = objective if len(compared) == 1 else f"{objective} · {style(a)[0]} vs {style(b)[0]}"
            out.append(Panel(title, (a, b), g[g.scenario.isin([a, b])]))
    return out


def grid(items: list[Panel], x_title: str, y_title: str, title: str | None) -> go.Figure:
    """Small multiples on shared axes, at most :data:`MAX_COLUMNS` per row, a fixed height per row."""
    cols = max(1, min(len(items), MAX_COLUMNS))
    rows = max(1, math.ceil(len(items) / cols))
    fig = make_subplots(rows=rows, cols=cols, shared_xaxes="all", shared_yaxes="all", horizontal_spacing=0.03,
                        vertical_spacing=0.14, subplot_titles=[p.title for p in items] or None)
    fig.update_layout(title=title, template="plotly_white", height=PANEL_HEIGHT * rows + 190,
                      width=max(MIN_WIDTH, PANEL_WIDTH * cols + 140), margin=dict(l=60, r=20, t=80, b=130),
                      legend=dict(orientation="h", x=0, y=-0.22 / rows, yanchor="top", font=dict(size=11)))
    fig.update_xaxes(title_text=x_title, row=rows)
    fig.update_yaxes(title_text=y_title, col=1)
    return fig


def sweep_name(key: tuple) -> str:
    """``"θo seed 7 · seed 7001"`` from a :func:`~workbench.runs.rundir.sweep_keys` key (…, start, scenario, seed)."""
    return f"{key[-3]} · seed {key[-1]}"


def _cell(i: int) -> dict:
    return {"row": i // MAX_COLUMNS + 1, "col": i % MAX_COLUMNS + 1}


def legend_once(fig: go.Figure, name: str) -> bool:
    """Whether a trace named ``name`` is the first of its name in ``fig`` to show a legend entry."""
    return name not in {t.name for t in fig.data if t.showlegend is not False}


def _curves(fig: go.Figure, panel: Panel, scenario: str, x: str, y: str, cell: dict, *, area: bool) -> None:
    title, color = style(scenario)
    sweeps = panel.sweeps(scenario)
    for key, rows in sweeps:
        fig.add_trace(go.Scatter(x=rows[x], y=rows[y], mode="lines", line=dict(color=color, width=THIN),
                                 opacity=0.55, name=f"{title} · {sweep_name(key)}", legendgroup=title,
                                 showlegend=False, hovertext=hover(rows), hoverinfo="text+name"), **cell)
    mean = panel.mean_curve(scenario)
    if area:
        ox, oy = aues_outline(mean[x].to_numpy(), mean[y].to_numpy())
        fig.add_trace(go.Scatter(x=ox, y=oy, mode="lines", fill="tozeroy", line=dict(width=0, color=color),
                                 fillcolor=translucent(color), hoverinfo="skip", showlegend=False,
                                 name=f"AUES area · {title}", legendgroup=title), **cell)
    name = f"{title} (thin: each sweep, bold: their mean)"
    fig.add_trace(go.Scatter(x=mean[x], y=mean[y], mode="lines", line=dict(color=color, width=BOLD), name=name,
                             legendgroup=title, showlegend=legend_once(fig, name),
                             hovertext=hover(mean), hoverinfo="text+name"), **cell)


def _note(fig: go.Figure, cell: dict, lines: list[str]) -> None:
    fig.add_annotation(text="<br>".join(lines), x=0.02, y=0.03, xref="x domain", yref="y domain", xanchor="left",
                       yanchor="bottom", showarrow=False, align="left", font=dict(size=11),
                       bgcolor="rgba(255,255,255,0.8)", **cell)


def _pm(values: list[float]) -> str:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "–"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def fs_rs_figure(per_alpha: pd.DataFrame, *, title: str | None = "RS vs FS") -> go.Figure:
    """RS against FS, one panel per objective: thin sweeps, bold means, AUES of each scenario."""
    items = panels(per_alpha)
    fig = grid(items, "Forget Strength (FS)", "Retain Strength (RS)", title)
    for i, panel in enumerate(items):
        lines = ["<b>AUES</b> (mean ± std over sweeps)"]
        for scenario in panel.scenarios:
            _curves(fig, panel, scenario, "FS", "RS", _cell(i), area=True)
            values = [aues(rows.FS, rows.RS) for _, rows in panel.sweeps(scenario)]
            name, color = style(scenario)
            lines.append(f"<span style='color:{color}'>{escape(name)} {_pm(values)} (n={len(values)})</span>")
        _note(fig, _cell(i), lines)
    fig.update_xaxes(range=[0, 1.02])
    fig.update_yaxes(range=[0, 1.05])
    return fig


def mu95_marks(panel: Panel, scenario: str, threshold: float = 0.95) -> pd.DataFrame:
    """Where each sweep's MU95 is read: the crossing ``(MU95, target)``, or, when MU never falls to
    the target, the sweep's end ``(FQ, MU)`` at α = 1 (``reached`` False)."""
    rows = []
    for key, g in panel.sweeps(scenario):
        mu_before = float(g.MU.iloc[0])
        value, reached = mu95_with_flag(g.MU, g.FQ, mu_before, threshold)
        end = g.iloc[-1]
        rows.append({"key": sweep_name(key), "MU95": value, "reached": reached,
                     "x": value if reached else end.FQ, "y": threshold * mu_before if reached else end.MU,
                     "target": threshold * mu_before})
    return pd.DataFrame(rows)


def _marks(fig: go.Figure, marks: pd.DataFrame, scenario: str, cell: dict) -> None:
    title, color = style(scenario)
    for reached, group in marks.groupby("reached"):
        name = MARK_NAMES[bool(reached)]
        fig.add_trace(go.Scatter(x=group.x, y=group.y, mode="markers", name=name, legendgroup=name, showlegend=False,
                                 marker=dict(symbol=MARK_SYMBOLS[bool(reached)], size=10, color=color,
                                             line=dict(width=2, color=color)),
                                 hovertext=[f"{title} · {k}<br>MU95 = {v:.2f}" + ("" if reached else " (not reached)")
                                            for k, v in zip(group.key, group.MU95)], hoverinfo="text"), **cell)


def mu_fq_figure(per_alpha: pd.DataFrame, *, threshold: float = 0.95, title: str | None = "MU vs FQ") -> go.Figure:
    """MU against FQ, one panel per objective: thin sweeps, bold means, each sweep's MU95 marked
    (filled where MU crossed the dashed 95% line, open at α = 1 where it never did)."""
    items = panels(per_alpha)
    fig = grid(items, "Forget Quality (log10 KS p)", "Model Utility (MU)", title)
    for i, panel in enumerate(items):
        lines = ["<b>MU95</b> (mean ± std; sweeps that reached 95%)"]
        for scenario in panel.scenarios:
            _curves(fig, panel, scenario, "FQ", "MU", _cell(i), area=False)
            marks = mu95_marks(panel, scenario, threshold)
            _marks(fig, marks, scenario, _cell(i))
            name, color = style(scenario)
            reached = f"{int(marks.reached.sum())}/{len(marks)} reached" + ("" if marks.reached.any() else ": FQ at α = 1")
            lines.append(f"<span style='color:{color}'>{escape(name)} {_pm(marks.MU95.tolist())} ({reached})</span>")
        for target in sorted({round(v, 6) for v in mu95_marks(panel, panel.scenarios[0], threshold).target}):
            # after the curves: plotly skips lines on subplots that hold no trace yet
            fig.add_hline(y=target, line=dict(color=TARGET_COLOR, dash="dash", width=1), **_cell(i))
        _note(fig, _cell(i), lines)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=dict(color=TARGET_COLOR, dash="dash", width=1),
                             name=f"dashed: {threshold:.0%} of MU before unlearning (one per start model)"))
    for reached in (True, False):  # legend entries in neutral grey: the markers take each scenario's colour
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=MARK_NAMES[reached], legendgroup=MARK_NAMES[reached],
                                 marker=dict(symbol=MARK_SYMBOLS[reached], size=10, color=TARGET_COLOR,
                                             line=dict(width=2, color=TARGET_COLOR))))
    return fig


def results_report_html(title: str, figures: Mapping[str, go.Figure],
                        tables: Mapping[str, pd.DataFrame] | None = None, *, plotlyjs: bool | str = True) -> str:
    """One standalone offline page: plotly.js inlined once, then each figure (under its name) and table.
    Every HTML file the workbench writes with figures comes from here. ``plotlyjs`` is ``True``
    (inline, about 5 MB) or the path of a shared ``plotly.min.js`` next to the page."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:2em;max-width:1400px} table{border-collapse:collapse}"
             " td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>",
             f"<h1>{escape(title)}</h1>"]
    for i, (name, fig) in enumerate(figures.items()):
        heading = [] if name == fig.layout.title.text else [f"<h2>{escape(name)}</h2>"]  # the figure shows its title
        parts += heading + [fig.to_html(full_html=False, include_plotlyjs=plotlyjs if i == 0 else False)]
    for name, df in (tables or {}).items():
        parts += [f"<h2>{escape(name)}</h2>", df.to_html(index=False, float_format=lambda v: f"{v:.4g}")]
    return "\n".join(parts + ["</body></html>"])
