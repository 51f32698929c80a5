"""Probabilistic and deflated Sharpe ratios and the minimum track record length.

References
----------
- Bailey, D. H. and López de Prado, M. (2012), "The Sharpe Ratio Efficient
  Frontier", Journal of Risk 15(2): PSR and MinTRL.
- Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe Ratio:
  Correcting for Selection Bias, Backtest Overfitting and Non-Normality",
  Journal of Portfolio Management 40(5): DSR and the expected maximum Sharpe.

Conventions (read before feeding numbers in)
--------------------------------------------
- Every Sharpe ratio here is **per period** (per bar), never annualised: the
  benchmark ``sr_benchmark`` and the ``trial_sharpes`` must be in the same units
  as ``sharpe_ratio(returns)`` with ``periods_per_year=1``. Divide an annualised
  Sharpe by ``sqrt(periods_per_year)`` (and an annualised variance by
  ``periods_per_year``) before calling.
- The Sharpe ratio is ``mean / std`` with the sample standard deviation
  (``ddof=1``), as in ``toolkit.stats.metrics.sharpe_ratio``.
- Skewness γ3 and kurtosis γ4 are the **population** (biased, ``ddof=0``)
  standardised moments ``m3 / m2**1.5`` and ``m4 / m2**2`` of the returns, the
  plug-in estimators the papers use. γ4 is the **raw** kurtosis (3 for a normal
  distribution), not the excess kurtosis that vectorbt and quantstats feed into
  the same formulas. With population moments γ4 >= 1 + γ3² always holds, so the
  variance term ``1 - γ3·SR + (γ4 - 1)/4·SR²`` is never negative.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
import pandas as pd

from toolkit.errors import ConfigurationError
from toolkit.stats.metrics import as_float_array

__all__ = [
    "EULER_GAMMA",
    "deflated_sharpe_ratio",
    "expected_max_sharpe",
    "min_track_record_length",
    "min_track_record_length_from_moments",
    "probabilistic_sharpe_ratio",
    "psr_from_moments",
    "sharpe_moments",
]

EULER_GAMMA = 0.5772156649015329
_NORMAL = NormalDist()


def sharpe_moments(returns: pd.Series | np.ndarray) -> tuple[float, float, float, int]:
    """Compute the per-period Sharpe ratio and the moments PSR needs.

    Returns
    -------
    tuple[float, float, float, int]
        ``(sr, skew, kurt, n)``: ``sr = mean / std(ddof=1)``; ``skew`` and ``kurt``
        are the population standardised third and fourth moments (raw kurtosis,
        3 for a normal); ``n`` the number of returns. The three floats are
        ``nan`` when n < 2 or the returns do not vary.
    """
    arr = as_float_array(returns)
    n = int(arr.size)
    if n < 2 or np.ptp(arr) == 0.0:
        return math.nan, math.nan, math.nan, n
    arr = arr / float(np.max(np.abs(arr)))  # every output is scale-free; tiny returns' powers stay out of underflow
    dev = arr - arr.mean()
    m2 = float(np.mean(dev**2))
    m3 = float(np.mean(dev**3))
    m4 = float(np.mean(dev**4))
    if m2 == 0.0:
        return math.nan, math.nan, math.nan, n
    sr = float(arr.mean() / np.std(arr, ddof=1))
    return sr, m3 / m2**1.5, m4 / m2**2, n


def _sr_variance_term(sr: float, skew: float, kurt: float) -> float:
    return 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr**2


def psr_from_moments(sr: float, skew: float, kurt: float, n: float, sr_benchmark: float = 0.0) -> float:
    """Compute the PSR from precomputed moments (see ``probabilistic_sharpe_ratio``).

    ``n`` may be fractional (e.g. a minimum track record length). Returns ``nan``
    when any input is nan, n < 2, or the variance term is not positive.
    """
    values = (sr, skew, kurt, n, sr_benchmark)
    if any(math.isnan(v) for v in values) or n < 2:
        return math.nan
    term = _sr_variance_term(sr, skew, kurt)
    if term <= 0.0:
        return math.nan
    z = (sr - sr_benchmark) * math.sqrt(n - 1.0) / math.sqrt(term)
    return float(_NORMAL.cdf(z))


def probabilistic_sharpe_ratio(returns: pd.Series | np.ndarray, sr_benchmark: float = 0.0) -> float:
    """Compute the probabilistic Sharpe ratio (Bailey & López de Prado 2012).

    ``PSR = Φ((SR − SR*)·√(n−1) / √(1 − γ3·SR + (γ4−1)/4·SR²))``: the
    probability that the true Sharpe ratio exceeds ``sr_benchmark`` given the
    sample's length, skewness and (raw) kurtosis.

    Parameters
    ----------
    returns
        Simple per-bar returns.
    sr_benchmark
        The benchmark Sharpe SR*, **per period** (not annualised).

    Returns
    -------
    float
        A probability in [0, 1]; ``nan`` when n < 2 or the returns do not vary.
    """
    sr, skew, kurt, n = sharpe_moments(returns)
    return psr_from_moments(sr, skew, kurt, n, float(sr_benchmark))


def _trial_array(trial_sharpes: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    return as_float_array(trial_sharpes, "trial_sharpes")


def expected_max_sharpe(
    trial_sharpes: Sequence[float] | np.ndarray | pd.Series,
    n_trials: int | None = None,
    trial_sharpe_variance: float | None = None,
) -> float:
    """Compute the expected maximum Sharpe ratio of N unskilled trials (DSR paper, eq. 6).

    ``E[max SR] = √V·((1−γE)·Φ⁻¹(1−1/N) + γE·Φ⁻¹(1−1/(N·e)))`` where γE is the
    Euler–Mascheroni constant. The trials' true Sharpe ratios are taken to be 0
    (the null hypothesis), so the trials' mean Sharpe does not enter.

    Parameters
    ----------
    trial_sharpes
        Per-period Sharpe ratios of every trial of the search (the selected one
        included). Must be finite.
    n_trials
        Number of independent trials N; defaults to ``len(trial_sharpes)``. Give
        it when the trial ledger knows more trials than the Sharpes passed in; it
        may not be smaller than ``len(trial_sharpes)``.
    trial_sharpe_variance
        V, the variance of the trials' per-period Sharpe ratios; defaults to the
        sample variance (``ddof=1``) of ``trial_sharpes``.

    Returns
    -------
    float
        The expected maximum per-period Sharpe; 0.0 when N = 1 (no selection
        took place, so the benchmark is the null SR = 0).

    Raises
    ------
    ConfigurationError
        If N < 1, N < len(trial_sharpes), V < 0 or non-finite, or V is needed but
        fewer than 2 trial Sharpes are given.
    """
    trials = _trial_array(trial_sharpes)
    if n_trials is None and trials.size == 0:
        raise ConfigurationError("trial_sharpes", "at least one trial Sharpe (or n_trials)", "none")
    n = trials.size if n_trials is None else n_trials
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ConfigurationError("n_trials", "an integer >= 1", n_trials)
    if n < trials.size:
        raise ConfigurationError("n_trials", f">= the {trials.size} trial Sharpes given", n)
    if trial_sharpe_variance is None:
        if n == 1:
            return 0.0
        if trials.size < 2:
            raise ConfigurationError(
                "trial_sharpe_variance", "a value when fewer than 2 trial Sharpes are given", None
            )
        variance = float(np.var(trials, ddof=1))
    else:
        variance = float(trial_sharpe_variance)
        if not math.isfinite(variance) or variance < 0:
            raise ConfigurationError("trial_sharpe_variance", "a finite number >= 0", trial_sharpe_variance)
    if n == 1:
        return 0.0
    n = int(n)
    quantiles = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n) + EULER_GAMMA * _NORMAL.inv_cdf(
        1.0 - 1.0 / (n * math.e)
    )
    return float(math.sqrt(variance) * quantiles)


def expected_max_sharpe_effective(variance: float, n_effective: float) -> float:
    """Return E[max SR] of ``n_effective`` independent skill-less trials, N real (correlated trials).

    The DSR paper's eq. 6 with a real-valued N >= 1 (``N / (1 + (N − 1)·ρ̄)`` for N trials of mean
    correlation ρ̄), floored at 0: for N close to 1 the asymptotic formula turns negative, while the
    expected maximum of about one trial is its mean, 0 under the null.
    """
    if not (math.isfinite(variance) and variance >= 0):
        raise ConfigurationError("variance", "a finite number >= 0", variance)
    if not (math.isfinite(n_effective) and n_effective >= 1):
        raise ConfigurationError("n_effective", "a number >= 1", n_effective)
    if n_effective == 1:
        return 0.0
    q = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n_effective) + EULER_GAMMA * _NORMAL.inv_cdf(
        1.0 - 1.0 / (n_effective * math.e))
    return float(math.sqrt(variance) * max(q, 0.0))


def deflated_sharpe_ratio(
    returns: pd.Series | np.ndarray,
    trial_sharpes: Sequence[float] | np.ndarray | pd.Series,
    n_trials: int | None = None,
    trial_sharpe_variance: float | None = None,
) -> float:
    """Compute the deflated Sharpe ratio (Bailey & López de Prado 2014).

    DSR is the PSR of ``returns`` against ``SR* = expected_max_sharpe(...)``: the
    probability that the selected strategy's true Sharpe exceeds what the best
    of N unskilled trials would show by luck.

    Parameters
    ----------
    returns
        Simple per-bar returns of the selected strategy.
    trial_sharpes
        Per-period Sharpe ratios of all trials (see ``expected_max_sharpe``).
    n_trials, trial_sharpe_variance
        Overrides of N and V (see ``expected_max_sharpe``).

    Returns
    -------
    float
        A probability in [0, 1]; ``nan`` when the PSR is undefined.
    """
    sr_star = expected_max_sharpe(trial_sharpes, n_trials, trial_sharpe_variance)
    return probabilistic_sharpe_ratio(returns, sr_star)


def min_track_record_length_from_moments(
    sr: float, skew: float, kurt: float, sr_benchmark: float = 0.0, alpha: float = 0.05
) -> float:
    """Compute the MinTRL from precomputed moments (see ``min_track_record_length``)."""
    if not 0.0 < alpha < 1.0:
        raise ConfigurationError("alpha", "a probability strictly between 0 and 1", alpha)
    if any(math.isnan(v) for v in (sr, skew, kurt, sr_benchmark)):
        return math.nan
    if sr <= sr_benchmark:
        return math.inf
    z = _NORMAL.inv_cdf(1.0 - alpha)
    return float(1.0 + _sr_variance_term(sr, skew, kurt) * (z / (sr - sr_benchmark)) ** 2)


def min_track_record_length(
    returns: pd.Series | np.ndarray, sr_benchmark: float = 0.0, alpha: float = 0.05
) -> float:
    """Compute the minimum track record length (Bailey & López de Prado 2012).

    ``MinTRL = 1 + (1 − γ3·SR + (γ4−1)/4·SR²)·(Φ⁻¹(1−α) / (SR − SR*))²``: the
    number of observations (bars) needed for the PSR against ``sr_benchmark`` to
    reach ``1 − alpha`` if the sample's moments persisted.

    Parameters
    ----------
    returns
        Simple per-bar returns.
    sr_benchmark
        Benchmark Sharpe SR*, per period.
    alpha
        Significance level in (0, 1).

    Returns
    -------
    float
        Observations (fractional); ``inf`` when SR <= SR*, ``nan`` when the
        Sharpe ratio is undefined.
    """
    sr, skew, kurt, _ = sharpe_moments(returns)
    return min_track_record_length_from_moments(sr, skew, kurt, float(sr_benchmark), alpha)
