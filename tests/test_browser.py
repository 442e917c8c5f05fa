"""Slow tier: what a person sees. Headless Chromium (Debian's ``chromium``) driven by Playwright.

1. The offline HTML report of a run opens without a network and draws its curves.
2. Each notebook's kept report (``outputs/reference/<notebook>/figures.html``) draws every figure
   within a laptop-sized page width, without a network.
3. In JupyterLab, a notebook showing the :class:`~workbench.viz.widgets.CurveExplorer` on a saved run
   renders the figure and the slider, and moving the slider changes the readout.

1 and 3 use a fake but well-formed per-α table in a temporary run folder. Screenshots go to
``tmp_path`` and, if ``WORKBENCH_SCREENSHOTS`` names a folder, there too (to look at them). Run with
``make test-slow`` (needs ``pip install playwright pillow`` and ``apt-get install chromium``).
"""

from __future__ import annotations

import io as stdio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
from fixtures.fake_runs import fake_per_alpha, write_fake_run

from workbench.viz import plots

pytestmark = pytest.mark.slow
CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM:
        pytest.skip("no chromium executable (apt-get install chromium, or set WORKBENCH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def ink(png: bytes) -> tuple[float, int]:
    """Share of non-white pixels and number of distinct colours of a screenshot."""
    image = pytest.importorskip("PIL.Image").open(stdio.BytesIO(png)).convert("RGB")
    pixels = np.asarray(image).reshape(-1, 3)
    return float((pixels != 255).any(axis=1).mean()), len(np.unique(pixels, axis=0))


def test_offline_report_draws_curves(browser, tmp_path):
    run = write_fake_run(tmp_path)
    df = fake_per_alpha()
    html = plots.results_report_html("fake run", {"RS vs FS": plots.fs_rs_figure(df), "MU vs FQ": plots.mu_fq_figure(df)})
    report = run.save_html(html, "report")
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
    page.goto(report.as_uri())
    plot = page.locator(".js-plotly-plot").first
    plot.wait_for(state="visible", timeout=30_000)
    page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=30_000)
    share, colours = ink(plot.screenshot())
    keep_screenshot(page, tmp_path / "report.png")
    assert share > 0.02 and colours > 20, f"plot area looks blank: {share:.3f} ink, {colours} colours"
    assert page.locator(".js-plotly-plot").count() == 2
    page.close()


def keep_screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("WORKBENCH_SCREENSHOTS"):
        Path(os.environ["WORKBENCH_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["WORKBENCH_SCREENSHOTS"]) / path.name)


REFERENCE = Path(__file__).resolve().parents[1] / "outputs" / "reference"


# Figures a kept report draws: headline, FS–RS and MU–FQ; lume has no MU; localizer recovery one AUROC figure.
FIGURES = {"lume": 2, "localizer-recovery": 1}


@pytest.mark.parametrize("kept", sorted(str(p.parent.relative_to(REFERENCE)) for p in REFERENCE.rglob("figures.html")))
def test_kept_report_draws_every_figure_on_a_laptop_screen(browser, tmp_path, kept):
    """Every kept report, nested ones (real data, SmolLM2, gathered seeds) included, opens offline and draws."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_())
    page.goto((REFERENCE / kept / "figures.html").as_uri())
    page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=60_000)
    plots_ = page.locator(".js-plotly-plot")
    notebook = json.loads((REFERENCE / kept / "params.json").read_text())["notebook"]
    expected = FIGURES.get(notebook, 3)
    assert plots_.count() == expected
    for i in range(expected):
        box = plots_.nth(i).bounding_box()
        assert box["width"] <= 1366 and box["height"] <= 768, f"figure {i} does not fit a laptop screen: {box}"
        share, colours = ink(plots_.nth(i).screenshot())
        assert share > 0.02 and colours > 20, f"figure {i} looks blank: {share:.3f} ink, {colours} colours"
    keep_screenshot(page, tmp_path / f"report-{kept.replace('/', '-')}.png")
    page.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab on localhost serving ``tmp_path``, with its settings kept inside ``tmp_path``."""
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / ".jupyter"), "OMP_NUM_THREADS": "1",
           "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / ".lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / ".lab-workspaces")}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ip=127.0.0.1", f"--port={port}",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={tmp_path}"]
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/api/status", proc, timeout=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "JupyterLab exited early"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def explorer_notebook(folder: Path, run_dir: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(f"from workbench.viz.widgets import CurveExplorer\n"
                                          f"explorer = CurveExplorer({str(run_dir)!r})\nexplorer")]
    path = folder / "explorer.ipynb"
    nbformat.write(nb, str(path))
    return path


def accept_kernel_dialog(page) -> None:
    """JupyterLab may ask which kernel to start for a notebook it has not opened before."""
    button = page.locator(".jp-Dialog button.jp-mod-accept")
    try:
        button.wait_for(state="visible", timeout=15_000)
    except Exception:  # noqa: BLE001 — no dialog this time
        return
    button.click()


def test_jupyterlab_explorer_renders_and_slider_updates_readout(browser, lab, tmp_path):
    run = write_fake_run(tmp_path / "outputs")
    explorer_notebook(tmp_path, run.path)
    page = browser.new_page(viewport={"width": 1500, "height": 1100})
    page.goto(f"{lab}/lab/tree/explorer.ipynb")
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    accept_kernel_dialog(page)
    page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=90_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

    readout = page.locator(".wb-readout").first
    try:
        readout.wait_for(state="visible", timeout=120_000)
    finally:
        page.screenshot(path=str(tmp_path / "lab-after-run.png"), full_page=True)
    page.wait_for_selector(".js-plotly-plot .scatterlayer .trace", timeout=120_000)
    handle = page.locator(".widget-slider .noUi-handle").first
    handle.wait_for(state="visible", timeout=30_000)
    before = readout.inner_text()
    assert "α = 1.00" in before

    handle.focus()
    for _ in range(6):
        page.keyboard.press("ArrowLeft")
    page.wait_for_function("(t) => !document.querySelector('.wb-readout').innerText.includes(t)", arg="α = 1.00",
                           timeout=30_000)
    after = readout.inner_text()
    keep_screenshot(page, tmp_path / "lab.png")
    assert after != before and "FS" in after
    share, colours = ink(page.locator(".js-plotly-plot").first.screenshot())
    assert share > 0.02 and colours > 20, f"figure looks blank: {share:.3f} ink, {colours} colours"
    page.close()
