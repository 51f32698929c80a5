"""The replay clock (stepped, accelerated) and trading through Binance's 2023-03-24 halt."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from toolkit.clock import Clock
from toolkit.data.store import BarStore, read_bars_file
from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.emulator.clock import ReplayClock, SteppableClock
from toolkit.emulator.testing import FollowerClock, admin
from toolkit.errors import ConfigurationError
from toolkit.exchange import exchange_client

T_2024 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
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
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False)
    # 12:40-13:59 is missing: the market is closed
    with pytest.raises(ccxt.MarketClosed):
        ex.create_order("BTC/USDT", "market", "buy", 0.001)
    last = ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][0]
    assert pd.Timestamp(last, unit="ms", tz="UTC") == pd.Timestamp("2023-03-24T12:39:00Z")
    # at 14:00 trading resumes; the last closed bar (12:39) is a zero-volume halt bar: the book is empty, and a
    # market order never rests -- it expires unfilled (Binance expires what a market order cannot fill)
    admin(emu.url, "POST", "/admin/clock", {"to": "2023-03-24T14:00:10Z"})
    assert ex.fetch_order_book("BTC/USDT")["asks"] == []
    order = ex.create_order("BTC/USDT", "market", "buy", 0.001)
    assert order["status"] == "expired" and order["filled"] == 0
    assert ex.fetch_balance()["USDT"]["free"] == 100000  # nothing spent, nothing locked
    admin(emu.url, "POST", "/admin/clock", {"advance_minutes": 2})  # 14:00 traded: the book is back
    assert ex.fetch_order(order["id"], "BTC/USDT")["status"] == "expired"
    assert ex.create_order("BTC/USDT", "market", "buy", 0.001)["status"] == "closed"


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


def test_server_time_exchange_info_and_order_times_are_replay_time(emu: Emulator, client: Any) -> None:
    t0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
    assert client.fetch_time() == t0 == emu.clock.now_ms()
    assert client.publicGetExchangeInfo()["serverTime"] == t0
    admin(emu.url, "POST", "/admin/clock", {"advance_ms": 12_345})
    order = client.create_order("BTC/USDT", "market", "buy", 0.001)
    assert order["timestamp"] == t0 + 12_345 == client.fetch_time()
    assert client.fetch_my_trades("BTC/USDT")[0]["timestamp"] == t0 + 12_345


def test_my_trades_since_server_now_minus_an_hour(emu: Emulator, client: Any) -> None:
    ids = [client.create_order("BTC/USDT", "market", side, 0.001)["id"] for side in ("buy", "buy")]
    admin(emu.url, "POST", "/admin/clock", {"advance_minutes": 20})
    since = client.fetch_time() - 3_600_000
    assert [t["order"] for t in client.fetch_my_trades("BTC/USDT", since=since)] == ids
    assert client.fetch_my_trades("BTC/USDT", since=client.fetch_time() - 60_000) == []


def _balance_or_nonce(ex: Any) -> str:
    try:
        ex.fetch_balance()
    except ccxt.InvalidNonce:
        return "InvalidNonce"
    return "ok"


def test_wall_speed_replay_with_ccxt_adjust_for_time_difference(make_emulator: Any) -> None:
    emu = make_emulator(speed=1)  # replay 2024-03-01 at wall speed: a constant offset from the wall clock
    keys = {"api_key": DEFAULT_API_KEY, "secret": DEFAULT_API_SECRET, "enableRateLimit": False}
    plain = exchange_client(url=emu.url, **keys)
    adjusted = exchange_client(url=emu.url, adjustForTimeDifference=True, **keys)
    plain.load_markets()
    adjusted.load_markets()  # with the option, load_markets() calls /api/v3/time (load_time_difference)
    assert _balance_or_nonce(plain) == "InvalidNonce"  # signed with the wall clock: years ahead of replay time
    assert _balance_or_nonce(adjusted) == "ok"
    time.sleep(0.5)
    assert _balance_or_nonce(adjusted) == "ok"  # the offset stays constant at speed 1

    async def run() -> str:
        ex = exchange_client(url=emu.url, async_=True, adjustForTimeDifference=True, **keys)
        try:
            await ex.load_markets()
            return str((await ex.fetch_balance())["USDT"]["free"])
        finally:
            await ex.close()

    assert asyncio.run(run()) == "100000.0"


def test_accelerated_replay_needs_a_follower_signing_clock(make_emulator: Any) -> None:
    emu = make_emulator(speed=100)  # 100 replay ms per wall ms
    keys = {"api_key": DEFAULT_API_KEY, "secret": DEFAULT_API_SECRET, "enableRateLimit": False,
            "recvWindow": 60_000}  # the follower may lag by a round trip x 100: use Binance's widest window
    follower = FollowerClock(emu.url)
    assert follower.speed == 100
    adjusted = exchange_client(url=emu.url, adjustForTimeDifference=True, **keys)
    adjusted.load_markets()
    following = exchange_client(url=emu.url, clock=follower, **keys)
    frozen = exchange_client(url=emu.url, clock=FollowerClock(emu.url, speed=0), **keys)
    time.sleep(0.7)  # 70 replay seconds: outside even a 60 s window for a constant-offset client
    assert _balance_or_nonce(adjusted) == "InvalidNonce"
    assert _balance_or_nonce(frozen) == "InvalidNonce"
    assert _balance_or_nonce(following) == "ok"
    order = following.create_order("BTC/USDT", "market", "buy", 0.001)
    assert abs(order["timestamp"] - follower.now_ms()) < 60_000  # replay time (2024), not the wall clock


def test_the_replay_clock_is_a_toolkit_clock() -> None:
    clock = ReplayClock(T_2024, speed=0)
    assert isinstance(clock, Clock) and isinstance(clock, SteppableClock)
    assert clock.now() == pd.Timestamp("2024-03-01", tz="UTC")
