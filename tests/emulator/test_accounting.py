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
from toolkit.emulator.matching import MatchingParams
from toolkit.emulator.orders import Engine, Leg
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


class _Ledger:
    """What the balances must be, rebuilt from the fills alone (read once each, in id order)."""

    def __init__(self) -> None:
        self.expected = dict(START)
        self.last_id, self.last_time = 0, -1
        self.maker: dict[int, Decimal] = defaultdict(Decimal)


def _check(engine: Engine, ledger: _Ledger | None = None) -> None:
    """Free >= 0, locked == open orders' locks, totals == start + trades - fees, SQLite == memory, budgets kept."""
    ledger = ledger or _Ledger()
    locks: dict[str, Decimal] = defaultdict(Decimal)
    for order in engine.open.values():
        assert order.locked >= 0, order
        locks[order.lock_asset] += order.locked
    for trade in engine.state.trades("BTCUSDT", from_id=ledger.last_id + 1, limit=10**9):
        # ids and times strictly increase
        assert trade.id > ledger.last_id and trade.time > ledger.last_time, (trade, ledger.last_id, ledger.last_time)
        ledger.last_id, ledger.last_time = trade.id, trade.time
        if trade.is_buyer:  # a buyer receives base minus the fee (in BTC) and pays the quote
            assert trade.commission_asset == "BTC"
            ledger.expected["BTC"] += trade.qty - trade.commission
            ledger.expected["USDT"] -= trade.quote_qty
        else:  # a seller gives base and receives quote minus the fee (in USDT)
            assert trade.commission_asset == "USDT"
            ledger.expected["BTC"] -= trade.qty
            ledger.expected["USDT"] += trade.quote_qty - trade.commission
        rate = engine.params.maker_fee if trade.is_maker else engine.params.taker_fee
        base = trade.qty if trade.is_buyer else trade.quote_qty
        assert trade.commission == (base * rate).quantize(D("0.00000001"), rounding="ROUND_FLOOR")
        if trade.is_maker:
            ledger.maker[trade.time - trade.time % MINUTE] += trade.qty
    for asset, (free, locked) in engine.bal.items():
        assert free >= 0, (asset, free)
        assert locked == locks.get(asset, D(0)), (asset, locked, dict(locks))
        assert free + locked == ledger.expected.get(asset, D(0)), (asset, free + locked, ledger.expected.get(asset))
    assert engine.state.balances() == {a: (f, lk) for a, (f, lk) in engine.bal.items()}
    # resting (maker) fills of a bar share its participation budget
    feed, share = engine.feeds["BTCUSDT"], engine.params.max_participation
    for bar_ms, qty in ledger.maker.items():
        j = int(np.searchsorted(feed.t, bar_ms))
        assert qty <= D(f"{feed.v[j] * share:.8f}"), (bar_ms, qty)
    stored_open = {o.order_id: o.locked for o in engine.state.open_orders()}
    assert stored_open == {i: o.locked for i, o in engine.open.items()}


def _random_session(engine: Engine, rng: random.Random, steps: int) -> dict[str, int]:
    """Place (market, quote, limit, stop, OCO), cancel and step at random; return counts of what happened."""
    rules = engine.rules["BTCUSDT"]
    seen: dict[str, int] = defaultdict(int)
    ledger = _Ledger()
    for _ in range(steps):
        action = rng.random()
        now = engine.sync()
        view = engine.market("BTCUSDT", now)
        assert view is not None
        ref = view.last
        try:
            if action < 0.2:
                # often nearly all the free quote: a market buy may only spend what the account has
                most = engine.free("USDT") / (ref * D("1.002"))
                qty = round_step(most * D(str(rng.choice([0.3, 1]))), rules.step)
                order, _ = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", qty, None, None, None)
                seen[f"market buy {order.status}"] += 1
            elif action < 0.27:
                quote = round_step(engine.free("USDT") * D(str(rng.choice([0.5, 1]))), D("0.01"))
                order, _ = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", None, None, quote, None)
                seen[f"quote buy {order.status}"] += 1
            elif action < 0.4:
                qty = round_step(engine.free("BTC") * D(str(rng.uniform(0.05, 1))), rules.step)
                order, _ = engine.place("BTCUSDT", "SELL", "MARKET", "GTC", qty, None, None, None)
                seen[f"market sell {order.status}"] += 1
            elif action < 0.6:
                side = rng.choice(["BUY", "SELL"])
                price = round_step(ref * (1 + D(str(rng.uniform(-0.004, 0.004)))), rules.tick)
                qty = round_step(D(str(rng.uniform(0.001, 2))), rules.step)
                order, fills = engine.place("BTCUSDT", side, "LIMIT", rng.choice(["GTC", "GTC", "IOC"]), qty, price,
                                            None, None)
                seen["limit took" if fills else "limit rested"] += 1
            elif action < 0.68:
                side = rng.choice(["BUY", "SELL"])
                away = D(str(rng.uniform(0.001, 0.004)))
                stop = round_step(ref * (1 - away if side == "SELL" else 1 + away), rules.tick)
                limit = round_step(stop * (D("0.999") if side == "SELL" else D("1.001")), rules.tick)
                qty = round_step(D(str(rng.uniform(0.001, 0.5))), rules.step)
                engine.place("BTCUSDT", side, "STOP_LOSS_LIMIT", "GTC", qty, limit, None, None, stop_price=stop)
                seen["stop"] += 1
            elif action < 0.72:
                qty = round_step(min(engine.free("BTC"), D("0.5")), rules.step)
                up = round_step(ref * D("1.003"), rules.tick)
                stop = round_step(ref * D("0.997"), rules.tick)
                engine.place_oco("BTCUSDT", "SELL", qty, Leg("LIMIT_MAKER", up, None, "GTC", None),
                                 Leg("STOP_LOSS_LIMIT", stop - rules.tick * 50, stop, "GTC", None), None)
                seen["oco"] += 1
            elif action < 0.8 and engine.open:
                order = rng.choice(list(engine.open.values()))
                engine.cancel("BTCUSDT", order.order_id, None)
            else:
                _advance(engine, rng.randint(1, 20) * MINUTE)
        except BinanceError as exc:
            seen[f"rejected {exc.code}"] += 1
        _check(engine, ledger)
    seen["fills"] = len(engine.state.trades("BTCUSDT", limit=10**9))
    seen["maker fills"] = sum(t.is_maker for t in engine.state.trades("BTCUSDT", limit=10**9))
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_orders_keep_the_books_balanced(small_store: Path, tmp_path: Path, seed: int) -> None:
    # a thin market (2 % of a bar's volume per book side and per bar for resting orders): books run out,
    # market orders expire part-filled, resting orders fill across bars
    params = MatchingParams(max_participation=0.02)
    engine = _engine(small_store, tmp_path / "s.sqlite", "2024-02-28T07:00:00Z", params)
    try:
        seen = _random_session(engine, random.Random(seed), 160)
        assert seen["fills"] > 20 and seen["maker fills"] > 0
        assert seen["market buy EXPIRED"] + seen["market buy FILLED"] > 5
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
        assert engine.state.balances() == before[0] and engine.bal["USDT"][1] == D("500")  # price x qty, no buffer
        assert engine.open[1_000_001].status == "NEW"
        engine.state.db.execute("DROP TRIGGER no_cancel")
        engine.state.commit()
        # nothing of the failed attempts leaks into the next commit
        order, _ = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D("0.5"), None, None, "works")
        assert order.order_id == 1_000_002 and order.status == "FILLED"
        _check(engine)
    finally:
        engine.state.close()


def test_takers_of_one_minute_consume_its_book(small_store: Path, tmp_path: Path) -> None:
    params = MatchingParams(max_participation=0.005)
    engine = _engine(small_store, tmp_path / "s.sqlite", "2024-03-01T00:00:30Z", params)
    try:
        feed = engine.feeds["BTCUSDT"]
        k = feed.index_at(engine.clock.now_ms())
        depth = engine.book("BTCUSDT", engine.market("BTCUSDT", engine.clock.now_ms())).asks.depth  # type: ignore[arg-type]
        assert depth * D("0.00001") == round_step(D(f"{feed.v[k - 1] * 0.005:.8f}"), D("0.00001"))
        first, fills = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D("0.00001") * depth * 2, None, None, None)
        assert first.status == "EXPIRED" and first.executed_qty == D("0.00001") * depth  # the whole ask side
        assert len(fills) > 10 and [f.price for f in fills] == sorted(f.price for f in fills)
        second, fills = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D("0.01"), None, None, None)
        assert (second.status, second.executed_qty, fills) == ("EXPIRED", 0, [])  # nothing left this minute
        sell, fills = engine.place("BTCUSDT", "SELL", "MARKET", "GTC", D("0.01"), None, None, None)
        assert sell.status == "FILLED"  # the bids are untouched
        _advance(engine, MINUTE)  # a new minute, a new book
        third, _ = engine.place("BTCUSDT", "BUY", "MARKET", "GTC", D("0.01"), None, None, None)
        assert third.status == "FILLED"
        assert engine.bal["USDT"][1] == 0  # market orders keep no lock
        _check(engine)
    finally:
        engine.state.close()


def test_resting_orders_share_a_bars_participation_budget(small_store: Path, tmp_path: Path) -> None:
    params = MatchingParams(max_participation=0.001)
    engine = _engine(small_store, tmp_path / "s.sqlite", "2024-03-01T00:00:00Z", params)
    try:
        ref = engine.market("BTCUSDT", engine.clock.now_ms()).last  # type: ignore[union-attr]
        price = round_step(ref * D("0.999"), D("0.01"))
        a, _ = engine.place("BTCUSDT", "BUY", "LIMIT", "GTC", D("1"), price, None, "a")
        b, _ = engine.place("BTCUSDT", "BUY", "LIMIT", "GTC", D("1"), price, None, "b")
        _advance(engine, 240 * MINUTE)
        feed = engine.feeds["BTCUSDT"]
        per_bar: dict[int, Decimal] = defaultdict(Decimal)
        for trade in engine.state.trades("BTCUSDT", limit=10**9):
            assert trade.is_maker and trade.price == price
            per_bar[trade.time // MINUTE * MINUTE] += trade.qty
        assert len(per_bar) >= 2  # the budget spread the fills over several bars
        for bar_ms, qty in per_bar.items():
            j = int(np.searchsorted(feed.t, bar_ms))
            assert feed.lo[j] < float(price) and qty <= D(f"{feed.v[j] * 0.001:.8f}")
        a_done, b_done = (engine.state.get_order("BTCUSDT", o.order_id) for o in (a, b))
        assert a_done is not None and b_done is not None and a_done.executed_qty >= b_done.executed_qty  # oldest first
        _check(engine)
    finally:
        engine.state.close()
