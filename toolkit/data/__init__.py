"""Market data: the bar store, resampling, the 24/7 calendar and quality checks."""

from toolkit.data.resample import bars_per_year, resample_ohlcv, timeframe_minutes
from toolkit.data.store import BarStore, load_bars, read_bars_file, symbol_key

__all__ = [
    "BarStore",
    "bars_per_year",
    "load_bars",
    "read_bars_file",
    "resample_ohlcv",
    "symbol_key",
    "timeframe_minutes",
]
