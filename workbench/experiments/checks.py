"""The checks that keep an experiment meaningful, each naming the parameter to change.

* :func:`check_injection` — θo holds the forget set (ES ≥ ``min_forget_es``) and keeps the retain set
  (and, with ``inject_general``, the general set): otherwise every region looks alike (SPEC §4);
* :func:`check_fs` — SPEC §3's rule: an unlearning run's FS at α = 1 approaches but does not reach 1.
"""

from __future__ import annotations

import math

import pandas as pd

from workbench.experiments.chain import CheckFailed

__all__ = ["check_fs", "check_injection"]


def check_injection(report: dict, cfg) -> None:
    """θo must hold the forget set (ES ≥ min_forget_es) while keeping the retain set."""
    if report["forget_es_o"] < cfg.min_forget_es:
        raise CheckFailed(
            f"injection too weak: θo's forget ES is {report['forget_es_o']:.3f} < min_forget_es={cfg.min_forget_es} "
            f"(θr: {report['forget_es_r']:.3f}). Raise 'inject_epochs' (now {cfg.inject_epochs}) or 'inject_lr' "
            f"(now {cfg.inject_lr}), or widen the {'model (' + repr('tiny_d_ff') + ') / ' if cfg.model == 'tiny-llama' else ''}"
            f"region ('region_fraction')."
        )
    drop = report["retain_es_r"] - report["retain_es_o"]
    if drop > cfg.max_retain_es_drop:
        raise CheckFailed(
            f"injection damaged the retain set: retain ES fell by {drop:.3f} > max_retain_es_drop={cfg.max_retain_es_drop}. "
            f"Raise 'lambda_retain' (now {cfg.lambda_retain}) or lower 'inject_lr' (now {cfg.inject_lr})."
        )
    general = report.get("general_es_r", 0.0) - report.get("general_es_o", 0.0)
    if cfg.inject_general and general > cfg.max_retain_es_drop:
        raise CheckFailed(
            f"injection damaged the general-knowledge set: its ES fell by {general:.3f} > max_retain_es_drop="
            f"{cfg.max_retain_es_drop}. Raise 'lambda_retain' (now {cfg.lambda_retain}) or lower 'inject_lr' "
            f"(now {cfg.inject_lr})."
        )


def check_fs(per_alpha: pd.DataFrame, *, lr_key: str, lr: float, what: str) -> str | None:
    """SPEC §3's rule: FS at α = 1 approaches but does not reach 1 (we require it in [0.8, 1))."""
    fs = float(per_alpha.loc[per_alpha["alpha"].idxmax(), "FS"])
    if fs >= 1.0:
        return f"{what}: FS at α=1 is {fs:.3f} (reached 1); lower '{lr_key}' (now {lr})"
    if fs < 0.8 or math.isnan(fs):
        return f"{what}: FS at α=1 is {fs:.3f} < 0.8 (did not unlearn); raise '{lr_key}' (now {lr}) or 'unlearn_epochs'"
    return None
