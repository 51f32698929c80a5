"""Market data: the bar store, resampling, the 24/7 calendar and quality checks.

The names below are imported on first use (PEP 562), so importing a module of this package (the
``toolkit`` entry point mounts ``toolkit.data.quality_cli`` and ``fetch_cli``) does not import pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.lazy import lazy_attributes

if TYPE_CHECKING:
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

_HOME = {"bars_per_year": "resample", "resample_ohlcv": "resample", "timeframe_minutes": "resample",
         "BarStore": "store", "load_bars": "store", "read_bars_file": "store", "symbol_key": "store"}


__getattr__ = lazy_attributes(__name__, _HOME)
