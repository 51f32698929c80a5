"""The Parquet bar store: ranges, native vs resampled timeframes, user files, the cache, bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit import config
from toolkit.data import BarStore, load_bars, read_bars_file, resample_ohlcv, symbol_key
from toolkit.data.store import parse_time, validate_bars
from toolkit.errors import ConfigurationError, DataError

OHLCV = ["open", "high", "low", "close", "volume"]

# ----------------------------------------------------------------------------- ranges


def test_inclusive_range_of_1m_bars() -> None:
    bars = load_bars("BTC/USDT", "1m", "2024-01-01 00:00", "2024-01-01 00:09")
    assert len(bars) == 10
    assert bars.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert bars.index[-1] == pd.Timestamp("2024-01-01 00:09", tz="UTC")
    assert str(bars.index.tz) == "UTC" and bars.index.name == "timestamp"
    assert list(bars.columns[:5]) == OHLCV


def test_date_only_end_includes_the_whole_day() -> None:
    bars = load_bars("BTC/USDT", "1m", "2024-01-31", "2024-01-31")
    assert len(bars) == 1440
    assert bars.index[-1] == pd.Timestamp("2024-01-31 23:59", tz="UTC")
    hourly = load_bars("BTC/USDT", "1h", "2024-01-01", "2024-01-31")
    assert len(hourly) == 31 * 24


def test_parse_time() -> None:
    assert parse_time("2024-01-31", "end", end=True) == pd.Timestamp("2024-01-31 23:59:59.999999999Z")
    assert parse_time("2024-01-31", "start") == pd.Timestamp("2024-01-31", tz="UTC")
    assert parse_time("2024-01-31T10:00+02:00", "start") == pd.Timestamp("2024-01-31 08:00Z")
    assert parse_time(None, "start") is None


def test_1h_native_matches_1m_aggregate_and_15m_is_resampled() -> None:
    one_minute = load_bars("BTC/USDT", "1m", "2024-03-01", "2024-03-03")
    native = load_bars("BTC/USDT", "1h", "2024-03-01", "2024-03-03")
    assert "n_minutes" in native.columns  # the native 1h file, not a resample of 1m
    pd.testing.assert_frame_equal(native[OHLCV], resample_ohlcv(one_minute, "1h")[OHLCV],
                                  check_freq=False, rtol=1e-9)
    assert BarStore().timeframes("BTC/USDT") == ["1m", "1h", "1d"]
    fifteen = load_bars("BTC/USDT", "15m", "2024-03-01", "2024-03-03")
    assert len(fifteen) == 3 * 96 and "n_minutes" not in fifteen.columns
    pd.testing.assert_frame_equal(fifteen, resample_ohlcv(one_minute, "15m"), check_freq=False)


def test_resampled_bounds_give_only_complete_bars() -> None:
    # start and end fall inside 15m buckets: the first bar is the next whole one and the
    # last bar holds all 15 of its minutes (it used to stop at `end`)
    got = load_bars("BTC/USDT", "15m", "2024-01-01 00:07", "2024-01-01 00:20")
    assert list(got.index) == [pd.Timestamp("2024-01-01 00:15", tz="UTC")]
    minutes = load_bars("BTC/USDT", "1m", "2024-01-01 00:15", "2024-01-01 00:29")
    assert got["volume"].iloc[0] == pytest.approx(minutes["volume"].sum(), rel=1e-12)
    assert got["close"].iloc[0] == minutes["close"].iloc[-1]
    assert got["open"].iloc[0] == minutes["open"].iloc[0]


# ----------------------------------------------------------------------------- user files

def _user_frame(make_bars: Callable[..., pd.DataFrame]) -> pd.DataFrame:
    return make_bars(30, start="2024-05-01 10:00")


@pytest.mark.parametrize("stamp", ["ms", "iso"])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_read_user_files(make_bars: Callable[..., pd.DataFrame], tmp_path: Path, stamp: str,
                         fmt: str) -> None:
    bars = _user_frame(make_bars)
    table = bars.reset_index()
    if stamp == "ms":
        table["timestamp"] = bars.index.as_unit("ms").asi8
    else:
        table["timestamp"] = bars.index.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = tmp_path / f"mine.{fmt}"
    table.iloc[::-1].to_csv(path, index=False) if fmt == "csv" else table.iloc[::-1].to_parquet(path)
    got = read_bars_file(path)
    assert got.index.equals(bars.index)  # sorted back into time order, UTC
    pd.testing.assert_frame_equal(got[OHLCV], bars[OHLCV], check_freq=False, rtol=1e-12)


def test_read_user_file_microseconds(make_bars: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    bars = _user_frame(make_bars)
    table = bars.reset_index()
    table["timestamp"] = bars.index.as_unit("us").asi8  # Binance archives from 2025
    table.to_csv(tmp_path / "us.csv", index=False)
    assert read_bars_file(tmp_path / "us.csv").index.equals(bars.index)


# ----------------------------------------------------------------------------- the cache

def test_write_merge_dedupe_and_coverage(make_bars: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    store = BarStore(roots=[config.BUNDLED_DIR, tmp_path / "cache"])
    # 2 days across a month end: one file per UTC month
    bars = make_bars(2 * 1440, start="2024-05-31")
    written = store.write("SOL/USDT", "1m", bars)
    assert sorted(p.name for p in written) == ["2024-05.parquet", "2024-06.parquet"]
    assert all(p.parent == tmp_path / "cache" / "bars" / "SOL-USDT" / "1m" for p in written)
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    got = store.load("SOL/USDT", "1m", "2024-05-31", "2024-06-01")
    pd.testing.assert_frame_equal(got, bars, check_freq=False)
    assert store.coverage("SOL/USDT", "1m") == "2024-05-31 00:00:00+00:00 to 2024-06-01 23:59:00+00:00"
    # overlapping write: existing bars are replaced, new ones appended, no duplicates
    update = bars.iloc[1000:1100].copy()
    update["close"] = update["close"] * 1.01
    update["high"] = np.maximum(update["high"], update["close"])
    extra = make_bars(10, start="2024-06-02")
    store.write("SOL/USDT", "1m", pd.concat([update, extra]))
    merged = store.load("SOL/USDT", "1m")
    assert len(merged) == 2 * 1440 + 10
    assert not merged.index.has_duplicates and merged.index.is_monotonic_increasing
    pd.testing.assert_series_equal(merged["close"].iloc[1000:1100], update["close"], check_freq=False)
    assert merged["close"].iloc[999] == bars["close"].iloc[999]
    # the 1h view of the new symbol is resampled from the cached 1m
    assert len(store.load("SOL/USDT", "1h", "2024-05-31", "2024-05-31")) == 24


def test_cache_overrides_bundled_bar(make_bars: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    store = BarStore(roots=[config.BUNDLED_DIR, tmp_path / "cache"])
    real = store.load("BTC/USDT", "1m", "2024-01-01 00:00", "2024-01-01 00:02")
    fixed = real.iloc[1:2].copy()
    fixed["volume"] = 123.0
    store.write("BTC/USDT", "1m", fixed)
    again = store.load("BTC/USDT", "1m", "2024-01-01 00:00", "2024-01-01 00:02")
    assert list(again["volume"]) == [real["volume"].iloc[0], 123.0, real["volume"].iloc[2]]


def test_default_store_uses_the_env_cache(make_bars: Callable[..., pd.DataFrame],
                                          _isolated_cache: Path) -> None:
    BarStore().write("ABC/USDT", "1m", make_bars(5, start="2024-01-01"))
    assert (_isolated_cache / "bars" / "ABC-USDT" / "1m" / "2024-01.parquet").is_file()
    assert len(load_bars("ABC/USDT", "1m")) == 5


# ----------------------------------------------------------------------------- bad input

def test_symbol_key() -> None:
    assert symbol_key("btc/usdt") == symbol_key("BTC-USDT") == "BTC-USDT"
    with pytest.raises(ConfigurationError, match="symbol: expected BASE/QUOTE"):
        symbol_key("BTCUSDT")


@pytest.mark.parametrize(("args", "error", "text"), [
    (("DOGE/USDT", "1m"), DataError, "DOGE/USDT: expected bars in the store, found none"),
    (("BTCUSDT", "1m"), ConfigurationError, "symbol: expected BASE/QUOTE"),
    (("BTC/USDT", "15x"), ConfigurationError, "timeframe: expected a count and a unit"),
    (("BTC/USDT", "1m", "2024-02-01", "2024-01-01"), ConfigurationError, "end: expected a time after start"),
    (("BTC/USDT", "1m", "not a date"), ConfigurationError, "start: expected a date"),
    (("BTC/USDT", "1m", "2030-01-01", "2030-01-02"), DataError, "expected bars between 2030-01-01"),
])
def test_bad_requests_raise_named_errors(args: tuple, error: type, text: str) -> None:
    with pytest.raises(error, match=text):
        load_bars(*args)


def test_empty_range_message_names_the_coverage() -> None:
    with pytest.raises(DataError, match="stored 1m: 2024-01-01 00:00:00\\+00:00 to 2024-04-30"):
        load_bars("BTC/USDT", "1m", "2025-01-01", "2025-01-02")


def test_corrupted_parquet_is_a_data_error(make_bars: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    store = BarStore(roots=[tmp_path / "cache"])
    (path,) = store.write("XYZ/USDT", "1m", make_bars(5, start="2024-01-01"))
    path.write_bytes(b"PAR1 this is not parquet at all PAR1")
    with pytest.raises(DataError, match=f"{path.name}: expected a readable Parquet bar file"):
        store.load("XYZ/USDT", "1m")
    with pytest.raises(DataError, match="expected a readable Parquet or CSV file"):
        read_bars_file(path)


def test_user_file_with_nan_price(make_bars: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    table = _user_frame(make_bars).reset_index()
    table.loc[7, "close"] = np.nan
    table.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(DataError, match="finite prices, found 1 NaN/inf values \\(first at 2024-05-01 10:07"):
        read_bars_file(tmp_path / "nan.csv")


def test_user_file_with_missing_column(make_bars: Callable[..., pd.DataFrame], tmp_path: Path) -> None:
    _user_frame(make_bars).reset_index().drop(columns=["volume"]).to_parquet(tmp_path / "novol.parquet")
    with pytest.raises(DataError, match="missing \\['volume'\\]"):
        read_bars_file(tmp_path / "novol.parquet")
    _user_frame(make_bars).to_parquet(tmp_path / "nots.parquet", index=False)
    with pytest.raises(DataError, match="expected a 'timestamp' column"):
        read_bars_file(tmp_path / "nots.parquet")


def test_validate_bars_rejects_bad_frames(make_bars: Callable[..., pd.DataFrame]) -> None:
    bars = make_bars(10)
    with pytest.raises(DataError, match="expected positive prices"):
        validate_bars(bars.assign(low=-1.0), "x")
    with pytest.raises(DataError, match="strictly increasing"):
        validate_bars(pd.concat([bars, bars.iloc[:1]]), "x")
    with pytest.raises(DataError, match="expected a UTC DatetimeIndex"):
        validate_bars(bars.tz_localize(None), "x")
    with pytest.raises(DataError, match="'open' expected numbers"):
        validate_bars(bars.assign(open="a"), "x")
    with pytest.raises(DataError, match="expected strictly increasing"):
        BarStore(roots=[Path("/nonexistent")]).write("A/B", "1m", bars.iloc[::-1])
