"""The paper's experiments, one module each, on the cached chain of models.

* :mod:`~workbench.experiments.chain` — θp → θr / θ_full, trained once and cached;
* :mod:`~workbench.experiments.session` — one model moved along the chain: injection (θo),
  unlearning, mixing sweeps, and the checks that keep an experiment meaningful;
* :mod:`~workbench.experiments.controlled` — §4: Oracle vs Random (Table 2, Table 6, Figure 1);
* :mod:`~workbench.experiments.revisit` — §3: localizers vs Random (Tables 1, 3–5);
* :mod:`~workbench.experiments.tables` — AUES/MU95 summaries, appendix D's tests, the paper's tables;
* :mod:`~workbench.experiments.baseline` — beyond the paper: Random–Random pairs from one model,
  the calibrated p and the region-label permutation test.
"""

from workbench.experiments.baseline import random_pairs
from workbench.experiments.controlled import (
    ORACLE,
    RANDOM,
    Results,
    controlled,
    l2_supervision,
    localization_rows,
    oracle_vs_random,
)
from workbench.experiments.revisit import revisit
from workbench.experiments.session import CheckFailed, Session, open_session
from workbench.experiments.tables import (
    GROUP,
    compare,
    compare_each,
    localizer_table,
    paper_table,
    result_tables,
    summarise,
)

__all__ = ["GROUP", "ORACLE", "RANDOM", "CheckFailed", "Results", "Session", "compare", "compare_each", "controlled",
           "l2_supervision", "localization_rows", "localizer_table", "open_session", "oracle_vs_random", "paper_table",
           "random_pairs", "result_tables", "revisit", "summarise"]
