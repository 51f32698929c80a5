"""Public market data through real ccxt (sync and async) over loopback HTTP."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pandas as pd
import pytest

from toolkit.data.resample import resample_ohlcv
from toolkit.data.store import BarStore
from toolkit.emulator import Emulator
from toolkit.emulator.filters import load_rules
from toolkit.emulator.testing import admin, step_clock
from toolkit.exchange import exchange_client

T0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)


def test_load_markets_calls_only_exchange_info(emu: Emulator) -> None:
    admin(emu.url, "DELETE", "/admin/requests")
    ex = exchange_client(url=emu.url, enableRateLimit=False)
    markets = ex.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    calls = admin(emu.url, "GET", "/admin/requests")
    assert [(c["method"], c["path"]) for c in calls] == [("GET", "/api/v3/exchangeInfo")]


def test_markets_carry_the_real_filters(client: Any) -> None:
    btc = client.market("BTC/USDT")
    real = load_rules(["BTC/USDT"])["BTCUSDT"]
    assert btc["spot"] and btc["id"] == "BTCUSDT"
    assert Decimal(str(btc["precision"]["amount"])) == real.step == Decimal("0.00001")
    assert Decimal(str(btc["precision"]["price"])) == real.tick == Decimal("0.01")
    assert btc["limits"]["cost"]["min"] == float(real.min_notional) == 5.0
    assert client.amount_to_precision("BTC/USDT", 0.0123456789) == "0.01234"
    assert client.price_to_precision("BTC/USDT", 61234.5678) == "61234.57"  # rounded, not truncated


def test_fetch_ohlcv_pages_equal_the_store(client: Any, small_store: Any) -> None:
    since = int(pd.Timestamp("2024-02-28", tz="UTC").value // 1_000_000)
    rows: list[list[float]] = []
    cursor = since
    while True:
        page = client.fetch_ohlcv("BTC/USDT", "1m", since=cursor, limit=1000)
        if not page:
            break
        rows += page
        cursor = page[-1][0] + 60_000
    stored = BarStore(roots=[small_store]).load("BTC/USDT", "1m", "2024-02-28", "2024-02-29")
    assert len(rows) == len(stored) == 2 * 1440  # only bars closed before 2024-03-01 00:00
    got = pd.DataFrame(rows, columns=["t", "open", "high", "low", "close", "volume"])
    assert (got["t"].diff().dropna() == 60_000).all()
    for col in ("open", "high", "low", "close", "volume"):
        assert got[col].tolist() == stored[col].tolist()


def test_only_closed_bars_are_visible_and_stepping_reveals_more(emu: Emulator, client: Any) -> None:
    last = client.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    assert last[-1][0] == T0 - 60_000
    step_clock(emu.url, 3)
    assert client.fetch_ohlcv("BTC/USDT", "1m", limit=5)[-1][0] == T0 + 2 * 60_000
    # a half-elapsed minute does not show its bar
    admin(emu.url, "POST", "/admin/clock", {"advance_ms": 30_000})
    assert client.fetch_ohlcv("BTC/USDT", "1m", limit=5)[-1][0] == T0 + 2 * 60_000
    assert client.fetch_ohlcv("BTC/USDT", "1m", since=T0 + 10 * 60_000) == []


def test_hourly_klines_equal_resampled_minutes(client: Any, small_store: Any) -> None:
    since = int(pd.Timestamp("2024-02-28", tz="UTC").value // 1_000_000)
    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=100)
    assert len(rows) == 48
    minutes = BarStore(roots=[small_store]).load("BTC/USDT", "1m", "2024-02-28", "2024-02-29")
    expected = resample_ohlcv(minutes, "1h")
    got = pd.DataFrame(rows, columns=["t", "open", "high", "low", "close", "volume"])
    assert got["t"].tolist() == [int(t.value // 1_000_000) for t in expected.index]
    for col in ("open", "high", "low", "close"):
        assert got[col].tolist() == expected[col].tolist()
    assert got["volume"].to_numpy() == pytest.approx(expected["volume"].to_numpy(), rel=1e-9)


def test_ticker_book_and_time(emu: Emulator, client: Any) -> None:
    ticker = client.fetch_ticker("BTC/USDT")
    book = client.fetch_order_book("BTC/USDT", 5)
    last_close = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][4]
    assert ticker["last"] == last_close
    assert book["bids"][0][0] < last_close < book["asks"][0][0]
    assert len(book["bids"]) == len(book["asks"]) == 5
    assert client.fetch_time() == emu.clock.now_ms() == T0  # server time is replay time


def test_bad_interval_and_unknown_symbol(client: Any) -> None:
    import ccxt

    with pytest.raises(ccxt.BadRequest):
        client.publicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})
    with pytest.raises(ccxt.BadSymbol):
        client.publicGetKlines({"symbol": "DOGEUSDT", "interval": "1m"})


def test_async_client_markets_and_klines(emu: Emulator, small_store: Any) -> None:
    async def run() -> tuple[int, list[list[float]], list[list[float]]]:
        ex = exchange_client(url=emu.url, async_=True, enableRateLimit=False)
        try:
            markets = await ex.load_markets()
            btc = await ex.fetch_ohlcv("BTC/USDT", "5m", since=T0 - 3_600_000, limit=12)
            eth = await ex.fetch_ohlcv("ETH/USDT", "5m", since=T0 - 3_600_000, limit=12)
            return len(markets), btc, eth
        finally:
            await ex.close()

    n, btc, eth = asyncio.run(run())
    assert n == 2
    # the last hour before the replay time, as twelve real 5m bars aggregated from the stored 1m bars
    one_min = BarStore(roots=[small_store]).load("BTC/USDT", "1m", "2024-02-29T23:00", "2024-02-29T23:59")
    expected = resample_ohlcv(one_min, "5m")
    assert len(btc) == 12 and [r[0] for r in btc] == [int(t.value // 1_000_000) for t in expected.index]
    got = pd.DataFrame([r[1:6] for r in btc], columns=["open", "high", "low", "close", "volume"])
    pd.testing.assert_frame_equal(got, expected[["open", "high", "low", "close", "volume"]].reset_index(drop=True),
                                  check_exact=False, rtol=1e-9)
    assert eth == []  # ETH data (2024-08) lies after the replay time: nothing has closed yet
