"""The matching engine's core: replayed bars in, books, fills and balances out.

Model (docs/emulator.md, "Matching model", has the table):

* Replay time ``T`` lies inside the minute of the *forming* bar ``k``. Until that
  minute closes only its open ``O_k`` is known: it is the last price, the book's
  reference price and the close of the forming kline.
* Takers (market orders, the marketable part of limit orders, stop orders when
  they trigger) fill at once against the synthesised book of the minute
  (:mod:`toolkit.emulator.book`), walking it level by level; what they take is gone
  from the book until the next minute. A market order never rests: what the book
  cannot fill expires.
* Resting limit orders fill at their own price, as maker, when a later bar's range
  strictly crosses it, within a participation budget of that bar's volume shared by
  all resting orders of the symbol. Stop orders trigger on the bar path (the open,
  then the bar's range at its close); a stop triggered inside a bar goes on the book
  at the next minute's open.
* Fees are charged in the asset received: a buyer pays in the base asset, a seller
  in the quote asset.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from toolkit.clock import Clock
from toolkit.emulator.book import Book, build_book
from toolkit.emulator.feed import MINUTE, BarFeed
from toolkit.emulator.filters import SymbolRules, round_step
from toolkit.emulator.state import Order, OrderList, State, Trade

__all__ = ["EngineCore", "MarketView", "MatchingParams"]

Q8 = Decimal("0.00000001")
ZERO = Decimal(0)


class MatchingParams(BaseModel):
    """Parameters of the book, the fill model and the fees (Binance VIP0 spot: 0.1 % taker and maker)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    taker_fee: Decimal = Decimal("0.001")
    maker_fee: Decimal = Decimal("0.001")
    min_half_spread_bps: Annotated[float, Field(ge=0)] = 0.5
    spread_coef: Annotated[float, Field(ge=0)] = 0.05
    impact_coef: Annotated[float, Field(ge=0)] = 0.002
    max_participation: Annotated[float, Field(gt=0, le=1)] = 0.25
    book_levels: Annotated[int, Field(ge=1, le=5000)] = 100


@dataclass(frozen=True)
class MarketView:
    """What is known of a symbol's market at one time.

    ``open`` is False in a gap of the data (a halt) or after its end: the view is then
    frozen at the last closed bar and orders are refused.
    """

    bar_ms: int
    last: Decimal
    mid: float
    half_spread: float
    volume: float
    open: bool


class EngineCore:
    """Balances, books, fills and bar events; every public method is thread-safe."""

    def __init__(self, feeds: dict[str, BarFeed], rules: dict[str, SymbolRules], state: State,
                 clock: Clock, params: MatchingParams | None = None,
                 balances: dict[str, Decimal] | None = None) -> None:
        self.feeds, self.rules, self.state, self.clock = feeds, rules, state, clock
        self.params = params or MatchingParams()
        self.lock = threading.RLock()
        if state.is_new:
            state.set_balances({asset: (Decimal(amount), ZERO) for asset, amount in (balances or {}).items()})
            state.set_metas({"replay_ms": str(clock.now_ms()), "processed_ms": str(clock.now_ms())})
            state.commit()
        #: called once per order, at its first fill (Binance decrements the order count then)
        self.on_first_fill: Callable[[], None] | None = None
        self._books: dict[str, Book] = {}
        self._load()

    def _load(self) -> None:
        """(Re)load the books in memory from the state file."""
        self.bal: dict[str, list[Decimal]] = {a: [f, lk] for a, (f, lk) in self.state.balances().items()}
        for r in self.rules.values():
            self.bal.setdefault(r.base, [ZERO, ZERO])
            self.bal.setdefault(r.quote, [ZERO, ZERO])
        self.open: dict[int, Order] = {o.order_id: o for o in self.state.open_orders()}
        self.lists: dict[int, OrderList] = {lst.order_list_id: lst for lst in self.state.order_lists(
            open_only=True, limit=10**9)}
        self.processed = int(self.state.get_meta("processed_ms") or self.clock.now_ms())
        self.last_trade_ms = self.state.last_trade_time()
        #: per symbol: (open time of the bar, quantity resting orders filled in it) -- the participation budget
        self._used: dict[str, tuple[int, Decimal]] = {}
        #: per symbol: (open time of the bar, steps taken from its bids, steps taken from its asks)
        self._taken: dict[str, tuple[int, int, int]] = {}
        # the unit of work: changes are written to SQLite once, at the commit that ends each public call
        self._dirty_orders: dict[int, Order] = {}
        self._dirty_assets: set[str] = set()
        self._dirty_meta: dict[str, str] = {}
        self._ids: dict[str, int] = {}

    def _commit(self) -> None:
        """Write the changed orders, balances and settings, then commit (one transaction per call)."""
        if self._dirty_meta:
            self.state.set_metas(self._dirty_meta)
        if self._dirty_assets:
            self.state.set_balances({a: (self.bal[a][0], self.bal[a][1]) for a in self._dirty_assets})
        for order in self._dirty_orders.values():
            self.state.save_order(order)
        self._dirty_meta, self._dirty_assets, self._dirty_orders = {}, set(), {}
        self.state.commit()

    def _save(self, order: Order) -> None:
        self._dirty_orders[order.order_id] = order

    def _next_id(self, key: str, first: int) -> int:
        """Return and advance a persistent counter (written at the commit)."""
        if key not in self._ids:
            raw = self.state.get_meta(key)
            self._ids[key] = first if raw is None else int(raw)
        value = self._ids[key]
        self._ids[key] = value + 1
        self._dirty_meta[key] = str(value + 1)
        return value

    def _lookup(self, symbol: str, order_id: int) -> Order | None:
        """Return an order by id: open, changed in this call, or stored."""
        return self.open.get(order_id) or self._dirty_orders.get(order_id) or self.state.get_order(symbol, order_id)

    # -- transactions and the clock -------------------------------------------------------------
    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Hold the lock; on any error drop the uncommitted changes and reload the books from SQLite."""
        with self.lock:
            try:
                yield
            except BaseException:
                self.state.rollback()
                self._load()
                raise

    def sync(self) -> int:
        """Process every bar event up to the clock's time and return that time.

        Every public method that changes the books runs as one transaction: an
        error drops its uncommitted changes and reloads balances and open orders.
        """
        with self._atomic():
            now = self.clock.now_ms()
            if now > self.processed:
                if self.open:
                    self._process(self.processed, now)
                self.processed = now
                self._dirty_meta["processed_ms"] = self._dirty_meta["replay_ms"] = str(now)
                self._commit()
            return max(now, self.processed)

    # -- the market ---------------------------------------------------------------------------------
    def market(self, symbol: str, t: int) -> MarketView | None:
        """Return the market of ``symbol`` at replay time ``t`` (None before its first bar closed)."""
        feed, p = self.feeds[symbol], self.params
        k = feed.index_at(t)
        if k >= 0:
            ref = k - 1 if k > 0 else k  # spread and depth come from the last closed bar
            bar_ms, mid, is_open = int(feed.t[k]), float(feed.o[k]), True
        else:
            ref = feed.last_closed(t)
            if ref < 0:
                return None
            bar_ms, mid, is_open = int(feed.t[ref]) + MINUTE, float(feed.c[ref]), False
        hs = max(p.min_half_spread_bps * 1e-4, p.spread_coef * (feed.h[ref] - feed.lo[ref]) / feed.c[ref])
        return MarketView(bar_ms, Decimal(f"{mid:.8f}"), mid, float(hs), float(feed.v[ref]), is_open)

    def book(self, symbol: str, view: MarketView) -> Book:
        """Return the full synthesised book of the minute of ``view`` (cached per symbol and minute)."""
        cached = self._books.get(symbol)
        if cached is not None and cached.bar_ms == view.bar_ms:
            return cached
        rules, p = self.rules[symbol], self.params
        book = build_book(view.bar_ms, view.mid, view.half_spread, view.volume, rules.tick, rules.step,
                          p.max_participation, p.impact_coef, p.book_levels)
        self._books[symbol] = book
        return book

    def taken(self, symbol: str, bar_ms: int, taker_side: str) -> int:
        """Return the steps takers took from the side ``taker_side`` meets in the minute ``bar_ms``."""
        if symbol not in self._taken:
            raw = self.state.get_meta(f"book_taken:{symbol}")
            parts = [int(x) for x in (raw or "-1:0:0").split(":")]
            self._taken[symbol] = (parts[0], parts[1], parts[2])
        t_bar, taken_bids, taken_asks = self._taken[symbol]
        if t_bar != bar_ms:
            return 0
        return taken_asks if taker_side == "BUY" else taken_bids

    def _record_taken(self, symbol: str, bar_ms: int, taker_side: str, steps: int) -> None:
        bids, asks = self.taken(symbol, bar_ms, "SELL"), self.taken(symbol, bar_ms, "BUY")
        if taker_side == "BUY":
            asks += steps
        else:
            bids += steps
        self._taken[symbol] = (bar_ms, bids, asks)
        self._dirty_meta[f"book_taken:{symbol}"] = f"{bar_ms}:{bids}:{asks}"

    def _room(self, symbol: str, bar_ms: int, volume: float) -> Decimal:
        """Return what is left of the resting-order budget of the bar opening at ``bar_ms``."""
        cap = round_step(Decimal(f"{volume * self.params.max_participation:.8f}"), self.rules[symbol].step)
        if symbol not in self._used:
            raw = self.state.get_meta(f"bar_used:{symbol}")
            t, q = raw.split(":") if raw else ("-1", "0")
            self._used[symbol] = (int(t), Decimal(q))
        t_used, used = self._used[symbol]
        return max(ZERO, cap - (used if t_used == bar_ms else ZERO))

    def _use(self, symbol: str, bar_ms: int, qty: Decimal) -> None:
        t_used, used = self._used.get(symbol, (-1, ZERO))
        total = (used if t_used == bar_ms else ZERO) + qty
        self._used[symbol] = (bar_ms, total)
        self._dirty_meta[f"bar_used:{symbol}"] = f"{bar_ms}:{total}"

    # -- balances -----------------------------------------------------------------------------------
    def _move(self, asset: str, free: Decimal, locked: Decimal) -> None:
        entry = self.bal.setdefault(asset, [ZERO, ZERO])
        entry[0] += free
        entry[1] += locked
        self._dirty_assets.add(asset)

    def free(self, asset: str) -> Decimal:
        """Return the free amount of ``asset`` (no bar processing)."""
        return self.bal.get(asset, [ZERO, ZERO])[0]

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Return ``{asset: (free, locked)}`` after processing bars up to now."""
        with self.lock:
            self.sync()
            return {a: (v[0], v[1]) for a, v in sorted(self.bal.items())}

    # -- fills --------------------------------------------------------------------------------------
    def _stamp(self, when: int) -> int:
        """Return a fill time: ``when``, or 1 ms after the previous fill (fill times strictly increase)."""
        self.last_trade_ms = max(int(when), self.last_trade_ms + 1)
        return self.last_trade_ms

    def _fill(self, order: Order, qty: Decimal, price: Decimal, when: int, maker: bool) -> Trade:
        """Book one fill: the buyer receives base minus the fee, the seller quote minus the fee."""
        if order.order_list_id >= 0:
            self._fire_list(order, when)
        rules = self.rules[order.symbol]
        rate = self.params.maker_fee if maker else self.params.taker_fee
        quote = (qty * price).quantize(Q8)
        if order.side == "BUY":
            if quote > order.locked:
                raise RuntimeError(f"order {order.order_id}: fill of {quote} exceeds its lock {order.locked}")
            fee, fee_asset = (qty * rate).quantize(Q8, rounding=ROUND_FLOOR), rules.base
            order.locked -= quote
            self._move(rules.quote, ZERO, -quote)
            self._move(rules.base, qty - fee, ZERO)
        else:
            fee, fee_asset = (quote * rate).quantize(Q8, rounding=ROUND_FLOOR), rules.quote
            order.locked -= qty
            self._move(rules.base, ZERO, -qty)
            self._move(rules.quote, quote - fee, ZERO)
        first = order.executed_qty == 0
        stamp = self._stamp(when)
        order.executed_qty += qty
        order.cum_quote += quote
        order.update_time = stamp
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        trade = Trade(id=self._next_id("next_trade_id", 1), order_id=order.order_id, symbol=order.symbol,
                      price=price, qty=qty, quote_qty=quote, commission=fee, commission_asset=fee_asset,
                      time=stamp, is_buyer=order.side == "BUY", is_maker=maker)
        self.state.save_trade(trade)
        if order.status == "FILLED":
            self._close(order, "FILLED", stamp)
        else:
            if order.side == "BUY" and order.price > 0:  # a limit buy keeps price x remaining locked, no more
                excess = order.locked - (order.price * order.remaining).quantize(Q8)
                if excess > 0:
                    order.locked -= excess
                    self._move(rules.quote, excess, -excess)
            self._save(order)
        if first and self.on_first_fill is not None:
            self.on_first_fill()
        return trade

    def _take(self, order: Order, book: Book, when: int, limit: Decimal | None = None,
              budget: Decimal | None = None, by_qty: bool = True) -> tuple[list[Trade], bool]:
        """Fill ``order`` as a taker against ``book``; return the fills and whether the book ran out."""
        taken = self.taken(order.symbol, book.bar_ms, order.side)
        steps = int(order.remaining / book.step) if by_qty else None
        ticks = None if limit is None else book.ticks(limit, up=order.side == "SELL")
        levels, exhausted = book.walk(order.side, taken, qty=steps, limit=ticks, budget=budget)
        trades = [self._fill(order, book.qty(lv.qty), book.price(lv.price), when, maker=False) for lv in levels]
        if levels:
            self._record_taken(order.symbol, book.bar_ms, order.side, sum(lv.qty for lv in levels))
        return trades, exhausted

    def _close(self, order: Order, status: str, when: int) -> None:
        if order.locked:
            self._move(order.lock_asset, order.locked, -order.locked)
            order.locked = ZERO
        order.status = status
        order.update_time = max(order.update_time, when)
        self.open.pop(order.order_id, None)
        self._save(order)

    # -- order lists (OCO) --------------------------------------------------------------------------
    def _fire_list(self, order: Order, when: int) -> None:
        """One leg of an OCO starts to work (a fill or a trigger): the other leg expires, its lock moves."""
        lst = self.lists.get(order.order_list_id)
        if lst is None:
            return
        for other_id in lst.order_ids:
            other = self.open.get(other_id)
            if other is None or other is order:
                continue
            if other.lock_asset == order.lock_asset:  # the list's one lock follows the working leg
                order.locked += other.locked
                other.locked = ZERO
            self._close(other, "EXPIRED", when)
        self._finish_list(lst, when)

    def _finish_list(self, lst: OrderList, when: int) -> None:
        lst.list_status_type, lst.list_order_status = "ALL_DONE", "ALL_DONE"
        lst.transaction_time = when
        self.lists.pop(lst.order_list_id, None)
        self.state.save_order_list(lst)

    # -- bar events ---------------------------------------------------------------------------------
    def _process(self, since: int, now: int) -> None:
        for symbol, feed in self.feeds.items():
            if not any(o.symbol == symbol for o in self.open.values()):
                continue
            j0 = int(np.searchsorted(feed.t, since - MINUTE, side="right"))
            j1 = int(np.searchsorted(feed.t, now, side="right"))
            pending: list[Order] = []  # stops triggered inside the previous bar: on the book at this open
            prev_close = -1
            for j in range(j0, j1):
                t_j = int(feed.t[j])
                if since < t_j:
                    self._on_open(symbol, j, [o for o in pending if o.is_open] if t_j == prev_close else [])
                pending = []
                if since < t_j + MINUTE <= now:
                    pending = self._on_close(symbol, feed, j)
                    prev_close = t_j + MINUTE

    def _stops(self, symbol: str, until: int) -> list[Order]:
        """Return the untriggered stop orders of ``symbol`` placed at or before ``until``, oldest first."""
        return sorted((o for o in self.open.values() if o.symbol == symbol and o.is_stop and not o.is_working
                       and o.time <= until), key=lambda o: o.order_id)

    def _trigger(self, order: Order, when: int) -> None:
        order.working_time = when
        order.update_time = max(order.update_time, when)
        self._save(order)
        if order.order_list_id >= 0:
            self._fire_list(order, when)

    def _activate(self, order: Order, view: MarketView, when: int) -> None:
        """Put a triggered stop order on the book at ``when``: it takes what it can, like a new order."""
        if not order.is_open:
            return
        book = self.book(order.symbol, view)
        if order.type in ("STOP_LOSS", "TAKE_PROFIT"):  # a market order once triggered: fills or expires
            budget = order.locked if order.side == "BUY" else None
            self._take(order, book, when, budget=budget)
            if order.is_open:
                self._close(order, "EXPIRED", when)
            return
        if order.time_in_force == "FOK":
            taken = self.taken(order.symbol, book.bar_ms, order.side)
            ticks = book.ticks(order.price, up=order.side == "SELL")
            levels, _ = book.walk(order.side, taken, qty=int(order.remaining / book.step), limit=ticks)
            if sum(lv.qty for lv in levels) * book.step < order.remaining:
                self._close(order, "EXPIRED", when)
                return
        self._take(order, book, when, limit=order.price)
        if order.is_open and order.time_in_force in ("IOC", "FOK"):
            self._close(order, "EXPIRED", when)

    def _on_open(self, symbol: str, j: int, pending: list[Order]) -> None:
        feed = self.feeds[symbol]
        t_j = int(feed.t[j])
        view = self.market(symbol, t_j)
        assert view is not None and view.bar_ms == t_j
        # stop-market orders triggered before a gap in the data go on the book when trading resumes
        waiting = [o for o in self.open.values() if o.symbol == symbol and o.type in ("STOP_LOSS", "TAKE_PROFIT")
                   and o.is_working and o not in pending]
        for order in sorted([*pending, *waiting], key=lambda o: o.order_id):
            self._activate(order, view, t_j)
        if feed.v[j] <= 0:
            return  # a halt bar: nothing trades, nothing triggers
        price = view.last
        for order in self._stops(symbol, t_j - 1):  # placed before this open (at it, the open was checked)
            if order.is_open and not order.is_working and (
                    price >= order.stop_price if order.triggers_upwards else price <= order.stop_price):
                self._trigger(order, t_j)
                self._activate(order, view, t_j)

    def _on_close(self, symbol: str, feed: BarFeed, j: int) -> list[Order]:
        """Fill resting orders and trigger stops on bar ``j``'s range; return the stops it triggered.

        Within the bar the path is taken as open, low, high, close for a rising bar and
        open, high, low, close for a falling one: the side met first acts first.
        """
        t_j = int(feed.t[j])
        if feed.v[j] <= 0:
            return []
        room = self._room(symbol, t_j, float(feed.v[j]))
        low, high = Decimal(f"{feed.lo[j]:.8f}"), Decimal(f"{feed.h[j]:.8f}")
        triggered: list[Order] = []
        for phase in (("LOW", "HIGH") if feed.c[j] >= feed.o[j] else ("HIGH", "LOW")):
            resting_side = "BUY" if phase == "LOW" else "SELL"
            resting = sorted((o for o in self.open.values() if o.symbol == symbol and o.side == resting_side
                              and o.is_working and o.working_time <= t_j and o.price > 0),
                             key=lambda o: o.order_id)
            for order in resting:
                crossed = low < order.price if phase == "LOW" else high > order.price
                if not order.is_open or not crossed or room <= 0:
                    continue
                qty = min(order.remaining, room)
                # stamped in the bar's last second (then 1 ms apart): fill times strictly increase
                self._fill(order, qty, order.price, t_j + MINUTE - 1000, maker=True)
                self._use(symbol, t_j, qty)
                room -= qty
            for order in self._stops(symbol, t_j):
                if not order.is_open or order.is_working or order.triggers_upwards != (phase == "HIGH"):
                    continue
                if (high >= order.stop_price) if phase == "HIGH" else (low <= order.stop_price):
                    self._trigger(order, t_j + MINUTE - 1)
                    triggered.append(order)
        return triggered
