"""Probability of backtest overfitting by combinatorially symmetric cross-validation.

Bailey, D. H., Borwein, J., López de Prado, M. and Zhu, Q. J. (2015), "The
Probability of Backtest Overfitting", Journal of Computational Finance 20(4).

The T×N matrix of per-bar returns (rows = time, columns = trials of one search)
is cut into S contiguous blocks. For each of the C(S, S/2) ways to pick half the
blocks as in-sample (IS), the complement being out-of-sample (OOS), the trial
with the best IS Sharpe is selected and its relative rank ω in OOS computed; the
logit λ = ln(ω / (1 − ω)) is <= 0 when the IS winner is at or below the OOS
median. PBO is the share of combinations with λ <= 0.

The implementation is vectorised: per-block sums and sums of squares of every
trial are computed once (on mean-centred returns, for numerical stability) and
each combination's IS and OOS moments are matrix products of a 0/1 block mask
with those sums.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from toolkit.errors import ConfigurationError

__all__ = ["PBOResult", "pbo_cscv"]

# Combinations processed per vectorised step, scaled so a chunk holds ~2M cells per array.
_CELLS_PER_CHUNK = 2_000_000


@dataclass(frozen=True, eq=False)
class PBOResult:
    """Outcome of ``pbo_cscv``.

    Attributes
    ----------
    pbo
        Probability of backtest overfitting: share of combinations with λ <= 0.
    logits
        λ per combination (``n_combinations`` values).
    n_combinations, n_splits, n_trials
        C(S, S/2), S and N.
    is_sharpes, oos_sharpes
        Per-period Sharpe ratio of the IS-selected trial, in and out of sample,
        per combination.
    degradation_slope, degradation_intercept
        Least-squares fit ``oos_sharpe ≈ intercept + slope · is_sharpe`` over the
        combinations (the paper's performance degradation; ``nan`` if undefined).
    prob_oos_loss
        Share of combinations whose selected trial has an OOS Sharpe below 0.
    """

    pbo: float
    logits: np.ndarray
    n_combinations: int
    n_splits: int
    n_trials: int
    is_sharpes: np.ndarray
    oos_sharpes: np.ndarray
    degradation_slope: float
    degradation_intercept: float
    prob_oos_loss: float


def _validate(trial_returns: pd.DataFrame | np.ndarray, n_splits: int) -> np.ndarray:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int | np.integer):
        raise ConfigurationError("n_splits", "an even integer >= 2", n_splits)
    if n_splits < 2 or n_splits % 2:
        raise ConfigurationError("n_splits", "an even integer >= 2", n_splits)
    try:
        x = np.asarray(trial_returns, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(
            "trial_returns", "a numeric T×N matrix", type(trial_returns).__name__
        ) from exc
    if x.ndim != 2:
        raise ConfigurationError("trial_returns", "a 2-D T×N matrix (rows time, columns trials)", x.shape)
    t, n = x.shape
    if n < 2:
        raise ConfigurationError("trial_returns", "at least 2 trials (columns)", n)
    if t < n_splits:
        raise ConfigurationError("trial_returns", f"at least n_splits={n_splits} rows", t)
    if (t // n_splits) * (n_splits // 2) < 2:
        raise ConfigurationError("trial_returns", "at least 2 rows in each half of the blocks", t)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise ConfigurationError("trial_returns", "finite numbers (no NaN/inf)", f"{bad} non-finite value(s)")
    return x


def _sharpe_inplace(total: np.ndarray, sq: np.ndarray, count: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Per-period Sharpe from centred sums, overwriting ``total`` and ``sq``.

    ``total`` and ``sq`` are sums of ``x - mu`` and ``(x - mu)**2`` over ``count``
    rows. Zero variance gives ±inf (0 when the mean is also 0).
    """
    mean = total
    var = sq
    mean /= count
    tmp = mean * mean
    tmp *= count
    var -= tmp  # sum of squared deviations from the subsample mean
    var /= count - 1.0
    np.maximum(var, 0.0, out=var)
    np.sqrt(var, out=var)
    mean += mu
    degenerate = var == 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(mean, var, out=mean)
    if degenerate.any():  # mean / 0 gave ±inf, or nan for 0 / 0
        mean[degenerate & np.isnan(mean)] = 0.0
    return mean


def pbo_cscv(trial_returns: pd.DataFrame | np.ndarray, n_splits: int = 16) -> PBOResult:
    """Estimate the probability of backtest overfitting of a strategy search by CSCV.

    Parameters
    ----------
    trial_returns
        T×N matrix of per-bar returns: rows are time (in order), columns are the
        N trials of one search, all on the same bars. No NaN allowed (fill bars
        without a position with 0).
    n_splits
        S, the number of contiguous row blocks; even, >= 2. T need not be a
        multiple of S: blocks then differ in length by one row (``np.array_split``).
        S = 16 gives 12,870 combinations.

    Returns
    -------
    PBOResult
        PBO, the logits and the performance-degradation figures.

    Notes
    -----
    Trials are ranked by per-period Sharpe ``mean / std(ddof=1)``. A trial with
    no variance in a subsample scores 0 if its mean is 0 and ±inf otherwise. The
    IS winner is the first trial with the highest IS Sharpe; its OOS rank is
    1-based with ties sharing the average rank, and ω = rank / (N + 1).

    Raises
    ------
    ConfigurationError
        If S is odd or < 2, N < 2, T < S, a half has fewer than 2 rows, or the
        matrix holds NaN/inf.
    """
    x = _validate(trial_returns, n_splits)
    t, n = x.shape
    s = int(n_splits)

    sizes = np.full(s, t // s)
    sizes[: t % s] += 1  # the np.array_split layout: the first T mod S blocks get one more row
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    mu = x.mean(axis=0)
    dev = x - mu
    block_sum = np.add.reduceat(dev, starts, axis=0)  # S × N
    block_sq = np.add.reduceat(dev * dev, starts, axis=0)
    block_n = sizes.astype(float)
    total_sum, total_sq, total_n = block_sum.sum(axis=0), block_sq.sum(axis=0), float(t)
    block_stats = np.hstack([block_sum, block_sq])  # S × 2N: one matrix product per chunk

    combos = np.array(list(itertools.combinations(range(s), s // 2)), dtype=np.intp)
    n_comb = combos.shape[0]
    mask = np.zeros((n_comb, s))
    mask[np.arange(n_comb)[:, None], combos] = 1.0

    logits = np.empty(n_comb)
    is_best = np.empty(n_comb)
    oos_best = np.empty(n_comb)
    chunk = max(1, _CELLS_PER_CHUNK // n)
    for lo in range(0, n_comb, chunk):
        m = mask[lo : lo + chunk]
        rows = np.arange(m.shape[0])
        cnt_is = (m @ block_n)[:, None]
        sums = m @ block_stats  # IS sums and sums of squares side by side
        sum_is, sq_is = sums[:, :n], sums[:, n:]
        sum_oos = total_sum - sum_is
        sq_oos = total_sq - sq_is
        sr_is = _sharpe_inplace(sum_is, sq_is, cnt_is, mu)
        sr_oos = _sharpe_inplace(sum_oos, sq_oos, total_n - cnt_is, mu)
        best = np.argmax(sr_is, axis=1)
        value = sr_oos[rows, best][:, None]
        rank = (sr_oos < value).sum(axis=1) + ((sr_oos == value).sum(axis=1) + 1) / 2.0
        omega = rank / (n + 1.0)
        logits[lo : lo + chunk] = np.log(omega / (1.0 - omega))
        is_best[lo : lo + chunk] = sr_is[rows, best]
        oos_best[lo : lo + chunk] = value[:, 0]

    finite = np.isfinite(is_best) & np.isfinite(oos_best)
    slope = intercept = math.nan
    if finite.sum() >= 2 and np.ptp(is_best[finite]) > 0:
        slope, intercept = (float(v) for v in np.polyfit(is_best[finite], oos_best[finite], 1))
    return PBOResult(
        pbo=float(np.mean(logits <= 0.0)),
        logits=logits,
        n_combinations=int(n_comb),
        n_splits=s,
        n_trials=int(n),
        is_sharpes=is_best,
        oos_sharpes=oos_best,
        degradation_slope=slope,
        degradation_intercept=intercept,
        prob_oos_loss=float(np.mean(oos_best < 0.0)),
    )
