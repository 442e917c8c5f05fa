"""Interactive explorer of saved mixing sweeps (JupyterLab), with a static fallback for reports.

:class:`CurveExplorer` reads the tidy per-α table of one or several runs (nothing is recomputed)
and shows, for the chosen objective and seed, every scenario's FS–RS and MU–FQ curve. The chosen
scenario is drawn thick, with its AUES area shaded and its MU95 threshold line; an α slider marks
the point θ(α) on both curves and a readout gives FS, RS, MU and FQ there.

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

from workbench.runs import rundir as runs
from workbench.runs.rundir import load_runs
from workbench.viz import plots

__all__ = ["CurveExplorer", "load_runs"]

SELECTED_WIDTH, OTHER_WIDTH = 3.5, 1.5
FIGURE_WIDTH = 520  # two side by side fit a default JupyterLab notebook column
MARKER = dict(size=14, color="black", symbol="x")


def _figure() -> go.FigureWidget:
    # FigureWidget needs anywidget (a dependency of the workbench; plotly does not install it).
    return go.FigureWidget()


class CurveExplorer:
    """Dropdowns for objective, scenario and seed, an α slider, two linked figures and a readout.

    Args:
        source: a per-α table, or one or several run folders (or folders of runs) to read it from.
        threshold: MU level of the MU95 line, as a share of MU(α = 0).
    """

    def __init__(self, source: pd.DataFrame | str | os.PathLike | Iterable[str | os.PathLike], *,
                 threshold: float = 0.95):
        self.data = source if isinstance(source, pd.DataFrame) else load_runs(source)
        runs.check_columns(self.data, runs.PER_ALPHA_COLUMNS[1:], "per_alpha")
        self.threshold = threshold
        self.objective = W.Dropdown(options=self._values("objective"), description="objective")
        self.scenario = W.Dropdown(options=self._values("scenario"), description="scenario")
        self.seed = W.Dropdown(options=self._values("seed"), description="seed")
        alphas = np.sort(self.data["alpha"].unique())
        step = float(np.min(np.diff(alphas))) if len(alphas) > 1 else 1.0
        self.alpha = W.FloatSlider(value=float(alphas[-1]), min=float(alphas[0]), max=float(alphas[-1]),
                                   step=step, description="α", readout_format=".2f", continuous_update=True)
        self.readout = W.HTML()
        self.readout.add_class("wb-readout")
        self.fs_rs, self.mu_fq = _figure(), _figure()
        for dropdown in (self.objective, self.scenario, self.seed):
            dropdown.observe(self._on_selection, names="value")
        self.alpha.observe(self._on_alpha, names="value")
        self._redraw()

    def _values(self, column: str) -> list:
        return sorted(self.data[column].unique().tolist())

    # -- selection ---------------------------------------------------------------------------------
    def scenarios(self) -> list[tuple[str, pd.DataFrame]]:
        """Rows of each scenario of the chosen objective and seed, sorted by α."""
        chosen = self.data[(self.data["objective"] == self.objective.value) & (self.data["seed"] == self.seed.value)]
        return [(name, rows.sort_values("alpha")) for name, rows in chosen.groupby("scenario", sort=True)]

    def selected_rows(self) -> pd.DataFrame:
        return dict(self.scenarios()).get(self.scenario.value, self.data.iloc[0:0])

    def point(self) -> pd.Series | None:
        """The chosen curve's row nearest to the slider's α (None if that curve has no data)."""
        rows = self.selected_rows()
        if rows.empty:
            return None
        return rows.iloc[int(np.argmin(np.abs(rows["alpha"].to_numpy() - self.alpha.value)))]

    # -- drawing -----------------------------------------------------------------------------------
    def _curve_traces(self) -> tuple[list[go.Scatter], list[go.Scatter]]:
        left, right = [], []
        for i, (name, rows) in enumerate(self.scenarios()):
            chosen = name == self.scenario.value
            color, width = plots.PALETTE[i % len(plots.PALETTE)], SELECTED_WIDTH if chosen else OTHER_WIDTH
            left += plots.fs_rs_traces(rows, name, color, area=chosen, width=width)
            right += plots.mu_fq_traces(rows, name, color, threshold=self.threshold if chosen else None, width=width)
        return left, right

    def _marker_xy(self) -> tuple[list[float], list[float], list[float], list[float]]:
        p = self.point()
        return ([], [], [], []) if p is None else ([p["FS"]], [p["RS"]], [p["FQ"]], [p["MU"]])

    def _redraw(self) -> None:
        left, right = self._curve_traces()
        fs, rs, fq, mu = self._marker_xy()
        left.append(go.Scatter(x=fs, y=rs, mode="markers", marker=MARKER, name="θ(α)"))
        right.append(go.Scatter(x=fq, y=mu, mode="markers", marker=MARKER, name="θ(α)"))
        title = f"{self.objective.value} · seed {self.seed.value}"
        for fig, traces, axes in ((self.fs_rs, left, ("FS", "RS")), (self.mu_fq, right, ("FQ", "MU"))):
            with fig.batch_update():
                fig.data = []
                fig.add_traces(traces)
                fig.update_layout(title=title, xaxis_title=axes[0], yaxis_title=axes[1], template="plotly_white",
                                  height=380, width=FIGURE_WIDTH, margin=dict(l=50, r=20, t=50, b=40))
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
        p = self.point()
        if p is None:
            return f"<i>no data for {escape(str(self.scenario.value))} with this objective and seed</i>"
        cells = "".join(f"<td><b>{k}</b> = {p[k]:.4f}</td>" for k in ("FS", "RS", "MU", "FQ"))
        return (f"<table><tr><td>{escape(str(self.scenario.value))}</td>"
                f"<td><b>α</b> = {p['alpha']:.2f}</td>{cells}</tr></table>")

    def _on_selection(self, change: dict) -> None:
        self._redraw()

    def _on_alpha(self, change: dict) -> None:
        self._move_marker()

    # -- display and export --------------------------------------------------------------------------
    @functools.cached_property
    def widget(self) -> W.VBox:
        controls = W.HBox([self.objective, self.scenario, self.seed])
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
        fig.update_layout(title=f"{self.objective.value} · {self.scenario.value} · seed {self.seed.value}{note}",
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
