"""Figures, the interactive curve explorer and run reports (plotly figures; nothing here computes results).

* :mod:`~workbench.viz.plots` — FS–RS and MU–FQ small multiples (one colour per scenario, everywhere)
  and the offline HTML report;
* :mod:`~workbench.viz.headline` — each pair's ΔAUES / ΔMU95 against the Random–Random band;
* :mod:`~workbench.viz.widgets` — :class:`~workbench.viz.widgets.CurveExplorer` for JupyterLab;
* :mod:`~workbench.viz.report` — saving a run's tables and figures, keeping reference results;
* :mod:`~workbench.viz.markdown` — the results tables of docs/results.md, rendered from kept references;
* :mod:`~workbench.viz.paper` — those results next to the paper's numbers, with a verdict per row;
* :mod:`~workbench.viz.cells` — reading a kept ``table.csv`` and writing its p-values (both use it).
"""
