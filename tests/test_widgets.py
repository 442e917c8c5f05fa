"""Figures and the curve explorer, driven from pytest: no kernel, no browser."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fixtures.fake_runs import fake_per_alpha, write_fake_run

from workbench import curves, experiments
from workbench.viz import headline, plots, report
from workbench.viz.widgets import CurveExplorer

pytestmark = pytest.mark.unit


def trace(fig, name):
    return next(t for t in fig.data if t.name == name)


def test_one_panel_per_objective_with_thin_sweeps_and_bold_means():
    df = fake_per_alpha()  # objectives npo and wga, Oracle and Random, seeds 7 and 19
    fig = plots.fs_rs_figure(df)
    assert [a.text for a in fig.layout.annotations[:2]] == ["npo", "wga"]  # subplot titles
    lines = [t for t in fig.data if t.fill != "tozeroy"]
    thin = [t for t in lines if t.line.width == plots.THIN]
    bold = [t for t in lines if t.line.width == plots.BOLD]
    assert len(thin) == 8 and len(bold) == 4  # 2 objectives × 2 scenarios × 2 seeds; one mean per scenario
    oracle, random = plots.style("oracle")[1], plots.style("random")[1]
    assert {t.line.color for t in lines} == {oracle, random} and oracle != random
    assert fig.layout.xaxis2.matches == "x" and fig.layout.yaxis2.matches == "y"  # shared axes


def test_fixed_colours_come_from_the_registry_and_are_stable():
    from workbench.localizers import LOCALIZERS

    assert plots.style("activations") == (LOCALIZERS["activations"].title, LOCALIZERS["activations"].color)
    assert plots.style("my_plugin") == plots.style("my_plugin")
    colours = [plots.style(s)[1] for s in ("oracle", "random_weights", *sorted(LOCALIZERS))]  # random is a localizer
    assert len(set(colours)) == len(colours)


def test_panel_aues_numbers_are_curves_aues_and_area_is_the_mean_outline():
    df = fake_per_alpha(objectives=("npo",))
    fig = plots.fs_rs_figure(df)
    rows = df[(df.scenario == "oracle")]
    values = [curves.aues(g.sort_values("alpha").FS, g.sort_values("alpha").RS) for _, g in rows.groupby("seed")]
    note = next(a.text for a in fig.layout.annotations if "AUES" in a.text)
    assert f"Oracle {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} (n=2)" in note
    area = trace(fig, "AUES area · Oracle")
    mean = rows.groupby("alpha")[["FS", "RS"]].mean()
    x, y = curves.aues_outline(mean.FS.to_numpy(), mean.RS.to_numpy())
    assert list(area.x) == pytest.approx(list(x)) and list(area.y) == pytest.approx(list(y))


def test_mu_fq_marks_the_target_and_not_reached_sweeps():
    df = fake_per_alpha(objectives=("npo",))
    df.loc[(df.scenario == "oracle") & (df.seed == 19), "MU"] = 0.6 - 0.01 * df.alpha  # never loses 5%
    fig = plots.mu_fq_figure(df)
    assert [s.y0 for s in fig.layout.shapes] == [pytest.approx(0.95 * 0.6)]
    missed = trace(fig, "MU95 not reached: FQ at α = 1 (open)")
    assert missed.marker.symbol == "circle-open" and list(missed.y) == [pytest.approx(0.59)]
    note = next(a.text for a in fig.layout.annotations if "MU95" in a.text)
    assert "1/2 reached" in note and "Random" in note and "2/2 reached" in note


def test_headline_points_are_signed_pair_differences_over_the_random_band():
    df = pd.concat([fake_per_alpha(scenarios=("oracle",)),
                    fake_per_alpha(scenarios=("random",), seeds=(7001, 7002)).assign(start="seed 7")])
    df["start"] = df["start"].fillna("seed 7") if "start" in df else "seed 7"
    tables = experiments.result_tables(df[df.seed.isin([7, 7001, 7002])], n_rounds=32)
    fig = headline.headline_figure(tables["tests"], tables["random_pairs"])
    tests = tables["tests"][tables["tests"].objective == "npo"]
    points = next(t for t in fig.data if t.type == "scatter" and t.xaxis == "x")
    assert sorted(points.y) == pytest.approx(sorted(tests.AUES_a - tests.AUES_b))
    band = next(t for t in fig.data if t.type == "bar" and t.name.endswith("max |Δ|"))
    d_max = tables["random_pairs"].query("objective == 'npo'").dAUES.max()
    assert band.base[0] == pytest.approx(-d_max) and band.y[0] == pytest.approx(2 * d_max)


def test_report_embeds_plotly_once():
    df = fake_per_alpha()
    html = plots.results_report_html("run", {"a": plots.fs_rs_figure(df), "b": plots.mu_fq_figure(df)},
                                     {"summary": df.head(3)})
    assert html.count("Plotly.newPlot") == 2 and html.count("/*! For license information") <= 1
    assert "<table" in html


def test_figures_fit_a_laptop_screen():
    for fig in report.figures(fake_per_alpha(), experiments.result_tables(fake_per_alpha(), n_rounds=32), "x"):
        assert fig.layout.height <= 800 and fig.layout.width <= 1300


@pytest.fixture
def explorer():
    return CurveExplorer(fake_per_alpha())


def test_initial_view(explorer):
    assert explorer.objective.value == "npo" and explorer.start.label == "seed 7"
    assert explorer.sweep.value == ("oracle", 7)
    names = [t.name for t in explorer.fs_rs.data]
    assert names == ["AUES area · Oracle · seed 7", "Oracle · seed 7", "Random · seed 7", "θ(α)"]
    assert "MU95 line · Oracle · seed 7" in [t.name for t in explorer.mu_fq.data]
    assert explorer.alpha.value == 1.0 and "<b>FS</b> = 1.0000" in explorer.readout.value
    assert "MU95 = " in explorer.readout.value and "(reached)" in explorer.readout.value


def test_slider_moves_marker_on_both_curves_and_readout(explorer):
    explorer.alpha.value = 0.5
    assert explorer.fs_rs.data[-1].x == (0.5,) and explorer.fs_rs.data[-1].y == (pytest.approx(0.875),)
    assert explorer.mu_fq.data[-1].x == (pytest.approx(-5 + 0.1 * 7 / 19),) and explorer.mu_fq.data[-1].y == (pytest.approx(0.5),)
    assert "<b>α</b> = 0.50" in explorer.readout.value and "<b>RS</b> = 0.8750" in explorer.readout.value


def test_dropdowns_redraw_curves_and_readout(explorer):
    explorer.alpha.value = 0.5
    explorer.sweep.value = ("random", 7)
    assert explorer.fs_rs.data[-1].x == (0.25,)  # FS = α² on the random curve
    assert [t.name for t in explorer.fs_rs.data][:3] == ["Oracle · seed 7", "AUES area · Random · seed 7", "Random · seed 7"]
    assert "Random" in explorer.readout.value
    explorer.objective.value = "wga"
    assert explorer.fs_rs.layout.title.text == "wga · seed 7"
    explorer.sweep.value = ("random", 7)
    assert "<b>RS</b> = 0.7400" in explorer.readout.value  # 1 − 0.25·α·2 − 0.01 for wga
    before = list(explorer.mu_fq.data[1].x)
    explorer.start.value = ("seed 19",)
    assert list(explorer.mu_fq.data[1].x) != before


def test_not_reached_is_shown_as_such():
    df = fake_per_alpha(objectives=("npo",), scenarios=("oracle",), seeds=(7,))
    df["MU"] = 0.6 - 0.01 * df.alpha
    ex = CurveExplorer(df)
    assert "not reached: FQ at α = 1" in ex.readout.value
    assert "MU95 not reached (FQ at α = 1)" in [t.name for t in ex.mu_fq.data]


def test_static_figure_and_html_reflect_current_state(explorer, tmp_path):
    explorer.alpha.value = 0.25
    fig = explorer.static_figure()
    assert len(fig.data) == len(explorer.fs_rs.data) + len(explorer.mu_fq.data)
    assert "α=0.25" in fig.layout.title.text
    html = explorer.to_html(tmp_path / "explorer.html")
    assert (tmp_path / "explorer.html").read_text() == html and "Plotly.newPlot" in html


def test_explorer_keeps_runs_apart(tmp_path):
    write_fake_run(tmp_path, run_id="a", seeds=(1,))
    write_fake_run(tmp_path, run_id="b", seeds=(1,))
    ex = CurveExplorer([tmp_path / "oracle-vs-random" / "a", tmp_path / "oracle-vs-random" / "b"])
    assert [label for label, _ in ex.start.options] == ["a · seed 1", "b · seed 1"]
    assert len(ex.sweeps()) == 2  # Oracle and Random of run a only, not four
    assert ex.widget.children[2] is ex.readout


def test_explorer_and_load_runs_open_kept_references(tmp_path):
    run = write_fake_run(tmp_path / "outputs")
    kept = report.keep_reference(run.path, tmp_path / "reference" / "oracle-vs-random")
    loaded = experiments.summarise(__import__("workbench").load_runs(tmp_path / "reference"))
    assert set(loaded.run_id) == {"oracle-vs-random"} and len(loaded) == 8
    ex = CurveExplorer(kept)
    assert ex.objective.value == "npo" and ex.point() is not None
