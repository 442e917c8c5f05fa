"""The headline figure of an experiment: is Oracle − Random larger than Random − Random?

One panel per summary number (ΔAUES, and ΔMU95 where MU is defined). Each point is one
Oracle–Random (or localizer–Random) pair of sweeps unlearned from the same model, at its signed
difference ``value(scenario) − value(Random)``. Behind the points, in grey, is what choosing a
*different random region* does on its own: the band spans ± the largest and (darker) ± the mean
``|Δ|`` between Random regions unlearned from one model. Points inside the band mean the region
the knowledge was put in made no more difference than which random region one drew; points
beyond it on one side mean it did. On the MU95 panel an open marker is a pair in which at least one
sweep never lost 5% of its utility (MU95 is then FQ at α = 1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.experiments.baseline import METRICS
from workbench.viz.plots import natural_key, style

BAND_MAX, BAND_MEAN = "rgba(150, 150, 150, 0.25)", "rgba(110, 110, 110, 0.35)"


def categories(tests: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    """``(label, objective, scenario, baseline)`` per x position: objectives, or objective · scenario
    when several scenarios are compared with Random (§3's localizers)."""
    keys = tests[["objective", "a", "b"]].drop_duplicates().sort_values(["objective", "a"])
    several = keys.a.nunique() > 1
    return [(f"{o} · {style(a)[0]}" if several else o, o, a, b) for o, a, b in keys.itertuples(index=False)]


def _band(fig: go.Figure, x: int, deltas: pd.Series, col: int) -> None:
    deltas = deltas.dropna()
    if deltas.empty:
        return
    for half, color, name in ((deltas.max(), BAND_MAX, "Random − Random: ± max |Δ|"),
                              (deltas.mean(), BAND_MEAN, "Random − Random: ± mean |Δ|")):
        shown = name not in {t.name for t in fig.data}
        fig.add_trace(go.Bar(x=[x], y=[2 * half], base=[-half], width=0.7, marker_color=color, name=name,
                             legendgroup=name, showlegend=shown, hovertext=f"{name}: {half:.3f} ({len(deltas)} pairs)",
                             hoverinfo="text"), row=1, col=col)


def _points(fig: go.Figure, x: int, t: pd.DataFrame, metric: str, col: int) -> None:
    t = t[t[f"d{metric}"].notna()]
    if t.empty:
        return
    title, color = style(t.a.iloc[0])
    starts = sorted(t.start.unique(), key=natural_key)
    offsets = np.linspace(-0.25, 0.25, len(starts)) if len(starts) > 1 else [0.0]
    where = {s: o for s, o in zip(starts, offsets)}
    delta = t[f"{metric}_a"] - t[f"{metric}_b"]
    flags = [f"{metric}_a_reached", f"{metric}_b_reached"]
    reached = t[flags].astype(bool).all(axis=1) if set(flags) <= set(t.columns) else pd.Series(True, index=t.index)
    name = f"{title} − {style(t.b.iloc[0])[0]}: one point per pair, side by side by start model"
    text = [f"{r.start}: seed {r.seed_a} vs {r.seed_b}<br>Δ = {d:+.3f}<br>p paper {r[f'p_{metric}']:.3g}, "
            f"p R–R {r[f'p_{metric}_rr']:.3g}" + ("" if ok else "<br>MU95 not reached in this pair")
            for (_, r), d, ok in zip(t.iterrows(), delta, reached)]
    fig.add_trace(go.Scatter(x=[x + where[s] for s in t.start], y=delta, mode="markers", name=name, legendgroup=name,
                             showlegend=name not in {tr.name for tr in fig.data}, hovertext=text, hoverinfo="text",
                             marker=dict(size=10, color=color, symbol=["circle" if ok else "circle-open" for ok in reached],
                                         line=dict(width=2, color=color))), row=1, col=col)


def headline_figure(tests: pd.DataFrame, random_pairs: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """ΔAUES and ΔMU95 of every pair against the Random–Random band (see the module docstring)."""
    metrics = [m for m in METRICS if f"d{m}" in tests and tests[f"d{m}"].notna().any()]
    cats = categories(tests)
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.08,
                        subplot_titles=[f"Δ{m}: scenario − Random, per pair" for m in metrics])
    for col, metric in enumerate(metrics, start=1):
        for x, (_, objective, a, b) in enumerate(cats):
            pairs = random_pairs[(random_pairs.objective == objective) & (random_pairs.scenario == b)]
            _band(fig, x, pairs[f"d{metric}"] if f"d{metric}" in pairs else pd.Series(dtype=float), col)
            _points(fig, x, tests[(tests.objective == objective) & (tests.a == a) & (tests.b == b)], metric, col)
        fig.add_hline(y=0, line=dict(color="#444", width=1), row=1, col=col)
        fig.update_xaxes(tickvals=list(range(len(cats))), ticktext=[c[0] for c in cats], range=[-0.6, len(cats) - 0.4],
                         row=1, col=col)
    # wide enough for the labels and the title (8 px a character at this size), never stretched
    width = max(len(metrics) * max(380, 110 * len(cats) + 160), 8 * len(title or "") + 100)
    fig.update_layout(title=title, template="plotly_white", barmode="overlay", height=420, width=min(width, 1300),
                      margin=dict(l=60, r=20, t=80, b=110), legend=dict(orientation="h", x=0, y=-0.15, yanchor="top",
                                                                   font=dict(size=11)))
    return fig
