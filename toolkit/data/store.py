"""The Parquet bar store: bundled real data plus a user cache.

Layout: ``<root>/bars/<BASE-QUOTE>/<timeframe>/*.parquet``, each file a frame
with a ``timestamp`` column (bar open time, UTC) and OHLCV columns. The bundled
root ships inside the package; the cache root (``toolkit.config.cache_dir``)
receives fetched data. When both hold a bar, the cache wins.

A timeframe with no files of its own is resampled from the finest timeframe
that divides it (normally ``1m``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from toolkit import config
from toolkit.data.resample import BAR_COLUMNS, resample_ohlcv, timeframe_minutes
from toolkit.errors import ConfigurationError, DataError

__all__ = [
    "BarStore",
    "epoch_unit",
    "load_bars",
    "load_bars_file",
    "parse_time",
    "quote_volume",
    "read_bars_file",
    "symbol_key",
    "validate_bars",
]


def symbol_key(symbol: str) -> str:
    """Return the store key for a ccxt symbol: ``BTC/USDT`` -> ``BTC-USDT``."""
    text = str(symbol).strip().upper()
    parts = text.replace("-", "/").split("/")
    if len(parts) != 2 or not all(p.isalnum() for p in parts):
        raise ConfigurationError("symbol", "BASE/QUOTE such as BTC/USDT", symbol)
    return f"{parts[0]}-{parts[1]}"


def quote_volume(bars: pd.DataFrame) -> pd.Series:
    """Return each bar's quote-asset turnover: ``quote_volume`` when the bars have it, else ``volume × close``."""
    if "quote_volume" in bars.columns:
        return bars["quote_volume"].astype("float64")
    return (bars["volume"] * bars["close"]).astype("float64")


def epoch_unit(magnitude: float) -> str:
    """Return the unit of an integer epoch by its size: ``s``, ``ms`` (Binance), ``us`` (Binance from 2025) or ``ns``.

    Seconds stay below 1e11 until the year 5138, milliseconds below 1e14, microseconds below 1e17.
    """
    m = abs(float(magnitude))
    return "s" if m < 1e11 else "ms" if m < 1e14 else "us" if m < 1e17 else "ns"


def parse_time(value: object, name: str, *, end: bool = False) -> pd.Timestamp | None:
    """Parse a user time to a UTC timestamp.

    A date without a time means the whole day: as ``start`` it is that midnight;
    as ``end`` it is the last instant of that day (the day is included). An integer
    (or a string of digits) is an epoch whose unit is told by its size (:func:`epoch_unit`):
    ``1704067200``, ``1704067200000`` and ``1704067200000000`` are all 2024-01-01.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ConfigurationError(name, "a date such as 2024-01-31, an ISO timestamp or an epoch", value)
    text = value.strip() if isinstance(value, str) else None
    if isinstance(value, int | np.integer) or (text and text.lstrip("-").isdigit() and len(text.lstrip("-")) > 8):
        number = int(text) if text is not None else int(value)  # type: ignore[call-overload]
        try:
            return pd.Timestamp(number, unit=epoch_unit(number), tz="UTC")
        except (ValueError, OverflowError) as exc:
            raise ConfigurationError(name, "an epoch in seconds, milliseconds or microseconds", value) from exc
    try:
        ts = pd.Timestamp(value)  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(name, "a date such as 2024-01-31 or an ISO timestamp", value) from exc
    if ts is pd.NaT:
        raise ConfigurationError(name, "a date such as 2024-01-31 or an ISO timestamp", value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    date_only = isinstance(value, str) and len(value.strip()) == 10
    if end and date_only:
        ts = ts + pd.Timedelta(days=1) - pd.Timedelta(nanoseconds=1)
    return ts


def validate_bars(bars: pd.DataFrame, source: str) -> pd.DataFrame:
    """Check shape and values of a bar frame; raise ``DataError`` naming the problem.

    Requires a UTC ``DatetimeIndex`` that is strictly increasing, the OHLCV
    columns as numbers, and no missing or non-positive price.
    """
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise DataError(f"{source}: expected columns {list(BAR_COLUMNS)}, missing {missing}")
    if not isinstance(bars.index, pd.DatetimeIndex) or bars.index.tz is None:
        raise DataError(f"{source}: expected a UTC DatetimeIndex, found {type(bars.index).__name__}")
    for col in BAR_COLUMNS:
        if not pd.api.types.is_numeric_dtype(bars[col]):
            raise DataError(f"{source}: column {col!r} expected numbers, found dtype {bars[col].dtype}")
    prices = bars[["open", "high", "low", "close"]].to_numpy(dtype="float64")
    bad = ~np.isfinite(prices)
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        raise DataError(
            f"{source}: expected finite prices, found {int(bad.sum())} NaN/inf values "
            f"(first at {bars.index[row]})"
        )
    if (prices <= 0).any():
        row = int(np.argmax((prices <= 0).any(axis=1)))
        raise DataError(f"{source}: expected positive prices, found {prices[row].min()} at {bars.index[row]}")
    if not bars.index.is_monotonic_increasing or bars.index.has_duplicates:
        raise DataError(f"{source}: expected strictly increasing timestamps, found duplicates or disorder")
    return bars


def _frame_from_table(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    if "timestamp" not in frame.columns:
        raise DataError(f"{source}: expected a 'timestamp' column, found {list(frame.columns)}")
    ts = frame["timestamp"]
    if pd.api.types.is_numeric_dtype(ts):
        # integer epochs: seconds, milliseconds (Binance), microseconds (Binance from 2025) or nanoseconds
        finite = ts[np.isfinite(ts.astype("float64"))]
        unit = epoch_unit(float(finite.abs().max())) if len(finite) else "ms"
        idx = pd.to_datetime(ts, unit=unit, utc=True)
    else:
        try:
            idx = pd.to_datetime(ts, utc=True)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{source}: column 'timestamp' expected times, found {ts.iloc[0]!r}") from exc
    out = frame.drop(columns=["timestamp"])
    out.index = pd.DatetimeIndex(idx, name="timestamp").as_unit("ns")
    return out


def read_bars_file(path: str | Path) -> pd.DataFrame:
    """Read a user's own OHLCV file (Parquet or CSV with timestamp, open, high, low, close, volume)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"bars file: expected an existing file, found nothing at {p}")
    try:
        if p.suffix.lower() == ".csv":
            frame = pd.read_csv(p)
        else:
            frame = pd.read_parquet(p)
    except Exception as exc:  # pyarrow/pandas raise many types for a damaged file
        raise DataError(f"{p}: expected a readable Parquet or CSV file, found: {exc}") from exc
    bars = _frame_from_table(frame, str(p)).sort_index()
    return validate_bars(bars, str(p))


@dataclass(frozen=True)
class BarStore:
    """Bars from a list of roots; later roots override earlier ones on the same bar."""

    roots: Sequence[Path] = field(
        default_factory=lambda: (config.BUNDLED_DIR, config.cache_dir())
    )

    def _files(self, key: str, timeframe: str) -> list[Path]:
        files: list[Path] = []
        for root in self.roots:
            d = Path(root) / "bars" / key / timeframe
            if d.is_dir():
                files.extend(sorted(d.glob("*.parquet")))
        return files

    def timeframes(self, symbol: str) -> list[str]:
        """Return the timeframes stored natively for ``symbol``, finest first."""
        key = symbol_key(symbol)
        found = {
            d.name
            for root in self.roots
            if (Path(root) / "bars" / key).is_dir()
            for d in (Path(root) / "bars" / key).iterdir()
            if d.is_dir() and any(d.glob("*.parquet"))
        }
        return sorted(found, key=timeframe_minutes)

    def _read(self, key: str, timeframe: str, start: pd.Timestamp | None,
              end: pd.Timestamp | None) -> pd.DataFrame:
        frames = []
        for f in self._files(key, timeframe):
            filters = []
            if start is not None:
                filters.append(("timestamp", ">=", start))
            if end is not None:
                filters.append(("timestamp", "<=", end))
            try:
                table = pq.read_table(f, filters=filters or None)
            except (pa.ArrowException, OSError) as exc:
                raise DataError(f"{f}: expected a readable Parquet bar file, found: {exc}") from exc
            if table.num_rows:
                frames.append(_frame_from_table(table.to_pandas(), str(f)))
        if not frames:
            return pd.DataFrame(columns=list(BAR_COLUMNS), index=pd.DatetimeIndex([], tz="UTC", name="timestamp"))
        bars = pd.concat(frames)
        bars = bars[~bars.index.duplicated(keep="last")].sort_index()
        return bars

    def load(self, symbol: str, timeframe: str = "1m", start: object = None,
             end: object = None) -> pd.DataFrame:
        """Return bars for ``symbol`` at ``timeframe`` with open time in [start, end].

        Raises
        ------
        DataError
            When no bar exists in the range or the stored data is malformed.
        """
        key = symbol_key(symbol)
        minutes = timeframe_minutes(timeframe)
        t0 = parse_time(start, "start")
        t1 = parse_time(end, "end", end=True)
        if t0 is not None and t1 is not None and t1 < t0:
            raise ConfigurationError("end", f"a time after start {t0}", end)
        native = self.timeframes(symbol)
        if not native:
            raise DataError(f"{symbol}: expected bars in the store, found none (roots: {[str(r) for r in self.roots]})")
        if timeframe in native:
            source_tf = timeframe
        else:
            divisors = [tf for tf in native if minutes % timeframe_minutes(tf) == 0]
            if not divisors:
                raise DataError(f"{symbol} {timeframe}: no stored timeframe divides it (stored: {native})")
            source_tf = divisors[-1]
        # widen the read to whole target buckets so the first/last bar is complete
        r0 = None if t0 is None else t0.floor(f"{minutes}min")
        r1 = t1
        if t1 is not None and source_tf != timeframe:  # ... and the last one too
            r1 = t1.floor(f"{minutes}min") + pd.Timedelta(minutes=minutes) - pd.Timedelta(nanoseconds=1)
        bars = self._read(key, source_tf, r0, r1)
        if source_tf != timeframe:
            bars = resample_ohlcv(bars, timeframe)
        if t0 is not None:
            bars = bars[bars.index >= t0]
        if bars.empty:
            raise DataError(
                f"{symbol} {timeframe}: expected bars between {t0} and {t1}, found none "
                f"(stored {source_tf}: {self.coverage(symbol, source_tf)})"
            )
        return validate_bars(bars, f"{symbol} {timeframe}")

    def coverage(self, symbol: str, timeframe: str) -> str:
        """Describe the stored range of ``symbol`` at ``timeframe`` for messages."""
        lo, hi = None, None
        for f in self._files(symbol_key(symbol), timeframe):
            col = pq.read_table(f, columns=["timestamp"]).column(0)
            if len(col):
                a, b = pd.Timestamp(col[0].as_py()), pd.Timestamp(col[-1].as_py())
                lo = a if lo is None or a < lo else lo
                hi = b if hi is None or b > hi else hi
        return "nothing" if lo is None else f"{lo} to {hi}"

    def write(self, symbol: str, timeframe: str, bars: pd.DataFrame) -> list[Path]:
        """Merge ``bars`` into the last root (the cache), one file per UTC month.

        Existing bars with the same timestamp are replaced; each file is written
        to a temporary name and renamed, so a crash never leaves a torn file.
        """
        validate_bars(bars, f"{symbol} {timeframe} (to write)")
        root = Path(self.roots[-1]) / "bars" / symbol_key(symbol) / timeframe
        root.mkdir(parents=True, exist_ok=True)
        written = []
        months = bars.index.tz_convert("UTC").strftime("%Y-%m")
        for month, part in bars.groupby(months):
            target = root / f"{month}.parquet"
            if target.exists():
                old = _frame_from_table(pd.read_parquet(target), str(target))
                part = pd.concat([old, part])
                part = part[~part.index.duplicated(keep="last")].sort_index()
            table = part.reset_index()
            fd, tmp = tempfile.mkstemp(dir=root, suffix=".tmp")
            os.close(fd)
            table.to_parquet(tmp, index=False, compression="zstd")
            os.replace(tmp, target)
            written.append(target)
        return written


def load_bars(symbol: str, timeframe: str = "1m", start: object = None, end: object = None,
              store: BarStore | None = None) -> pd.DataFrame:
    """Load bars from the default store (bundled data plus the user cache).

    Parameters
    ----------
    symbol
        ccxt symbol such as ``BTC/USDT``.
    timeframe
        ``1m``, ``15m``, ``1h``, ``4h``, ``1d`` …; coarser ones are resampled from 1m.
    start, end
        Inclusive bounds; a bare date as ``end`` includes that whole day.

    Returns
    -------
    DataFrame indexed by tz-aware UTC bar open time, with open, high, low, close,
    volume and whatever extra columns the source carries.
    """
    return (store or BarStore()).load(symbol, timeframe, start, end)


def load_bars_file(path: str | Path, timeframe: str, start: object = None, end: object = None) -> pd.DataFrame:
    """Read a user's OHLCV file and return it at ``timeframe`` within [start, end].

    The file's own spacing (the most common step between bars) must equal
    ``timeframe`` or divide it, in which case the bars are resampled.
    """
    bars = read_bars_file(path)
    t0 = parse_time(start, "start")
    t1 = parse_time(end, "end", end=True)
    if t0 is not None:
        bars = bars[bars.index >= t0]
    if t1 is not None:
        bars = bars[bars.index <= t1]
    if len(bars) < 2:
        raise DataError(f"{path}: expected bars between {t0} and {t1}, found {len(bars)}")
    step = int(pd.Series(bars.index).diff().dropna().mode().iloc[0] / pd.Timedelta(minutes=1))
    target = timeframe_minutes(timeframe)
    if step <= 0 or target % step:
        raise DataError(f"{path}: bars every {step} min cannot make {timeframe} bars "
                        f"(expected a spacing that divides {target} min)")
    return resample_ohlcv(bars, timeframe) if step != target else bars
