"""Saving results and keeping reference copies of runs."""

import pandas as pd
import pytest
from fixtures.fake_runs import write_fake_run

from workbench.viz import report

pytestmark = pytest.mark.integration


def test_keep_reference_copies_tables_and_shares_plotly(tmp_path):
    run = write_fake_run(tmp_path / "outputs")
    pd.DataFrame({"objective": ["npo"], "AUES": [0.5]}).to_csv(run.path / "summary.csv", index=False)
    dest = report.keep_reference(run.path, tmp_path / "reference" / "oracle-vs-random")
    assert (dest / "summary.csv").exists() and (dest / "params.json").exists()
    kept = pd.read_csv(dest / "per_alpha.csv")
    assert len(kept) == len(run.table("per_alpha"))
    html = (dest / "figures.html").read_text()
    assert "../plotly.min.js" in html and "RS vs FS" in html and "MU vs FQ" in html
    assert (dest.parent / "plotly.min.js").stat().st_size > 1_000_000
    assert len(html) < 1_000_000  # plotly.js is shared, not embedded per run
    # a kept run one folder deeper (outputs/reference/tofu-tiny/<nb>) shares the same copy
    deeper = report.keep_reference(run.path, tmp_path / "reference" / "tofu-tiny" / "oracle-vs-random")
    assert '"../../plotly.min.js"' in (deeper / "figures.html").read_text()
    assert not (deeper.parent / "plotly.min.js").exists()
