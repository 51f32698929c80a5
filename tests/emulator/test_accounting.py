"""Accounting invariants of the matching engine over random order sequences (real bars, real SQLite)."""

from __future__ import annotations

import random
import sqlite3
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from toolkit.data.store import BarStore, parse_time
from toolkit.emulator.clock import ReplayClock
from toolkit.emulator.errors import BinanceError
from toolkit.emulator.feed import MINUTE, load_feed
from toolkit.emulator.filters import load_rules, round_step
from toolkit.emulator.matching import Engine, MatchingParams
from toolkit.emulator.state import State

D = Decimal
START = {"USDT": D(300_000), "BTC": D(5)}


def _engine(store: Path, state_path: Path, start: str, params: MatchingParams) -> Engine:
    rules = load_rules(["BTC/USDT"])
    feeds = {sid: load_feed(r.unified, BarStore(roots=[store])) for sid, r in rules.items()}
    ts = parse_time(start, "start")
    assert ts is not None
    clock = ReplayClock(int(ts.value // 1_000_000), 0)
    return Engine(feeds, rules, State(state_path), clock, params, dict(START))


def _advance(engine: Engine, ms: int) -> None:
    """Step the engine's replay clock and process the bars passed."""
    clock = engine.clock
    assert isinstance(clock, ReplayClock)
    clock.advance(ms)
    engine.sync()


def _check(engine: Engine) -> None:
    """Free >= 0, locked == open orders' locks, totals == start + trades - fees, SQLite == memory."""
    locks: dict[str, Decimal] = defaultdict(Decimal)
    for order in engine.open.values():
        assert order.locked >= 0, order
        locks[order.lock_asset] += order.locked
    expected = dict(START)
    for trade in engine.state.trades("BTCUSDT", limit=10**9):
        sign = 1 if trade.is_buyer else -1
        expected["BTC"] += sign * trade.qty
        expected["USDT"] -= sign * trade.quote_qty + trade.commission
    for asset, (free, locked) in engine.bal.items():
        assert free >= 0, (asset, free)
        assert locked == locks.get(asset, D(0)), (asset, locked, dict(locks))
        assert free + locked == expected.get(asset, D(0)), (asset, free + locked, expected.get(asset))
    assert engine.state.balances() == {a: (f, lk) for a, (f, lk) in engine.bal.items()}
    # one participation budget per bar, shared by every order: at most the cap of its larger reference
    # volume (the previous bar's for takers, the bar's own for resting limits)
    feed, share = engine.feeds["BTCUSDT"], engine.params.max_participation
    per_bar: dict[int, Decimal] = defaultdict(Decimal)
    for trade in engine.state.trades("BTCUSDT", limit=10**9):
        per_bar[trade.time - trade.time % MINUTE] += trade.qty
    for bar_ms, qty in per_bar.items():
        j = int(np.searchsorted(feed.t, bar_ms))
        assert qty <= D(f"{max(feed.v[j - 1], feed.v[j]) * share:.8f}"), (bar_ms, qty)
    stored_open = {o.order_id: o.locked for o in engine.state.open_orders()}
    assert stored_open == {i: o.locked for i, o in engine.open.items()}


def _random_session(engine: Engine, rng: random.Random, steps: int) -> int:
    """Place, cancel and step at random; return how many fills happened."""
    rules = engine.rules["BTCUSDT"]
    for _ in range(steps):
        action = rng.random()
        now = engine.sync()
        feed = engine.feeds["BTCUSDT"]
        ref = D(f"{feed.c[feed.last_closed(now)]:.2f}")
        try:
            if action < 0.35:
                # often nearly all the free quote: later fills cannot borrow from free money
                most = engine.bal["USDT"][0] / (ref * D("1.001"))
                qty = round_step(most * D(str(rng.choice([0.3, 1]))), rules.step)
                engine.place("BTCUSDT", "BUY", "MARKET", "GTC", qty, None, None, None)
            elif action < 0.5:
                held = engine.bal["BTC"][0]
                qty = round_step(held * D(str(rng.uniform(0.05, 1))), rules.step)
                engine.place("BTCUSDT", "SELL", "MARKET", "GTC", qty, None, None, None)
            elif action < 0.7:
                side = rng.choice(["BUY", "SELL"])
                off = D(str(rng.uniform(-0.004, 0.004)))
                price = round_step(ref * (1 + off), rules.tick)
                qty = round_step(D(str(rng.uniform(0.001, 2))), rules.step)
                engine.place("BTCUSDT", side, "LIMIT", rng.choice(["GTC", "GTC", "IOC"]), qty, price, None,
                             None)
            elif action < 0.8 and engine.open:
                order = rng.choice(list(engine.open.values()))
                engine.cancel("BTCUSDT", order.order_id, None)
            else:
                _advance(engine, rng.randint(1, 20) * MINUTE)
        except BinanceError:
            engine.state.commit()
        _check(engine)
    return len(engine.state.trades("BTCUSDT", limit=10**9))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_orders_keep_the_books_balanced(small_store: Path, tmp_path: Path, seed: int) -> None:
    # a thin market (2 % participation) and no market-buy buffer: fills whose price runs past the lock
    # are common, so the lock running out is exercised on every seed
    params = MatchingParams(max_participation=0.02, market_buy_buffer=D(0))
    engine = _engine(small_store, tmp_path / "s.sqlite", "2024-02-28T07:00:00Z", params)
    try:
        fills = _random_session(engine, random.Random(seed), 150)
        assert fills > 20
    finally:
        engine.state.close()


def test_market_buy_stops_when_its_lock_runs_out(small_store: Path, tmp_path: Path) -> None:
    # 2024-02-28 07:00-09:00 the price rose ~4 %; the lock covers only 0.05 % above the open
    params = MatchingParams(max_participation=0.02, market_buy_buffer=D("0.0005"))
    engine = _engine(small_store, tmp_path / "s.sqlite", "2024-02-28T07:00:00Z", params)
    try:
        order, fills = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D(5), None, None, None)
        lock = engine.bal["USDT"][1] + sum(t.quote_qty + t.commission for t in fills)
        assert engine.bal["USDT"][0] < 20_000  # little free money left besides the lock
        _advance(engine, 120 * MINUTE)
        _check(engine)
        done = engine.state.get_order("BTCUSDT", order.order_id)
        assert done is not None and done.status == "EXPIRED"
        assert D(0) < done.executed_qty < D(5)
        assert lock - 100 < done.cum_quote * D("1.001") <= lock  # paid from the lock only, fee included
        assert engine.bal["USDT"][1] == 0
    finally:
        engine.state.close()


def test_a_failure_mid_order_rolls_back_memory_and_sqlite(small_store: Path, tmp_path: Path) -> None:
    engine = _engine(small_store, tmp_path / "s.sqlite", "2024-03-01T00:00:00Z", MatchingParams())
    try:
        engine.place("BTCUSDT", "BUY", "LIMIT", "GTC", D("0.01"), D(50_000), None, "resting")
        before = (engine.state.balances(), {i: o.locked for i, o in engine.open.items()})
        # a real SQLite failure after the balances moved: every trade insert aborts (a full disk, say)
        engine.state.db.execute("CREATE TRIGGER no_trades BEFORE INSERT ON trades "
                                "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        engine.state.commit()
        with pytest.raises(sqlite3.IntegrityError, match="disk full"):
            engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D("0.5"), None, None, "doomed")
        after = ({a: (f, lk) for a, (f, lk) in engine.bal.items()}, {i: o.locked for i, o in engine.open.items()})
        assert after == before  # memory reloaded from the database
        assert engine.state.get_order("BTCUSDT", client_order_id="doomed") is None
        engine.state.db.execute("DROP TRIGGER no_trades")
        engine.state.commit()
        engine.state.db.execute("CREATE TRIGGER no_cancel BEFORE INSERT ON orders "
                                "BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        engine.state.commit()
        with pytest.raises(sqlite3.IntegrityError, match="disk full"):
            engine.cancel("BTCUSDT", None, "resting")  # the lock was released in memory first
        assert engine.state.balances() == before[0] and engine.bal["USDT"][1] == D("500.5")
        assert engine.open[1_000_001].status == "NEW"
        engine.state.db.execute("DROP TRIGGER no_cancel")
        engine.state.commit()
        # nothing of the failed attempts leaks into the next commit
        order, _ = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D("0.5"), None, None, "works")
        assert order.order_id == 1_000_002 and order.status == "FILLED"
        _check(engine)
    finally:
        engine.state.close()


def test_orders_in_one_bar_share_its_participation_cap(small_store: Path, tmp_path: Path) -> None:
    params = MatchingParams(max_participation=0.005)
    engine = _engine(small_store, tmp_path / "s.sqlite", "2024-03-01T00:00:30Z", params)
    try:
        feed = engine.feeds["BTCUSDT"]
        k = feed.index_at(engine.clock.now_ms())
        cap = round_step(D(f"{feed.v[k - 1] * 0.005:.8f}"), D("0.00001"))
        assert 0 < cap * 2 < 3  # affordable and under MARKET_LOT_SIZE
        first, _ = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", cap * 2, None, None, None)
        assert first.executed_qty == cap  # the whole budget of this bar
        second, fills = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D("0.01"), None, None, None)
        assert fills == [] and second.status == "NEW"  # nothing left in this bar
        _advance(engine, 10 * MINUTE)  # later bars' budgets serve the older order first, then the newer
        first, second = (engine.state.get_order("BTCUSDT", o.order_id) for o in (first, second))
        assert first is not None and second is not None
        assert first.status == second.status == "FILLED" and first.update_time <= second.update_time
        _check(engine)
    finally:
        engine.state.close()
