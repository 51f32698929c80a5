"""Trade ids and fill times strictly increase: paging myTrades (and allOrders) with ccxt never repeats or skips."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.emulator.testing import step_clock
from toolkit.exchange import exchange_client


@pytest.fixture
def busy(make_emulator: Any) -> tuple[Emulator, Any]:
    """An account with many fills: takers walking several levels, in several minutes, and resting fills."""
    emu = make_emulator(balances={"USDT": 1_000_000, "BTC": 10})
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False)
    ex.load_markets()
    for minute in range(6):
        for side in ("buy", "sell", "buy"):
            levels = ex.fetch_order_book("BTC/USDT", 5)["asks" if side == "buy" else "bids"]
            ex.create_order("BTC/USDT", "market", side, levels[0][1] + levels[1][1] + levels[2][1] / 2)
        last = ex.fetch_ticker("BTC/USDT")["last"]
        ex.create_order("BTC/USDT", "limit", "buy", 0.05, round(last * 0.9995, 2))  # rests, may fill later
        step_clock(emu.url, 3 + minute)
    return emu, ex


def test_fill_ids_and_times_strictly_increase(busy: Any) -> None:
    _, ex = busy
    trades = ex.fetch_my_trades("BTC/USDT", limit=1000)
    assert len(trades) > 50 and any(t["takerOrMaker"] == "maker" for t in trades)
    ids, times = [int(t["id"]) for t in trades], [t["timestamp"] for t in trades]
    assert ids == sorted(set(ids)) and times == sorted(set(times))


def test_paging_my_trades_by_from_id_and_by_start_time(busy: Any) -> None:
    _, ex = busy
    everything = [int(t["id"]) for t in ex.fetch_my_trades("BTC/USDT", limit=1000)]
    by_id: list[int] = []
    cursor = everything[0]
    while True:
        page = ex.fetch_my_trades("BTC/USDT", limit=7, params={"fromId": cursor})
        if not page:
            break
        by_id += [int(t["id"]) for t in page]
        cursor = int(page[-1]["id"]) + 1
    by_time: list[int] = []
    since = ex.fetch_my_trades("BTC/USDT", limit=1000)[0]["timestamp"]
    while True:
        page = ex.fetch_my_trades("BTC/USDT", since=since, limit=7)
        if not page:
            break
        by_time += [int(t["id"]) for t in page]
        since = page[-1]["timestamp"] + 1
    assert by_id == everything == by_time


def test_paging_all_orders_by_order_id(busy: Any) -> None:
    _, ex = busy
    everything = [o["id"] for o in ex.fetch_orders("BTC/USDT", limit=1000)]
    paged: list[str] = []
    cursor = int(everything[0])
    while True:
        page = ex.fetch_orders("BTC/USDT", limit=4, params={"orderId": cursor})
        if not page:
            break
        paged += [o["id"] for o in page]
        cursor = int(page[-1]["id"]) + 1
    assert paged == everything and len(everything) == 24


def test_unsupported_my_trades_parameters_are_refused(busy: Any) -> None:
    _, ex = busy
    now = ex.fetch_time()
    with pytest.raises(ccxt.BadRequest, match="-1128"):  # Binance: fromId cannot be combined with a time
        ex.fetch_my_trades("BTC/USDT", since=now - 3_600_000, params={"fromId": 1})
    with pytest.raises(ccxt.BadRequest, match="-1127"):  # and a time window is at most 24 hours
        ex.fetch_my_trades("BTC/USDT", since=now - 2 * 86_400_000, params={"until": now})
