"""Writing an experiment's results into its run folder: data first, figures beside it.

Every notebook ends the same way: the tidy tables (per-α, per-example, regions, checks, summary,
significance tests, the paper-shaped table) go into ``outputs/<notebook>/<run-id>/`` as parquet
(summaries also as CSV), and the FS–RS and MU–FQ figures as one standalone HTML report that opens
offline. Keeping that in one function keeps the four notebooks from drifting apart.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from workbench.experiments.controlled import Results
from workbench.runs import io
from workbench.runs.rundir import RunDir
from workbench.viz import plots


def _storable(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs uniform column types: list-valued cells (per-layer counts) become strings."""
    df = df.copy()
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (list, tuple, dict))).any():
            df[col] = df[col].map(str)
    return df


def save_results(run: RunDir, results: Results, tables: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """Save every table of ``results`` and the named summary ``tables``; returns the paths."""
    paths = {
        "per_alpha": run.save_table(results.per_alpha, "per_alpha"),
        "per_example": run.save_table(results.per_example, "per_example"),
        "regions": run.save_table(_storable(results.regions), "regions", csv=True),
    }
    if not results.checks.empty:
        paths["checks"] = run.save_table(results.checks, "checks", csv=True)
    for name, df in {**results.extra, **tables}.items():
        if df is not None and not df.empty:
            paths[name] = run.save_table(_storable(df), name, csv=True)
    return paths


def curve_figures(per_alpha: pd.DataFrame, title: str) -> list[go.Figure]:
    """The FS–RS figure, and the MU–FQ figure where MU and FQ are defined (not on LUME)."""
    figs = [plots.fs_rs_figure(per_alpha, title=f"{title}: RS vs FS")]
    if per_alpha["MU"].notna().any() and per_alpha["FQ"].notna().any():
        figs.append(plots.mu_fq_figure(per_alpha, title=f"{title}: MU vs FQ"))
    return figs


def save_figures(run: RunDir, figures: list[go.Figure], name: str = "figures") -> Path:
    """All figures in one offline HTML file (plotly.js embedded once)."""
    titled = {(fig.layout.title.text or f"figure {i + 1}"): fig for i, fig in enumerate(figures)}
    return run.save_html(plots.results_report_html(run.path.name, titled), name)


KEPT_PATTERNS = ("params.json", "*.csv")  # parameters and every summary table (not per-example data)


def keep_reference(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a run's parameters, summary tables and figures into ``dest`` (e.g. ``outputs/reference/<nb>``).

    Models and per-example data stay behind; the per-α table is kept as CSV so the curves can be
    redrawn. Figures reference one shared ``plotly.min.js`` in ``dest``'s parent, so several kept runs
    do not each carry 5 MB of plotly.js and still open offline.
    """
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in KEPT_PATTERNS:
        for path in run_dir.glob(pattern):
            shutil.copy2(path, dest / path.name)
    per_alpha = pd.read_parquet(run_dir / "per_alpha.parquet")
    io.write_csv(dest / "per_alpha.csv", per_alpha)
    figs = curve_figures(per_alpha, run_dir.parent.name)
    titled = {fig.layout.title.text: fig for fig in figs}
    io.write_html(dest / "figures.html", plots.results_report_html(run_dir.parent.name, titled, plotlyjs="../plotly.min.js"))
    js = dest.parent / "plotly.min.js"
    if not js.exists():
        from plotly.offline import get_plotlyjs

        io.write_text(js, get_plotlyjs())
    return dest
