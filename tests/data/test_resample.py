"""Timeframes and OHLCV resampling against a naive loop-based reference."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from toolkit.data import load_bars
from toolkit.data.resample import bars_per_year, resample_ohlcv, timeframe_minutes, timeframe_offset
from toolkit.errors import ConfigurationError

NS_PER_MIN = 60 * 10**9


def _reference(bars: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Aggregate row by row: bucket = open time floored to the timeframe since the Unix epoch (UTC)."""
    step = timeframe_minutes(timeframe) * NS_PER_MIN
    buckets: dict[int, dict[str, float]] = {}
    for ts, row in zip(bars.index, bars.to_dict("records"), strict=True):
        key = (pd.Timestamp(ts).tz_convert("UTC").value // step) * step
        b = buckets.get(key)
        if b is None:
            buckets[key] = dict(row)
            continue
        for col, v in row.items():
            if col == "high":
                b[col] = max(b[col], v)
            elif col == "low":
                b[col] = min(b[col], v)
            elif col == "close":
                b[col] = v
            elif col != "open":
                b[col] += v
    keys = sorted(buckets)
    idx = pd.DatetimeIndex(pd.to_datetime(keys, unit="ns", utc=True), name="timestamp")
    return pd.DataFrame([buckets[k] for k in keys], index=idx, columns=bars.columns)


def _compare(bars: pd.DataFrame, timeframe: str) -> None:
    got = resample_ohlcv(bars, timeframe)
    want = _reference(bars, timeframe)
    assert got.index.equals(want.index), timeframe
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_freq=False, rtol=1e-12)


@pytest.fixture(scope="module")
def real_1m() -> pd.DataFrame:
    # 3 days of real BTC/USDT 1m bars (with the extra columns), starting mid-day
    return load_bars("BTC/USDT", "1m", "2024-02-28 13:07", "2024-03-02 09:00")


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "4h", "1d"])
def test_resample_matches_loop_on_real_bars(real_1m: pd.DataFrame, timeframe: str) -> None:
    assert {"quote_volume", "trades"} <= set(real_1m.columns)
    _compare(real_1m, timeframe)


@pytest.mark.parametrize("timeframe", ["5m", "15m", "1h", "4h", "1d"])
def test_resample_matches_loop_with_gaps(real_1m: pd.DataFrame, timeframe: str) -> None:
    rng = np.random.default_rng(5)
    keep = rng.random(len(real_1m)) > 0.3  # 30 % of bars missing at random
    t = real_1m.index
    # and a whole empty 4h bucket: 2024-02-29 04:00-07:59 UTC
    keep &= ~((t >= "2024-02-29 04:00Z") & (t < "2024-02-29 08:00Z"))
    gappy = real_1m[keep]
    _compare(gappy, timeframe)
    out = resample_ohlcv(gappy, timeframe)
    if timeframe in ("1h", "4h"):  # a bucket without any source bar is not invented
        assert pd.Timestamp("2024-02-29 04:00Z") not in out.index


def test_left_labels_and_utc_alignment() -> None:
    idx = pd.date_range("2024-01-01 21:58", periods=10, freq="1min", tz="UTC", name="timestamp")
    px = np.arange(1.0, 11.0)
    bars = pd.DataFrame({"open": px, "high": px + 0.5, "low": px - 0.5, "close": px + 0.25,
                         "volume": np.ones(10)}, index=idx)
    five = resample_ohlcv(bars, "5m")
    # 21:58,21:59 -> bucket 21:55; 22:00..22:04 -> 22:00; 22:05..22:07 -> 22:05 (left labels)
    assert list(five.index.strftime("%H:%M")) == ["21:55", "22:00", "22:05"]
    assert list(five["open"]) == [1.0, 3.0, 8.0]
    assert list(five["close"]) == [2.25, 7.25, 10.25]
    assert list(five["volume"]) == [2.0, 5.0, 3.0]
    four = resample_ohlcv(bars, "4h")
    assert list(four.index.strftime("%H:%M")) == ["20:00"]  # 4h buckets start at 0, 4, 8 … UTC
    day = resample_ohlcv(bars, "1d")
    assert day.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    # a frame in another time zone still gets UTC-midnight days
    local = resample_ohlcv(bars.tz_convert("Asia/Kolkata"), "1d")
    assert local.index.equals(day.index) and local.equals(day)


def test_resample_empty_frame_is_empty() -> None:
    empty = pd.DataFrame(columns=["open", "high", "low", "close", "volume"],
                         index=pd.DatetimeIndex([], tz="UTC", name="timestamp"))
    assert resample_ohlcv(empty, "1h").empty


@pytest.mark.parametrize(("timeframe", "per_year"), [
    ("1m", 525_600), ("5m", 105_120), ("15m", 35_040), ("1h", 8_760), ("4h", 2_190), ("1d", 365),
])
def test_bars_per_year_is_24_7_with_365_days(timeframe: str, per_year: int) -> None:
    assert bars_per_year(timeframe) == per_year


@pytest.mark.parametrize(("timeframe", "minutes"), [("1m", 1), ("15m", 15), ("4h", 240), ("1d", 1440),
                                                    ("1w", 10080)])
def test_timeframe_minutes(timeframe: str, minutes: int) -> None:
    assert timeframe_minutes(timeframe) == minutes
    assert timeframe_offset(timeframe) == f"{minutes}min"


@pytest.mark.parametrize("bad", ["", "m", "0m", "15", "1y", "1 h", "1H", "-5m", "1.5h"])
def test_malformed_timeframe_names_the_field(bad: str) -> None:
    fn: Callable[[str], int] = timeframe_minutes
    with pytest.raises(ConfigurationError, match="timeframe: expected a count and a unit") as info:
        fn(bad)
    assert info.value.field == "timeframe" and info.value.found == bad
