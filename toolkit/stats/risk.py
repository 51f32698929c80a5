"""Tail-risk figures: daily returns, historical VaR and CVaR, the worst period.

VaR and CVaR are reported as **positive loss fractions**: a 99% VaR of 0.05
means that 1% of the periods lost 5% or more. They are computed on whatever
periodicity is passed in; pass ``to_daily_returns(returns)`` for daily figures.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from toolkit.errors import ConfigurationError
from toolkit.stats.metrics import as_float_array

__all__ = ["historical_cvar", "historical_var", "to_daily_returns", "worst_period"]


def to_daily_returns(returns: pd.Series) -> pd.Series:
    """Compound per-bar returns into UTC calendar-day returns.

    Each bar is assigned to the UTC date of its index label (the bar's open
    time in this toolkit); a day's return is ``prod(1 + r) - 1`` over its bars.
    Days without any bar are left out, not filled with 0. A tz-naive index is
    taken to be UTC (the vectorbt convention); a tz-aware one is converted.

    Parameters
    ----------
    returns
        Simple per-bar returns indexed by bar timestamps.

    Returns
    -------
    pandas.Series
        Daily returns indexed by tz-aware UTC midnights, named ``returns``' name.

    Raises
    ------
    ConfigurationError
        If ``returns`` is not a Series with a DatetimeIndex, or holds NaN/inf.
    """
    if not isinstance(returns, pd.Series) or not isinstance(returns.index, pd.DatetimeIndex):
        found = type(returns.index).__name__ if isinstance(returns, pd.Series) else type(returns).__name__
        raise ConfigurationError("returns", "a Series with a DatetimeIndex", found)
    values = as_float_array(returns)
    index = returns.index
    index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
    growth = pd.Series(1.0 + values, index=index)
    days = index.floor("D")
    daily = growth.groupby(days).prod() - 1.0
    daily.index = pd.DatetimeIndex(daily.index, name="date")
    daily.name = returns.name
    return daily


def _check_level(level: float) -> float:
    try:
        value = float(level)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError("level", "a confidence level strictly between 0 and 1", level) from exc
    if not 0.0 < value < 1.0:
        raise ConfigurationError("level", "a confidence level strictly between 0 and 1", level)
    return value


def historical_var(returns: pd.Series | np.ndarray, level: float = 0.99) -> float:
    """Compute the historical value at risk as a positive loss fraction.

    ``VaR = -quantile(returns, 1 - level)`` with linear interpolation between
    order statistics (numpy's default). A negative value means even that tail
    quantile is a gain.

    Parameters
    ----------
    returns
        Simple returns of any periodicity (e.g. from ``to_daily_returns``).
    level
        Confidence level in (0, 1), e.g. 0.99.

    Returns
    -------
    float
        The loss fraction; ``nan`` for no returns.
    """
    lvl = _check_level(level)
    arr = as_float_array(returns)
    if arr.size == 0:
        return math.nan
    return float(-np.quantile(arr, 1.0 - lvl))


def historical_cvar(returns: pd.Series | np.ndarray, level: float = 0.99) -> float:
    """Compute the historical conditional VaR (expected shortfall) as a positive loss fraction.

    ``CVaR = -mean(r[r <= q])`` where ``q = quantile(returns, 1 - level)`` as in
    ``historical_var``; the tail always holds at least the worst return, so
    ``CVaR >= VaR``.

    Returns
    -------
    float
        The mean tail loss; ``nan`` for no returns.
    """
    lvl = _check_level(level)
    arr = as_float_array(returns)
    if arr.size == 0:
        return math.nan
    q = max(float(np.quantile(arr, 1.0 - lvl)), float(arr.min()))  # never an empty tail
    return float(-arr[arr <= q].mean())


def worst_period(returns: pd.Series | np.ndarray) -> float:
    """Return the lowest single-period return (e.g. -0.12); ``nan`` for no returns."""
    arr = as_float_array(returns)
    return float(arr.min()) if arr.size else math.nan
