"""The paper's experiments, one module each, on the cached chain of models.

* :mod:`~workbench.experiments.chain` — θp → θr / θ_full, trained once and cached;
* :mod:`~workbench.experiments.session` — one model moved along the chain: injection (θo),
  unlearning, mixing sweeps, and the checks that keep an experiment meaningful;
* :mod:`~workbench.experiments.reference` — θr's forget truth ratios, Forget Quality's reference;
* :mod:`~workbench.experiments.controlled` — §4: Oracle vs Random (Table 2, Table 6, Figure 1);
* :mod:`~workbench.experiments.revisit` — §3: localizers vs Random (Tables 1, 3–5);
* :mod:`~workbench.experiments.tables` — AUES/MU95 summaries, appendix D's tests, the paper's tables;
* :mod:`~workbench.experiments.baseline` — beyond the paper: Random–Random pairs from one model,
  the calibrated p and the region-label permutation test;
* :mod:`~workbench.experiments.pair` — the paper's evaluation of checkpoints trained anywhere
  (``evaluate_pair``); :mod:`~workbench.experiments.parity` — parity with open-unlearning.
"""

# Loaded on first use (as the top-level ``workbench`` API is): importing one experiment module, say
# ``chain`` to train θr, must not import the others, or every cache key would depend on all of them
# (``workbench.runs.deps`` follows what importing a module executes).
_API = {
    "Results": "controlled", "run_controlled": "controlled", "l2_supervision": "controlled",
    "localization_rows": "controlled", "oracle_vs_random": "controlled", "revisit_localizers": "revisit",
    "CheckFailed": "session", "Session": "session", "open_session": "session", "GROUP": "tables",
    "compare": "tables", "compare_each": "tables", "localizer_table": "tables", "paper_table": "tables",
    "summarise": "tables", "result_tables": "tables", "ORACLE": "controlled", "RANDOM": "controlled",
    "random_pairs": "baseline", "evaluate_pair": "pair", "evaluate_checkpoints": "pair", "PairResult": "pair",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

