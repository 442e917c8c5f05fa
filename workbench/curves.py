"""The two summary numbers of a model-mixing sweep (SPEC §6).

A mixing sweep evaluates ``θ(α) = (1−α)·θ_before + α·θ_after`` on a grid of α and gives one point
per α. Lee et al. (2025) summarise it twice:

* **AUES**: the area under Retain Strength as a function of Forget Strength over ``[0, 1]``. A
  method that forgets (FS → 1) while keeping retain knowledge extractable (RS high) has a large
  area. The points are sorted by FS and joined linearly, and the curve is extended flat from the
  first point to FS = 0 and from the last point to FS = 1 **[choice]**, so that sweeps covering
  different FS ranges are comparable.
* **MU95**: Forget Quality at the point where Model Utility has fallen to 95% of
  ``MU(θ_before)``: how much forgetting is bought for a 5% utility loss. The (MU, FQ) points are
  sorted by MU and FQ is interpolated linearly at ``0.95·MU(θ_before)`` **[choice]** (like
  ``np.interp``: a non-monotone MU curve is read on its MU-sorted points, not at its first
  crossing in α order; if every point lies below the target, FQ of the highest-MU point). If MU
  never falls that far, MU95 is the FQ of the sweep's *end* (α = 1) and ``reached`` is False: that
  number measures a different thing (forgetting at full unlearning, at less than 5% utility loss),
  so every table and figure carries the flag or the count of sweeps that reached the target.

Both are written for a batch of sweeps at once (``[rounds, point]`` arrays), which is what the
significance tests of :mod:`workbench.stats` need; the scalar versions call the batched ones.
"""

from __future__ import annotations

import math

import numpy as np

ArrayLike = np.ndarray | list | tuple


def aues_batch(fs: np.ndarray, rs: np.ndarray) -> np.ndarray:
    """AUES of many sweeps, ``[rounds]`` from ``fs``, ``rs`` of shape ``[rounds, point]``."""
    fs = np.atleast_2d(np.asarray(fs, dtype=float))
    rs = np.atleast_2d(np.asarray(rs, dtype=float))
    order = np.argsort(fs, axis=1, kind="stable")
    x = np.take_along_axis(fs, order, axis=1)
    y = np.take_along_axis(rs, order, axis=1)
    # Flat extension: (0, y_first) … (1, y_last).
    x = np.concatenate([np.zeros((x.shape[0], 1)), x, np.ones((x.shape[0], 1))], axis=1)
    y = np.concatenate([y[:, :1], y, y[:, -1:]], axis=1)
    return np.sum(np.diff(x, axis=1) * (y[:, 1:] + y[:, :-1]) / 2, axis=1)


def aues_outline(fs: ArrayLike, rs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The curve whose area is AUES: points sorted by FS, extended flat to FS = 0 and FS = 1
    **[choice]** (what :func:`aues_batch` integrates; figures shade exactly this)."""
    order = np.argsort(fs, kind="stable")
    x, y = np.asarray(fs, dtype=float)[order], np.asarray(rs, dtype=float)[order]
    return np.concatenate([[0.0], x, [1.0]]), np.concatenate([[y[0]], y, [y[-1]]])


def aues(fs: ArrayLike, rs: ArrayLike) -> float:
    """Area under RS(FS) over ``[0, 1]`` for one sweep (points in any order; FS assumed in [0, 1])."""
    fs, rs = np.asarray(fs, dtype=float), np.asarray(rs, dtype=float)
    if fs.shape != rs.shape or fs.ndim != 1 or fs.size == 0:
        raise ValueError(f"fs and rs must be non-empty 1-D arrays of one length, got {fs.shape} and {rs.shape}")
    return float(aues_batch(fs[None], rs[None])[0])


def mu95_batch(mu: np.ndarray, fq: np.ndarray, mu_before: float, threshold: float = 0.95, *,
               alpha: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MU95 of many sweeps: ``(value [rounds], reached [rounds])`` from ``[rounds, point]`` arrays.

    Matches ``np.interp`` on the MU-sorted points. Where no point has ``MU ≤ target`` the value is
    the FQ of each row's *end*, its point with the largest ``alpha`` (``[rounds, point]``, in any
    order; the mean FQ of tied ends, so that the order within a row never matters), and
    ``reached`` is False. Without ``alpha`` the rows are taken to be in α order and the end is the
    last point. The bootstrap test passes ``alpha`` because its re-split rows are shuffled: an
    unreached group then ends at its own most-unlearned point, as a sweep does **[choice]**.
    """
    mu = np.atleast_2d(np.asarray(mu, dtype=float))
    fq = np.atleast_2d(np.asarray(fq, dtype=float))
    target = threshold * mu_before
    order = np.argsort(mu, axis=1, kind="stable")
    m = np.take_along_axis(mu, order, axis=1)
    f = np.take_along_axis(fq, order, axis=1)
    rows = np.arange(m.shape[0])
    below = np.sum(m < target, axis=1)  # points strictly under the target
    hi = np.minimum(below, m.shape[1] - 1)
    lo = np.maximum(below - 1, 0)
    m_lo, m_hi, f_lo, f_hi = m[rows, lo], m[rows, hi], f[rows, lo], f[rows, hi]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(m_hi > m_lo, (target - m_lo) / (m_hi - m_lo), 1.0)
    value = f_lo + np.clip(w, 0.0, 1.0) * (f_hi - f_lo)
    reached = m[:, 0] <= target
    value = np.where(reached, value, _end_fq(fq, alpha))
    if not math.isfinite(target):
        value, reached = np.full(m.shape[0], math.nan), np.zeros(m.shape[0], dtype=bool)
    return value, reached


def _end_fq(fq: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """FQ at each row's largest α (mean over ties); the last point when ``alpha`` is None."""
    if alpha is None:
        return fq[:, -1]
    alpha = np.broadcast_to(np.atleast_2d(np.asarray(alpha, dtype=float)), fq.shape)
    at_end = alpha == alpha.max(axis=1, keepdims=True)
    return np.sum(np.where(at_end, fq, 0.0), axis=1) / np.sum(at_end, axis=1)


def mu95_with_flag(mu: ArrayLike, fq: ArrayLike, mu_before: float, threshold: float = 0.95) -> tuple[float, bool]:
    """``(MU95, reached)`` for one sweep given in α order; ``reached=False``: FQ at α = 1 (flag it).

    NaN with ``reached=False`` when ``mu_before`` is NaN (no MU splits, e.g. LUME).
    """
    mu, fq = np.asarray(mu, dtype=float), np.asarray(fq, dtype=float)
    if mu.shape != fq.shape or mu.ndim != 1 or mu.size == 0:
        raise ValueError(f"mu and fq must be non-empty 1-D arrays of one length, got {mu.shape} and {fq.shape}")
    value, reached = mu95_batch(mu[None], fq[None], mu_before, threshold)
    return float(value[0]), bool(reached[0])


def mu95(mu: ArrayLike, fq: ArrayLike, mu_before: float, threshold: float = 0.95) -> float:
    """FQ interpolated where MU falls to ``threshold·mu_before`` (see :func:`mu95_with_flag` for the flag)."""
    return mu95_with_flag(mu, fq, mu_before, threshold)[0]
