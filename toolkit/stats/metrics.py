"""Performance metrics of a strategy's per-bar returns (empyrical style).

Every function is pure and takes the same first argument: ``returns``, the simple
per-bar returns of the strategy's equity (``equity[t] / equity[t-1] - 1``) as a
pandas Series indexed by UTC timestamps, or as a 1-D array. Annualised metrics
take ``periods_per_year`` explicitly (crypto trades 365 days a year, e.g.
``toolkit.data.bars_per_year("15m") == 35040``); nothing defaults to 252.

Conventions
-----------
- Returns must be finite; NaN or inf is rejected with a ``ConfigurationError``
  (drop or fill them before calling). Compounding metrics also reject returns
  below -1 (an equity cannot fall below zero).
- The equity curve starts at 1 *before* the first return, so a loss on the first
  bar is a drawdown from that initial peak.
- Metrics that are undefined for the input (too few observations, zero
  dispersion) return ``nan`` rather than raising.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import ConfigurationError

__all__ = [
    "annual_volatility",
    "cagr",
    "calmar_ratio",
    "drawdown_series",
    "expectancy",
    "exposure",
    "max_drawdown",
    "max_drawdown_duration",
    "max_drawdown_duration_time",
    "profit_factor",
    "sharpe_ratio",
    "sortino_ratio",
    "summary",
    "total_return",
    "turnover",
    "win_rate",
]

SUMMARY_KEYS: tuple[str, ...] = (
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_bars",
    "max_drawdown_days",
    "win_rate",
    "profit_factor",
    "expectancy",
    "exposure",
    "turnover",
    "trade_count",
    "n_obs",
)

# Relative tolerance under which an equity counts as back at its peak (guards the
# drawdown duration against round-off such as 1.1 * (1 - 0.1 / 1.1) != 1.0).
_RECOVERY_RTOL = 1e-12


# --------------------------------------------------------------------------- input helpers
def as_float_array(values: Any, name: str = "returns") -> np.ndarray:
    """Return ``values`` as a finite 1-D float array or raise ``ConfigurationError``."""
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise ConfigurationError(name, "a 1-D Series or array", f"DataFrame with shape {values.shape}")
        values = values.iloc[:, 0]
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(name, "numeric values", type(values).__name__) from exc
    if arr.ndim != 1:
        raise ConfigurationError(name, "a 1-D Series or array", f"array with shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ConfigurationError(name, "finite numbers (no NaN/inf)", f"{bad} non-finite value(s)")
    return arr


def check_periods_per_year(periods_per_year: float) -> float:
    """Return ``periods_per_year`` as a float or raise if it is not a positive finite number."""
    try:
        ppy = float(periods_per_year)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError("periods_per_year", "a positive number", periods_per_year) from exc
    if not math.isfinite(ppy) or ppy <= 0:
        raise ConfigurationError("periods_per_year", "a positive finite number", periods_per_year)
    return ppy


def _compoundable(returns: Any) -> np.ndarray:
    arr = as_float_array(returns)
    if arr.size and arr.min() < -1.0:
        raise ConfigurationError("returns", "simple returns >= -1", float(arr.min()))
    return arr


def _equity(arr: np.ndarray) -> np.ndarray:
    """Equity curve of length n + 1 starting at 1 before the first return."""
    return np.concatenate(([1.0], np.cumprod(1.0 + arr)))


# --------------------------------------------------------------------------- return metrics
def total_return(returns: pd.Series | np.ndarray) -> float:
    """Compute the compounded total return ``prod(1 + r) - 1`` (0.0 for no returns)."""
    arr = _compoundable(returns)
    return float(np.prod(1.0 + arr) - 1.0)


def cagr(returns: pd.Series | np.ndarray, periods_per_year: float) -> float:
    """Compute the compound annual growth rate.

    Parameters
    ----------
    returns
        Simple per-bar returns.
    periods_per_year
        Bars per year (365-day years), e.g. 35040 for 15-minute bars.

    Returns
    -------
    float
        ``(1 + total_return) ** (1 / years) - 1`` with ``years = n / periods_per_year``;
        -1.0 if the equity was wiped out, ``inf`` when the annualised growth
        overflows a float, ``nan`` for no returns.
    """
    ppy = check_periods_per_year(periods_per_year)
    arr = _compoundable(returns)
    if arr.size == 0:
        return math.nan
    growth = float(np.prod(1.0 + arr))
    if growth <= 0.0:
        return -1.0
    years = arr.size / ppy
    exponent = math.log(growth) / years
    # A short, strongly profitable sample annualises beyond float range: report inf.
    return math.inf if exponent > 709.0 else float(math.expm1(exponent))


def annual_volatility(returns: pd.Series | np.ndarray, periods_per_year: float) -> float:
    """Compute the annualised volatility ``std(r, ddof=1) * sqrt(periods_per_year)`` (nan if n < 2)."""
    ppy = check_periods_per_year(periods_per_year)
    arr = as_float_array(returns)
    if arr.size < 2:
        return math.nan
    return float(np.std(arr, ddof=1) * math.sqrt(ppy))


#: a standard deviation at most this share of the mean is float rounding, not variation (Sharpe undefined)
_ROUNDING = 1e-12


def sharpe_ratio(
    returns: pd.Series | np.ndarray, periods_per_year: float = 1.0, risk_free: float = 0.0
) -> float:
    """Compute the Sharpe ratio ``mean(r - rf) / std(r, ddof=1) * sqrt(periods_per_year)``.

    Parameters
    ----------
    returns
        Simple per-bar returns.
    periods_per_year
        Bars per year. The default 1.0 gives the per-period (non-annualised)
        Sharpe ratio that PSR, DSR and MinTRL take.
    risk_free
        Risk-free rate *per bar*, subtracted from every return.

    Returns
    -------
    float
        The Sharpe ratio; ``nan`` when there are fewer than 2 returns or they do
        not vary measurably (a standard deviation within float rounding of the
        mean, ``std <= 1e-12·|mean|``, is rounding noise, not variation).
    """
    ppy = check_periods_per_year(periods_per_year)
    arr = as_float_array(returns)
    if arr.size < 2 or np.ptp(arr) == 0.0:
        return math.nan
    excess = arr - float(risk_free)
    excess = excess / float(np.max(np.abs(excess)))  # the ratio is scale-free; this keeps tiny returns' squares normal
    std = float(np.std(excess, ddof=1))
    if std <= _ROUNDING * abs(float(np.mean(excess))) or not math.isfinite(std):
        return math.nan
    return float(np.mean(excess) / std * math.sqrt(ppy))


def sharpe_ratios(returns: np.ndarray, periods_per_year: float = 1.0) -> np.ndarray:
    """Compute :func:`sharpe_ratio` of every column of a 2-D array of per-bar returns at once.

    A column with fewer than 2 rows or without variation gives ``nan``, as ``sharpe_ratio`` does.
    """
    ppy = check_periods_per_year(periods_per_year)
    arr = np.asarray(returns, dtype="float64")
    if arr.ndim != 2:
        raise ValueError(f"returns: expected a 2-D array (bars x columns), found {arr.ndim} dimension(s)")
    if arr.shape[0] < 2:
        return np.full(arr.shape[1], np.nan)
    flat = np.ptp(arr, axis=0) == 0.0
    top = np.max(np.abs(arr), axis=0)
    arr = arr / np.where(top > 0, top, 1.0)  # scale-free ratio; keeps tiny returns' squares out of underflow
    mu = arr.mean(axis=0)
    sd = arr.std(axis=0, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where((sd > _ROUNDING * np.abs(mu)) & (sd > 0) & ~flat & np.isfinite(sd),
                       mu / sd * math.sqrt(ppy), np.nan)
    return out


def sortino_ratio(returns: pd.Series | np.ndarray, periods_per_year: float, target: float = 0.0) -> float:
    """Compute the annualised Sortino ratio.

    The downside deviation is ``sqrt(mean(min(r - target, 0) ** 2))`` over *all*
    bars; the ratio is ``mean(r - target) / downside * sqrt(periods_per_year)``.

    Returns
    -------
    float
        The ratio; ``inf`` when no bar falls below ``target`` and the mean excess
        is positive, ``nan`` when n < 2 or the ratio is otherwise undefined.
    """
    ppy = check_periods_per_year(periods_per_year)
    arr = as_float_array(returns)
    if arr.size < 2:
        return math.nan
    excess = arr - float(target)
    downside = float(np.sqrt(np.mean(np.minimum(excess, 0.0) ** 2)))
    mean = float(np.mean(excess))
    if downside == 0.0:
        return math.inf if mean > 0 else math.nan
    return float(mean / downside * math.sqrt(ppy))


# --------------------------------------------------------------------------- drawdowns
def drawdown_series(returns: pd.Series | np.ndarray) -> pd.Series:
    """Compute the drawdown after each bar: ``equity / running_peak - 1`` (values <= 0).

    The running peak includes the initial equity of 1 before the first bar. The
    result keeps the index of a Series input (a RangeIndex for an array).
    """
    arr = _compoundable(returns)
    equity = _equity(arr)
    peak = np.maximum.accumulate(equity)
    with np.errstate(invalid="ignore", divide="ignore"):
        dd = np.where(peak > 0, equity / peak - 1.0, -1.0)
    index = returns.index if isinstance(returns, pd.Series) else pd.RangeIndex(arr.size)
    return pd.Series(np.minimum(dd[1:], 0.0), index=index, name="drawdown")


def max_drawdown(returns: pd.Series | np.ndarray) -> float:
    """Compute the maximum drawdown as a negative fraction (e.g. -0.23); 0.0 if none."""
    dd = drawdown_series(returns)
    return float(dd.min()) if len(dd) else 0.0


def _drawdown_spans(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (start, end) equity positions of each underwater bar's episode.

    Positions run 0..n over the equity curve (0 = before the first bar). For each
    underwater position i, ``start`` is its peak's position and ``end`` is
    ``min(i + 1, n)``: the recovery position if i + 1 recovers, else the end.
    """
    equity = _equity(arr)
    n = arr.size
    peak = np.maximum.accumulate(equity)
    underwater = equity < peak * (1.0 - _RECOVERY_RTOL)
    pos = np.arange(n + 1)
    peak_pos = np.maximum.accumulate(np.where(underwater, 0, pos))
    idx = np.flatnonzero(underwater)
    return peak_pos[idx], np.minimum(idx + 1, n)


def max_drawdown_duration(returns: pd.Series | np.ndarray) -> int:
    """Compute the length in bars of the longest drawdown.

    A drawdown runs from the bar at which the equity made its peak to the first
    bar at which it is back at (or above) that peak, or to the last bar when it
    has not recovered. Example: returns ``[0.1, -0.1, 0.05, 0.1]`` peak after bar
    0 and recover at bar 3: 3 bars. No drawdown gives 0.
    """
    arr = _compoundable(returns)
    start, end = _drawdown_spans(arr)
    return int((end - start).max()) if start.size else 0


def max_drawdown_duration_time(returns: pd.Series) -> pd.Timedelta:
    """Compute the wall-clock length of the longest drawdown of a time-indexed series.

    Each return is stamped with its index label; the initial equity (the peak for
    a loss on the first bar) is stamped one median bar spacing before the first
    label (zero spacing for a single observation). Durations are measured between
    those stamps, so index gaps count at their real length.

    Raises
    ------
    ConfigurationError
        If ``returns`` is not a Series with a monotonic DatetimeIndex.
    """
    if not isinstance(returns, pd.Series) or not isinstance(returns.index, pd.DatetimeIndex):
        found = type(returns.index).__name__ if isinstance(returns, pd.Series) else type(returns).__name__
        raise ConfigurationError("returns", "a Series with a DatetimeIndex", found)
    if not returns.index.is_monotonic_increasing:
        raise ConfigurationError("returns.index", "increasing timestamps", "an unsorted index")
    arr = _compoundable(returns)
    start, end = _drawdown_spans(arr)
    if start.size == 0:
        return pd.Timedelta(0)
    stamps = returns.index.asi8.astype(np.int64)  # nanoseconds (any unit is converted below)
    unit = np.datetime_data(returns.index.values.dtype)[0]
    step = int(np.median(np.diff(stamps))) if stamps.size > 1 else 0
    times = np.concatenate(([stamps[0] - step], stamps))
    longest = int((times[end] - times[start]).max())
    return pd.Timedelta(longest, unit=unit)


def calmar_ratio(returns: pd.Series | np.ndarray, periods_per_year: float) -> float:
    """Compute ``cagr / |max_drawdown|``; ``nan`` when there is no drawdown or no returns."""
    mdd = max_drawdown(returns)
    if mdd >= 0.0:
        return math.nan
    return float(cagr(returns, periods_per_year) / abs(mdd))


# --------------------------------------------------------------------------- trades and positions
def win_rate(trade_pnl: pd.Series | np.ndarray) -> float:
    """Compute the share of trades with a strictly positive PnL (``nan`` with no trades)."""
    arr = as_float_array(trade_pnl, "trade_pnl")
    return float(np.mean(arr > 0)) if arr.size else math.nan


def profit_factor(trade_pnl: pd.Series | np.ndarray) -> float:
    """Compute gross wins / gross losses of per-trade returns or PnLs.

    Returns
    -------
    float
        ``inf`` when there are wins but no loss, ``nan`` with no trades or when
        every trade is exactly flat.
    """
    arr = as_float_array(trade_pnl, "trade_pnl")
    if arr.size == 0:
        return math.nan
    wins = float(arr[arr > 0].sum())
    losses = float(-arr[arr < 0].sum())
    if losses == 0.0:
        return math.inf if wins > 0 else math.nan
    return wins / losses


def expectancy(trade_pnl: pd.Series | np.ndarray) -> float:
    """Compute the mean per-trade return or PnL (``nan`` with no trades)."""
    arr = as_float_array(trade_pnl, "trade_pnl")
    return float(np.mean(arr)) if arr.size else math.nan


def exposure(positions: pd.Series | np.ndarray) -> float:
    """Compute the share of bars holding a non-zero position (``nan`` for no bars)."""
    arr = as_float_array(positions, "positions")
    return float(np.mean(arr != 0)) if arr.size else math.nan


def turnover(positions: pd.Series | np.ndarray, periods_per_year: float) -> float:
    """Compute the annualised turnover ``sum(|Δposition|) * periods_per_year / n``.

    Positions are fractions of equity (1.0 = fully long). The book is flat before
    the first bar, so the initial entry counts. A strategy that flips from +1 to
    -1 once a day on daily bars turns over 2 * 365 = 730 per year.
    """
    ppy = check_periods_per_year(periods_per_year)
    arr = as_float_array(positions, "positions")
    if arr.size == 0:
        return math.nan
    traded = float(np.abs(np.diff(arr, prepend=0.0)).sum())
    return traded * ppy / arr.size


# --------------------------------------------------------------------------- summary
def summary(
    returns: pd.Series | np.ndarray,
    positions: pd.Series | np.ndarray | None,
    trade_pnl: pd.Series | np.ndarray | None,
    periods_per_year: float,
) -> dict[str, float]:
    """Compute every metric of a backtest as a JSON-friendly dict of plain floats.

    Parameters
    ----------
    returns
        Simple per-bar returns of the strategy's equity.
    positions
        Per-bar positions as fractions of equity, or None (exposure and turnover
        are then ``nan``).
    trade_pnl
        Per-trade returns or PnLs, or None (treated as no trades).
    periods_per_year
        Bars per year (365-day years).

    Returns
    -------
    dict[str, float]
        Keys, in order: total_return, cagr, volatility, sharpe (annualised),
        sortino, calmar, max_drawdown, max_drawdown_bars, max_drawdown_days,
        win_rate, profit_factor, expectancy, exposure, turnover, trade_count,
        n_obs. ``max_drawdown_days`` is wall-clock time for a DatetimeIndex and
        ``bars * 365 / periods_per_year`` otherwise. Values may be nan or inf.
    """
    ppy = check_periods_per_year(periods_per_year)
    arr = _compoundable(returns)
    trades = np.empty(0) if trade_pnl is None else as_float_array(trade_pnl, "trade_pnl")
    bars = max_drawdown_duration(arr)
    if isinstance(returns, pd.Series) and isinstance(returns.index, pd.DatetimeIndex):
        days = max_drawdown_duration_time(returns) / pd.Timedelta(days=1)
    else:
        days = bars * 365.0 / ppy
    out: dict[str, float] = {
        "total_return": total_return(arr),
        "cagr": cagr(arr, ppy),
        "volatility": annual_volatility(arr, ppy),
        "sharpe": sharpe_ratio(arr, ppy),
        "sortino": sortino_ratio(arr, ppy),
        "calmar": calmar_ratio(arr, ppy),
        "max_drawdown": max_drawdown(arr),
        "max_drawdown_bars": bars,
        "max_drawdown_days": days,
        "win_rate": win_rate(trades),
        "profit_factor": profit_factor(trades),
        "expectancy": expectancy(trades),
        "exposure": math.nan if positions is None else exposure(positions),
        "turnover": math.nan if positions is None else turnover(positions, ppy),
        "trade_count": trades.size,
        "n_obs": arr.size,
    }
    return {key: float(out[key]) for key in SUMMARY_KEYS}
