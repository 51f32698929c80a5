"""Timeframes, the 24/7 calendar and OHLCV resampling.

Crypto trades every minute of every day: a year is 365 days, never 252.
Bars are labelled by their open time (left edge), in UTC.
"""

from __future__ import annotations

import re

import pandas as pd

from toolkit.errors import ConfigurationError

__all__ = [
    "BAR_COLUMNS",
    "bars_per_year",
    "resample_ohlcv",
    "timeframe_minutes",
    "timeframe_offset",
]

#: Columns every bar frame has, in order; extra columns are summed when resampling.
BAR_COLUMNS = ("open", "high", "low", "close", "volume")
_UNITS = {"m": 1, "h": 60, "d": 1440, "w": 10080}
_TF = re.compile(r"^([1-9][0-9]*)([mhdw])$")
MINUTES_PER_YEAR = 365 * 24 * 60


def timeframe_minutes(timeframe: str) -> int:
    """Return the length of ``timeframe`` (``1m``, ``15m``, ``4h``, ``1d``, ``1w``) in minutes."""
    match = _TF.match(str(timeframe))
    if not match:
        raise ConfigurationError(
            "timeframe", "a count and a unit such as 1m, 15m, 4h, 1d or 1w", timeframe
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def timeframe_offset(timeframe: str) -> str:
    """Return the pandas frequency string for ``timeframe``."""
    return f"{timeframe_minutes(timeframe)}min"


def bars_per_year(timeframe: str) -> float:
    """Return the number of bars in a 365-day year of 24/7 trading."""
    return MINUTES_PER_YEAR / timeframe_minutes(timeframe)


def resample_ohlcv(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Aggregate bars to a coarser ``timeframe``.

    open = first, high = max, low = min, close = last, and every other numeric
    column (volume, quote volume, trade counts) is summed. Buckets are aligned to
    UTC midnight (epoch), left-closed and left-labelled. A bucket with no source
    bar is dropped rather than invented: gaps stay gaps.

    Parameters
    ----------
    bars
        Frame indexed by bar open time (UTC), with at least open/high/low/close/volume.
    timeframe
        Target timeframe; must be a whole multiple of the source spacing.
    """
    minutes = timeframe_minutes(timeframe)
    if bars.empty:
        return bars.copy()
    if isinstance(bars.index, pd.DatetimeIndex) and bars.index.tz is not None:
        bars = bars.tz_convert("UTC")  # buckets follow UTC midnight, not the index's local one
    agg = {c: "sum" for c in bars.columns}
    agg.update({"open": "first", "high": "max", "low": "min", "close": "last"})
    grouped = bars.resample(
        f"{minutes}min", label="left", closed="left", origin="epoch"
    )
    out = grouped.agg(agg)
    counts = grouped["close"].count()
    return out[counts > 0]
