"""The README's results tables are what the kept references render to (generated, never typed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from workbench.viz import cells, markdown

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["revisit-localizers", "oracle-vs-random", "l2-mlp-supervision", "lume"]

pytestmark = pytest.mark.unit  # the kept references carry the calibrated tables (regenerated for issue 13)


def test_readme_tables_equal_the_rendering_of_outputs_reference():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = {m.group("name"): m.group("body") for m in markdown.BLOCK.finditer(text)}
    assert set(NOTEBOOKS) <= set(blocks), "every default run has a generated results block"
    for name, body in blocks.items():
        assert body == markdown.results_block(ROOT / "outputs" / "reference" / name), (
            f"README block {name!r} differs from outputs/reference/{name}: run scripts/render_readme.py")
    assert markdown.render_readme(text, ROOT / "outputs" / "reference") == text, (
        "a paper-comparison block differs from its rendering: run scripts/render_readme.py")


def test_rendering_reports_both_p_values_and_reached_counts():
    block = markdown.results_block(ROOT / "outputs" / "reference" / "oracle-vs-random")
    assert "p paper (mean / Fisher)" in block and "p calibrated" in block
    assert "MU95 Oracle" in block and re.search(r"\(\d+/\d+\)", block)  # reached counts such as (2/2)


def test_p_value_format():
    assert [cells.p_value(v) for v in (0.05123, 2.3e-5, 1.0, float("nan"), 0.0)] == ["0.051", "2.3e-05", "1", "–", "0"]


def test_facts_line_reports_the_general_knowledge_es_when_the_checks_carry_it(tmp_path):
    import shutil

    import pandas as pd

    kept = tmp_path / "oracle-vs-random"
    shutil.copytree(ROOT / "outputs" / "reference" / "oracle-vs-random", kept)
    assert "general-knowledge ES" not in markdown.results_block(kept)  # older checks: nothing invented
    checks = pd.read_csv(kept / "checks.csv").assign(general_es_r=[1.0, 0.9], general_es_o=[0.2, 0.5])
    checks.to_csv(kept / "checks.csv", index=False)
    assert "general-knowledge ES 0.95 → 0.35 (mean over 2 target seeds)" in markdown.results_block(kept)
