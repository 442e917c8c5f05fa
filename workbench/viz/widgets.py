"""Interactive explorer of saved mixing sweeps (JupyterLab), with a static fallback for reports.

:class:`CurveExplorer` reads the tidy per-α table of one or several runs, or of kept references
(nothing is recomputed). For the chosen objective and starting model (one θo, or θ_full; with
several runs loaded, each run's starts are listed apart) it shows every sweep unlearned from that
model on FS–RS and MU–FQ, in the scenario colours of every other figure
(:func:`workbench.viz.plots.style`). The chosen sweep is drawn thick, with its AUES area shaded,
its MU95 line and where MU95 is read: the crossing, or, when MU never fell to 95%, the end of the
sweep marked "not reached". An α slider marks the point θ(α) on both curves and a readout gives
FS, RS, MU and FQ there, with the sweep's AUES and MU95 (and whether it was reached).

Widgets only live in a running kernel: they do not render in nbconvert HTML or in a saved notebook
(see ``shared/reference/ecosystem.md`` §2). :meth:`CurveExplorer.static_figure` redraws the current
view as a plain figure and :meth:`CurveExplorer.to_html` as an offline page for reports. The
callbacks are ordinary methods driven by traitlets, so tests set ``explorer.alpha.value`` and check
the figure data, no browser needed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from html import escape

import ipywidgets as W
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.curves import aues, aues_outline, mu95_with_flag
from workbench.runs import rundir as runs
from workbench.runs.rundir import load_runs
from workbench.viz import plots

__all__ = ["CurveExplorer", "load_runs"]

SELECTED_WIDTH, OTHER_WIDTH = 3.5, 1.2
FIGURE_WIDTH = 520  # two side by side fit a default JupyterLab notebook column
MARKER = dict(size=14, color="black", symbol="x")


def _figure() -> go.FigureWidget:
    # FigureWidget needs anywidget (a dependency of the workbench; plotly does not install it).
    return go.FigureWidget()


def _set_options(dropdown: W.Dropdown, options: list[tuple[str, object]]) -> None:
    """New options, keeping the chosen value where it still exists, else the first option."""
    keep = dropdown.value
    dropdown.options = options
    values = [v for _, v in options]
    dropdown.value = keep if keep in values else (values[0] if values else None)


class CurveExplorer:
    """Dropdowns for objective, starting model and sweep, an α slider, two linked figures and a readout.

    Args:
        source: a per-α table, or one or several run folders, kept references (or folders of them).
        threshold: MU level of the MU95 line, as a share of MU(α = 0).
    """

    def __init__(self, source: pd.DataFrame | str | os.PathLike | Iterable[str | os.PathLike], *,
                 threshold: float = 0.95):
        data = source if isinstance(source, pd.DataFrame) else load_runs(source)
        self.data = runs.with_start(data)
        runs.check_columns(self.data, runs.PER_ALPHA_COLUMNS[1:], "per_alpha")
        self.threshold = threshold
        self.objective = W.Dropdown(options=sorted(self.data["objective"].unique().tolist()), description="objective")
        self.start = W.Dropdown(description="start")
        self.sweep = W.Dropdown(description="sweep")
        self._update_starts()
        alphas = np.sort(self.data["alpha"].unique())
        step = float(np.min(np.diff(alphas))) if len(alphas) > 1 else 1.0
        self.alpha = W.FloatSlider(value=float(alphas[-1]), min=float(alphas[0]), max=float(alphas[-1]),
                                   step=step, description="α", readout_format=".2f", continuous_update=True)
        self.readout = W.HTML()
        self.readout.add_class("wb-readout")
        self.fs_rs, self.mu_fq = _figure(), _figure()
        self.objective.observe(self._on_objective, names="value")
        self.start.observe(self._on_start, names="value")
        self.sweep.observe(self._on_selection, names="value")
        self.alpha.observe(self._on_alpha, names="value")
        self._redraw()

    # -- selection ---------------------------------------------------------------------------------
    def _block_keys(self) -> list[str]:
        return [k for k in runs.sweep_keys(self.data) if k not in ("objective", "scenario", "seed")]

    def _update_starts(self) -> None:
        rows = self.data[self.data["objective"] == self.objective.value]
        keys = self._block_keys()
        blocks = list(dict.fromkeys(tuple(k) for k in rows[keys].itertuples(index=False)))  # in the run's order
        _set_options(self.start, [(" · ".join(map(str, b)), b) for b in blocks])
        self._update_sweeps()

    def _update_sweeps(self) -> None:
        _set_options(self.sweep, [(f"{plots.style(sc)[0]} · seed {seed}", (sc, seed)) for sc, seed, _ in self.sweeps()])

    def sweeps(self) -> list[tuple[str, int, pd.DataFrame]]:
        """``(scenario, seed, rows sorted by α)`` of every sweep of the chosen objective and start."""
        chosen = self.data[self.data["objective"] == self.objective.value]
        for key, value in zip(self._block_keys(), self.start.value or ()):
            chosen = chosen[chosen[key] == value]
        return [(sc, seed, rows.sort_values("alpha")) for (sc, seed), rows in chosen.groupby(["scenario", "seed"])]

    def selected_rows(self) -> pd.DataFrame:
        found = [rows for sc, seed, rows in self.sweeps() if (sc, seed) == self.sweep.value]
        return found[0] if found else self.data.iloc[0:0]

    def point(self) -> pd.Series | None:
        """The chosen curve's row nearest to the slider's α (None if that curve has no data)."""
        rows = self.selected_rows()
        if rows.empty:
            return None
        return rows.iloc[int(np.argmin(np.abs(rows["alpha"].to_numpy() - self.alpha.value)))]

    # -- drawing -----------------------------------------------------------------------------------
    def _curve_traces(self) -> tuple[list[go.Scatter], list[go.Scatter]]:
        left, right = [], []
        for scenario, seed, rows in self.sweeps():
            chosen = (scenario, seed) == self.sweep.value
            title, color = plots.style(scenario)
            line = dict(color=color, width=SELECTED_WIDTH if chosen else OTHER_WIDTH)
            name = f"{title} · seed {seed}"
            if chosen:
                x, y = aues_outline(rows["FS"].to_numpy(), rows["RS"].to_numpy())
                left.append(go.Scatter(x=x, y=y, mode="lines", fill="tozeroy", line=dict(width=0, color=color),
                                       fillcolor=plots.translucent(color), name=f"AUES area · {name}", hoverinfo="skip",
                                       showlegend=False))
                right += self._mu95_traces(rows, name, color)
            left.append(go.Scatter(x=rows["FS"], y=rows["RS"], mode="lines+markers", name=name, line=line,
                                   marker=dict(size=4), hovertext=plots.hover(rows), hoverinfo="text+name"))
            right.append(go.Scatter(x=rows["FQ"], y=rows["MU"], mode="lines+markers", name=name, line=line,
                                    marker=dict(size=4), hovertext=plots.hover(rows), hoverinfo="text+name"))
        return left, right

    def _mu95_traces(self, rows: pd.DataFrame, name: str, color: str) -> list[go.Scatter]:
        """The chosen sweep's MU95 line and where its MU95 is read (crossing, or "not reached" at α = 1)."""
        level = plots.mu_threshold(rows, self.threshold)
        value, reached = mu95_with_flag(rows["MU"], rows["FQ"], rows["MU"].iloc[0], self.threshold)
        end = rows.iloc[-1]
        x, y = (value, level) if reached else (end["FQ"], end["MU"])
        label = "MU95" if reached else "MU95 not reached (FQ at α = 1)"
        return [go.Scatter(x=[rows["FQ"].min(), rows["FQ"].max()], y=[level, level], mode="lines",
                           line=dict(color=color, dash="dash", width=1), name=f"MU95 line · {name}", showlegend=False,
                           hoverinfo="name"),
                go.Scatter(x=[x], y=[y], mode="markers+text", text=[label], textposition="top center",
                           marker=dict(size=11, color=color, symbol="circle" if reached else "circle-open",
                                       line=dict(width=2, color=color)), name=label, hoverinfo="name")]

    def _marker_xy(self) -> tuple[list[float], list[float], list[float], list[float]]:
        p = self.point()
        return ([], [], [], []) if p is None else ([p["FS"]], [p["RS"]], [p["FQ"]], [p["MU"]])

    def _redraw(self) -> None:
        left, right = self._curve_traces()
        fs, rs, fq, mu = self._marker_xy()
        left.append(go.Scatter(x=fs, y=rs, mode="markers", marker=MARKER, name="θ(α)"))
        right.append(go.Scatter(x=fq, y=mu, mode="markers", marker=MARKER, name="θ(α)"))
        title = f"{self.objective.value} · {self.start.label}"
        for fig, traces, axes in ((self.fs_rs, left, ("FS", "RS")), (self.mu_fq, right, ("FQ", "MU"))):
            with fig.batch_update():
                fig.data = []
                fig.add_traces(traces)
                fig.update_layout(title=title, xaxis_title=axes[0], yaxis_title=axes[1], template="plotly_white",
                                  height=380, width=FIGURE_WIDTH, margin=dict(l=50, r=20, t=50, b=40),
                                  legend=dict(font=dict(size=10)))
        self._update_readout()

    def _move_marker(self) -> None:
        fs, rs, fq, mu = self._marker_xy()
        with self.fs_rs.batch_update():
            self.fs_rs.data[-1].x, self.fs_rs.data[-1].y = fs, rs
        with self.mu_fq.batch_update():
            self.mu_fq.data[-1].x, self.mu_fq.data[-1].y = fq, mu
        self._update_readout()

    def _update_readout(self) -> None:
        self.readout.value = self.readout_html()

    def readout_html(self) -> str:
        p, rows = self.point(), self.selected_rows()
        if p is None:
            return f"<i>no data for {escape(str(self.sweep.label))} with this objective and start</i>"
        cells = "".join(f"<td><b>{k}</b> = {p[k]:.4f}</td>" for k in ("FS", "RS", "MU", "FQ"))
        summary = f"<td>AUES = {aues(rows['FS'], rows['RS']):.3f}</td>"
        if rows["MU"].notna().all() and rows["FQ"].notna().all():
            value, reached = mu95_with_flag(rows["MU"], rows["FQ"], rows["MU"].iloc[0], self.threshold)
            summary += f"<td>MU95 = {value:.2f} ({'reached' if reached else 'not reached: FQ at α = 1'})</td>"
        return (f"<table><tr><td>{escape(str(self.sweep.label))}</td>"
                f"<td><b>α</b> = {p['alpha']:.2f}</td>{cells}{summary}</tr></table>")

    def _on_objective(self, change: dict) -> None:
        self._update_starts()
        self._redraw()

    def _on_start(self, change: dict) -> None:
        self._update_sweeps()
        self._redraw()

    def _on_selection(self, change: dict) -> None:
        self._redraw()

    def _on_alpha(self, change: dict) -> None:
        self._move_marker()

    # -- display and export --------------------------------------------------------------------------
    @functools.cached_property
    def widget(self) -> W.VBox:
        controls = W.HBox([self.objective, self.start, self.sweep])
        return W.VBox([controls, self.alpha, self.readout, W.HBox([self.fs_rs, self.mu_fq])])

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def static_figure(self) -> go.Figure:
        """The current view as one plain figure (renders in nbconvert HTML and saved notebooks)."""
        fig = make_subplots(rows=1, cols=2, subplot_titles=("RS vs FS", "MU vs FQ"))
        for col, source in ((1, self.fs_rs), (2, self.mu_fq)):
            for trace in source.data:
                fig.add_trace(go.Scatter(trace), row=1, col=col)
        p = self.point()
        note = "" if p is None else f" · α={p['alpha']:.2f}: FS={p['FS']:.3f} RS={p['RS']:.3f} MU={p['MU']:.3f} FQ={p['FQ']:.2f}"
        fig.update_layout(title=f"{self.objective.value} · {self.start.label} · {self.sweep.label}{note}",
                          template="plotly_white", height=420)
        fig.update_xaxes(title_text="FS", row=1, col=1).update_yaxes(title_text="RS", row=1, col=1)
        fig.update_xaxes(title_text="FQ", row=1, col=2).update_yaxes(title_text="MU", row=1, col=2)
        return fig

    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """Offline HTML of :meth:`static_figure` (plotly.js inline); also written to ``path`` if given."""
        html = self.static_figure().to_html(include_plotlyjs=True, full_html=True)
        if path is not None:
            from workbench.runs import io

            io.write_html(path, html)
        return html
