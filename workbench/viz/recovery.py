"""Figure of the localizer-recovery experiment: AUROC against injection strength (plotly, never shown here).

x is how strongly the forget set was planted (θo's forget ES: 0 = not at all, 1 = every answer token
extracted), y the localizer's AUROC against ``V_tgt`` (0.5 = chance, the dotted line). One line per
localizer — and per model when a ``model`` column tells several runs apart — in the localizer's colour
(:func:`workbench.viz.plots.style`), dashed for the second model; one panel per region fraction.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.viz.plots import PANEL_HEIGHT, PANEL_WIDTH, legend_once, style

DASHES = ("solid", "dash", "dot", "dashdot")


def recovery_figure(table: pd.DataFrame, *, title: str = "When can a localizer find planted knowledge?") -> go.Figure:
    """``table``: :func:`workbench.experiments.recovery.localizer_recovery`'s rows (optionally with ``model``)."""
    table = table.copy()
    if "model" not in table:
        table["model"] = ""
    fractions = sorted(table["fraction"].unique())
    fig = make_subplots(rows=1, cols=len(fractions), shared_yaxes=True,
                        subplot_titles=[f"V_tgt = {p:.0%} of value vectors" for p in fractions])
    models = list(dict.fromkeys(table["model"]))
    for col, fraction in enumerate(fractions, start=1):
        panel = table[table["fraction"] == fraction]
        for (model, name), g in panel.groupby(["model", "localizer"], sort=True):
            mean = g.groupby("inject_epochs").agg(forget_es=("forget_es_o", "mean"), auroc=("auroc", "mean"),
                                                  precision=("precision", "mean"), n=("seed", "nunique"))
            mean = mean.sort_values("forget_es")
            label, colour = style(name)
            label = f"{label} · {model}" if model else label
            fig.add_trace(go.Scatter(
                x=mean["forget_es"], y=mean["auroc"], mode="lines+markers", name=label, legendgroup=label,
                showlegend=legend_once(fig, label), line={"color": colour, "dash": DASHES[models.index(model) % len(DASHES)]},
                customdata=mean.reset_index()[["inject_epochs", "precision", "n"]].to_numpy(),
                hovertemplate=("%{fullData.name}<br>injection %{customdata[0]} epochs: forget ES %{x:.3f}"
                               "<br>AUROC %{y:.3f}, precision %{customdata[1]:.3f} (mean of %{customdata[2]} seeds)"
                               "<extra></extra>")), row=1, col=col)
        fig.add_hline(y=0.5, line={"dash": "dot", "color": "#888888"}, row=1, col=col)
        fig.update_xaxes(title_text="θo forget ES (injection strength)", range=[0, 1.02], row=1, col=col)
    fig.update_yaxes(title_text="AUROC against V_tgt (0.5 = chance)", range=[0.3, 1.02], row=1, col=1)
    fig.update_layout(title=title, template="simple_white", width=max(660, PANEL_WIDTH * 1.4 * len(fractions)),
                      height=PANEL_HEIGHT + 160, legend={"orientation": "h", "y": -0.25})
    return fig
