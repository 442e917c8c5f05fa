"""Figures and the curve explorer, driven from pytest: no kernel, no browser."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.fake_runs import fake_per_alpha, write_fake_run

from workbench.viz import plots
from workbench.viz.widgets import CurveExplorer

pytestmark = pytest.mark.unit


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_fs_rs_figure_one_curve_per_group_with_area():
    df = fake_per_alpha()
    fig = plots.fs_rs_figure(df, area=True)
    curves = [t for t in fig.data if t.fill != "tozeroy"]
    assert len(curves) == 8 and len(fig.data) == 16
    area = next(t for t in fig.data if t.fill == "tozeroy")
    assert area.x[0] == 0.0 and area.x[-1] == 1.0  # extended flat to FS = 0 and FS = 1
    assert len(plots.fs_rs_figure(df).data) == 8


def test_aues_outline_area_matches_trapezoid_by_hand():
    x, y = plots.aues_outline(np.array([0.5, 0.2]), np.array([0.4, 0.8]))
    assert list(x) == [0.0, 0.2, 0.5, 1.0] and list(y) == [0.8, 0.8, 0.4, 0.4]
    assert np.trapezoid(y, x) == pytest.approx(0.2 * 0.8 + 0.3 * 0.6 + 0.5 * 0.4)


def test_mu_fq_threshold_line_at_95_percent_of_mu_at_alpha_0():
    df = fake_per_alpha(objectives=("npo",), scenarios=("oracle",), seeds=(7,))
    fig = plots.mu_fq_figure(df)
    line = trace(fig, "MU95 line · npo · oracle · seed 7")
    assert list(line.y) == [pytest.approx(0.95 * 0.6)] * 2
    assert len(plots.mu_fq_figure(df, threshold=None).data) == 1


def test_report_embeds_plotly_once():
    df = fake_per_alpha()
    html = plots.results_report_html("run", {"a": plots.fs_rs_figure(df), "b": plots.mu_fq_figure(df)},
                                     {"summary": df.head(3)})
    assert html.count("Plotly.newPlot") == 2 and html.count("/*! For license information") <= 1
    assert "<table" in html


@pytest.fixture
def explorer():
    return CurveExplorer(fake_per_alpha())


def test_initial_view(explorer):
    assert explorer.objective.value == "npo" and explorer.scenario.value == "oracle" and explorer.seed.value == 7
    names = [t.name for t in explorer.fs_rs.data]
    assert names == ["AUES area · oracle", "oracle", "random", "θ(α)"]
    assert "MU95 line · oracle" in [t.name for t in explorer.mu_fq.data]
    assert explorer.alpha.value == 1.0 and "<b>FS</b> = 1.0000" in explorer.readout.value


def test_slider_moves_marker_on_both_curves_and_readout(explorer):
    explorer.alpha.value = 0.5
    assert explorer.fs_rs.data[-1].x == (0.5,) and explorer.fs_rs.data[-1].y == (pytest.approx(0.875),)
    assert explorer.mu_fq.data[-1].x == (pytest.approx(-5 + 0.1 * 7 / 19),) and explorer.mu_fq.data[-1].y == (pytest.approx(0.5),)
    assert "<b>α</b> = 0.50" in explorer.readout.value and "<b>RS</b> = 0.8750" in explorer.readout.value


def test_dropdowns_redraw_curves_and_readout(explorer):
    explorer.alpha.value = 0.5
    explorer.scenario.value = "random"
    assert explorer.fs_rs.data[-1].x == (0.25,)  # FS = α² on the random curve
    assert [t.name for t in explorer.fs_rs.data][:3] == ["oracle", "AUES area · random", "random"]
    assert "random" in explorer.readout.value
    explorer.objective.value = "wga"
    assert explorer.fs_rs.layout.title.text == "wga · seed 7"
    assert "<b>RS</b> = 0.7400" in explorer.readout.value  # 1 − 0.25·α·2 − 0.01 for wga
    before = list(explorer.mu_fq.data[0].x)
    explorer.seed.value = 19
    assert list(explorer.mu_fq.data[0].x) != before


def test_missing_combination_shows_a_message():
    df = fake_per_alpha()
    df = df[~((df["scenario"] == "random") & (df["seed"] == 19))]
    ex = CurveExplorer(df)
    ex.scenario.value = "random"
    ex.seed.value = 19
    assert "no data" in ex.readout.value and ex.fs_rs.data[-1].x == ()


def test_static_figure_and_html_reflect_current_state(explorer, tmp_path):
    explorer.alpha.value = 0.25
    fig = explorer.static_figure()
    assert len(fig.data) == len(explorer.fs_rs.data) + len(explorer.mu_fq.data)
    assert "α=0.25" in fig.layout.title.text
    html = explorer.to_html(tmp_path / "explorer.html")
    assert (tmp_path / "explorer.html").read_text() == html and "Plotly.newPlot" in html


def test_explorer_reads_saved_runs(tmp_path):
    write_fake_run(tmp_path, run_id="a", seeds=(1,))
    write_fake_run(tmp_path, run_id="b", seeds=(2,))
    ex = CurveExplorer([tmp_path / "oracle-vs-random" / "a", tmp_path / "oracle-vs-random" / "b"])
    assert list(ex.seed.options) == [1, 2]
    assert ex.widget.children[2] is ex.readout
