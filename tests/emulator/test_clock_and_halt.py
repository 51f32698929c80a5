"""The replay clock (stepped, accelerated) and trading through Binance's 2023-03-24 halt."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from toolkit.data.store import BarStore, read_bars_file
from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET
from toolkit.emulator.clock import ReplayClock
from toolkit.emulator.testing import admin
from toolkit.errors import ConfigurationError
from toolkit.exchange import exchange_client

HALT = Path(__file__).resolve().parents[1] / "fixtures" / "BTCUSDT_1m_2023-03-24_halt.parquet"


def test_clock_speed_and_stepping() -> None:
    wall = [1000.0]
    clock = ReplayClock(0, speed=60, wall=lambda: wall[0])
    wall[0] += 2.0
    assert clock.now_ms() == 120_000  # 2 wall seconds at speed 60 = 2 replay minutes
    clock.advance(60_000)
    wall[0] += 1.0
    assert clock.now_ms() == 240_000
    stepped = ReplayClock(5, speed=0, wall=lambda: wall[0])
    wall[0] += 100
    assert stepped.now_ms() == 5 and stepped.stepped
    with pytest.raises(ConfigurationError, match="clock"):
        stepped.set(0)
    with pytest.raises(ConfigurationError, match="speed"):
        ReplayClock(0, speed=-1)


def test_accelerated_clock_reveals_bars_without_stepping(make_emulator: Any) -> None:
    emu = make_emulator(speed=6000)  # 100 replay minutes per wall second
    ex = exchange_client(url=emu.url, enableRateLimit=False)
    first = ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][0]
    time.sleep(0.3)
    later = ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][0]
    assert later - first >= 20 * 60_000


@pytest.fixture
def halt_store(tmp_path: Path) -> Path:
    BarStore(roots=[tmp_path / "halt"]).write("BTC/USDT", "1m", read_bars_file(HALT))
    return tmp_path / "halt"


def test_orders_during_the_halt(make_emulator: Any, halt_store: Path) -> None:
    emu = make_emulator(store_roots=(halt_store,), symbols=("BTC/USDT",), start="2023-03-24T13:00:00Z")
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, enableRateLimit=False)
    # 12:40-13:59 is missing: the market is closed
    with pytest.raises(ccxt.MarketClosed):
        ex.create_order("BTC/USDT", "market", "buy", 0.001)
    last = ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][0]
    assert pd.Timestamp(last, unit="ms", tz="UTC") == pd.Timestamp("2023-03-24T12:39:00Z")
    # at 14:00 trading resumes; the last closed bar (12:39) is a zero-volume halt bar: nothing fills at once
    admin(emu.url, "POST", "/admin/clock", {"to": "2023-03-24T14:00:10Z"})
    order = ex.create_order("BTC/USDT", "market", "buy", 0.001)
    assert order["status"] == "open" and order["filled"] == 0
    admin(emu.url, "POST", "/admin/clock", {"advance_minutes": 2})
    assert ex.fetch_order(order["id"], "BTC/USDT")["status"] == "closed"


def test_concurrent_clock_advances_are_never_lost() -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible to expose a read-then-write race
    try:
        clock = ReplayClock(0, 0)
        threads = [threading.Thread(target=lambda: [clock.advance(1) for _ in range(2000)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert clock.now_ms() == 8 * 2000
