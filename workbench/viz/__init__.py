"""Figures, the interactive curve explorer and run reports (plotly figures; nothing here computes results).

* :mod:`~workbench.viz.plots` — FS–RS and MU–FQ figures and the offline HTML report;
* :mod:`~workbench.viz.widgets` — :class:`~workbench.viz.widgets.CurveExplorer` for JupyterLab;
* :mod:`~workbench.viz.report` — saving a run's tables and figures, keeping reference results.
"""
