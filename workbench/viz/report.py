"""Writing an experiment's results into its run folder: data first, figures beside it.

Every notebook ends the same way: the tidy tables (per-α, per-example, regions, checks, summary,
significance tests, Random–Random pairs, the paper-shaped table) go into
``outputs/<notebook>/<run-id>/`` as parquet (summaries also as CSV), and the figures (the headline
Δ-against-baseline figure, the FS–RS and MU–FQ small multiples) as one standalone HTML report that
opens offline. Keeping that in one place keeps the four notebooks from drifting apart.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from workbench.experiments.controlled import Results
from workbench.runs import io
from workbench.runs.rundir import RunDir
from workbench.viz import headline, plots


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
    """The FS–RS small multiples, and the MU–FQ ones where MU and FQ are defined (not on LUME)."""
    figs = [plots.fs_rs_figure(per_alpha, title=f"{title}: RS vs FS")]
    if per_alpha["MU"].notna().any() and per_alpha["FQ"].notna().any():
        figs.append(plots.mu_fq_figure(per_alpha, title=f"{title}: MU vs FQ"))
    return figs


def figures(per_alpha: pd.DataFrame, tables: dict[str, pd.DataFrame], title: str) -> list[go.Figure]:
    """An experiment's figures: the headline (each pair's Δ against the Random–Random band), then
    the curves. ``tables`` are :func:`workbench.experiments.tables.result_tables`' (or as saved)."""
    tests, pairs = tables.get("tests", pd.DataFrame()), tables.get("random_pairs", pd.DataFrame())
    head = [] if tests.empty else [headline.headline_figure(
        tests, pairs if not pairs.empty else pd.DataFrame(columns=["objective", "scenario"]),
        title=f"{title}: does the region matter more than which random region?")]
    return head + curve_figures(per_alpha, title)


def save_figures(run: RunDir, figures: list[go.Figure], name: str = "figures") -> Path:
    """All figures in one offline HTML file (plotly.js embedded once)."""
    titled = {(fig.layout.title.text or f"figure {i + 1}"): fig for i, fig in enumerate(figures)}
    return run.save_html(plots.results_report_html(run.path.name, titled), name)


def saved_figures(folder: str | Path, title: str) -> list[go.Figure]:
    """:func:`figures` redrawn from a run folder or a kept reference (nothing is recomputed)."""
    run = RunDir(folder)
    tables = {n: pd.read_csv(run.path / f"{n}.csv") for n in ("tests", "random_pairs") if (run.path / f"{n}.csv").is_file()}
    return figures(run.table("per_alpha"), tables, title)


KEPT_PATTERNS = ("params.json", "*.csv")  # parameters and every summary table (not per-example data)


def keep_reference(run_dir: str | Path, dest: str | Path) -> Path:
    """Copy a run's parameters, summary tables and figures into ``dest`` (e.g. ``outputs/reference/<nb>``).

    Models and per-example data stay behind; the per-α table is kept as CSV so the curves can be
    redrawn, and the figures as :func:`write_kept_figures` writes them.
    """
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in KEPT_PATTERNS:
        for path in run_dir.glob(pattern):
            shutil.copy2(path, dest / path.name)
    if (run_dir / "per_alpha.parquet").is_file():  # localizer-recovery sweeps nothing: its tables are CSV already
        io.write_csv(dest / "per_alpha.csv", pd.read_parquet(run_dir / "per_alpha.parquet"))
    write_kept_figures(dest, run_dir.parent.name)
    return dest


def write_kept_figures(dest: str | Path, title: str) -> Path:
    """``dest/figures.html`` redrawn from the tables kept in ``dest`` (the curves, or localizer-recovery's
    AUROC against injection strength from ``localization.csv``). The figures reference one shared
    ``plotly.min.js`` — the nearest one in ``dest``'s parent or above (``outputs/reference/tofu-tiny/<nb>``
    uses ``outputs/reference``'s), else a new one in ``dest``'s parent — so several kept runs do not
    each carry 5 MB of plotly.js and still open offline."""
    import os

    dest = Path(dest)
    js = next((d / "plotly.min.js" for d in dest.resolve().parents[:3] if (d / "plotly.min.js").is_file()),
              dest.parent / "plotly.min.js")
    if not js.exists():
        from plotly.offline import get_plotlyjs

        io.write_text(js, get_plotlyjs())
    src = Path(os.path.relpath(js, dest.resolve())).as_posix()
    if (dest / "per_alpha.csv").is_file():
        titled = {fig.layout.title.text: fig for fig in saved_figures(dest, title)}
    else:
        from workbench.viz.recovery import recovery_figure

        fig = recovery_figure(pd.read_csv(dest / "localization.csv"))
        titled = {fig.layout.title.text: fig}
    return io.write_html(dest / "figures.html", plots.results_report_html(title, titled, plotlyjs=src))
