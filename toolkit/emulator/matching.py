"""The matching engine: replayed bars in, fills and balances out.

Model (see docs/emulator.md for the table):

* The replay time ``T`` lies inside the minute of the *forming* bar ``k``; the
  client sees only bars closed before ``T``. The reference price is the open of
  bar ``k`` (the first trade of the minute, known at ``T``).
* Market orders fill at ``ref × (1 ± (half_spread + impact))``. The half-spread
  is ``max(min_half_spread_bps, spread_coef × (high−low)/close)`` of the last
  closed bar; the impact is ``impact_coef × sqrt(qty / volume of the last closed
  bar)``. At most ``max_participation`` of that volume fills per bar; the rest
  fills at the open of the following bars (partial fills across bars).
* Limit orders that are marketable on arrival take liquidity like a market
  order, capped at their limit price. Resting limit orders fill at their price,
  as maker, on a later bar whose range strictly crosses it (low < price for a
  buy, high > price for a sell), up to ``max_participation`` of that bar's volume.
* Fees are charged in the quote asset (taker or maker rate) on every fill.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Annotated

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from toolkit.clock import Clock
from toolkit.emulator.errors import BinanceError, insufficient_balance, market_closed, unknown_order
from toolkit.emulator.feed import MINUTE, BarFeed
from toolkit.emulator.filters import SymbolRules, round_step
from toolkit.emulator.state import Order, State, Trade

__all__ = ["Engine", "MatchingParams"]

Q8 = Decimal("0.00000001")


class MatchingParams(BaseModel):
    """Parameters of the fill model and fees (Binance VIP0 spot: 0.1 % taker and maker)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    taker_fee: Decimal = Decimal("0.001")
    maker_fee: Decimal = Decimal("0.001")
    min_half_spread_bps: Annotated[float, Field(ge=0)] = 0.5
    spread_coef: Annotated[float, Field(ge=0)] = 0.05
    impact_coef: Annotated[float, Field(ge=0)] = 0.002
    max_participation: Annotated[float, Field(gt=0, le=1)] = 0.25
    market_buy_buffer: Decimal = Decimal("0.05")


class Engine:
    """Orders, fills and balances over replayed bars; every public method is thread-safe."""

    def __init__(self, feeds: dict[str, BarFeed], rules: dict[str, SymbolRules], state: State,
                 clock: Clock, params: MatchingParams | None = None,
                 balances: dict[str, Decimal] | None = None) -> None:
        self.feeds, self.rules, self.state, self.clock = feeds, rules, state, clock
        self.params = params or MatchingParams()
        self.lock = threading.RLock()
        if state.is_new:
            for asset, amount in (balances or {}).items():
                state.set_balance(asset, Decimal(amount), Decimal(0))
            state.set_meta("replay_ms", clock.now_ms())
            state.set_meta("processed_ms", clock.now_ms())
            state.commit()
        self.bal: dict[str, list[Decimal]] = {a: [f, lk] for a, (f, lk) in state.balances().items()}
        for r in rules.values():
            self.bal.setdefault(r.base, [Decimal(0), Decimal(0)])
            self.bal.setdefault(r.quote, [Decimal(0), Decimal(0)])
        self.open: dict[int, Order] = {o.order_id: o for o in state.open_orders()}
        self.processed = int(state.get_meta("processed_ms") or clock.now_ms())
        #: per symbol: (open time of the bar, quantity filled in it) -- the shared participation budget
        self._used: dict[str, tuple[int, Decimal]] = {}

    # -- clock ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        """Hold the lock; on any error drop the uncommitted changes and reload the books from SQLite."""
        with self.lock:
            try:
                yield
            except BaseException:
                self._restore()
                raise

    def _restore(self) -> None:
        self.state.rollback()
        self.bal = {a: [f, lk] for a, (f, lk) in self.state.balances().items()}
        for r in self.rules.values():
            self.bal.setdefault(r.base, [Decimal(0), Decimal(0)])
            self.bal.setdefault(r.quote, [Decimal(0), Decimal(0)])
        self.open = {o.order_id: o for o in self.state.open_orders()}
        self.processed = int(self.state.get_meta("processed_ms") or self.processed)
        self._used = {}

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
                self.state.set_meta("processed_ms", now)
                self.state.set_meta("replay_ms", now)
                self.state.commit()
            return max(now, self.processed)

    # -- prices -------------------------------------------------------------------------------------
    def _market(self, symbol: str, now: int) -> tuple[int, Decimal, float, float]:
        feed = self.feeds[symbol]
        i = feed.index_at(now)
        if i < 0:
            raise market_closed()
        p = i - 1 if i > 0 else i
        hs = max(self.params.min_half_spread_bps * 1e-4,
                 self.params.spread_coef * (feed.h[p] - feed.lo[p]) / feed.c[p])
        return i, Decimal(f"{feed.o[i]:.8f}"), hs, float(feed.v[p])

    def _price(self, rules: SymbolRules, side: str, ref: Decimal, hs: float, qty: Decimal,
               vol: float) -> Decimal:
        share = float(qty) / vol if vol > 0 else 1.0
        slip = hs + self.params.impact_coef * math.sqrt(share)
        if side == "BUY":
            return round_step(ref * Decimal(1 + slip), rules.tick, up=True)
        return max(rules.tick, round_step(ref * Decimal(1 - slip), rules.tick))

    def _cap(self, rules: SymbolRules, vol: float) -> Decimal:
        return round_step(Decimal(f"{vol * self.params.max_participation:.8f}"), rules.step)

    def _room(self, symbol: str, bar_ms: int, cap: Decimal) -> Decimal:
        """Return what is left of ``cap`` in the bar opening at ``bar_ms`` after this symbol's fills in it."""
        if symbol not in self._used:
            raw = self.state.get_meta(f"bar_used:{symbol}")
            t, q = raw.split(":") if raw else ("-1", "0")
            self._used[symbol] = (int(t), Decimal(q))
        t_used, used = self._used[symbol]
        return max(Decimal(0), cap - (used if t_used == bar_ms else Decimal(0)))

    def _use(self, symbol: str, bar_ms: int, fills: list[Trade]) -> None:
        qty = sum((t.qty for t in fills), Decimal(0))
        if not qty:
            return
        t_used, used = self._used.get(symbol, (-1, Decimal(0)))
        total = (used if t_used == bar_ms else Decimal(0)) + qty
        self._used[symbol] = (bar_ms, total)
        self.state.set_meta(f"bar_used:{symbol}", f"{bar_ms}:{total}")

    def quote(self, symbol: str, lag_ms: int = 0) -> tuple[Decimal, Decimal, float]:
        """Return (bid, ask, last closed bar volume) from the last bar closed ``lag_ms`` before now."""
        with self.lock:
            now = self.sync() - lag_ms
            feed, rules = self.feeds[symbol], self.rules[symbol]
            j = feed.last_closed(now)
            if j < 0:
                raise market_closed()
            close = Decimal(f"{feed.c[j]:.8f}")
            hs = max(self.params.min_half_spread_bps * 1e-4,
                     self.params.spread_coef * (feed.h[j] - feed.lo[j]) / feed.c[j])
            bid = round_step(close * Decimal(1 - hs), rules.tick)
            ask = max(round_step(close * Decimal(1 + hs), rules.tick, up=True), bid + rules.tick)
            return bid, ask, float(feed.v[j])

    # -- balances -------------------------------------------------------------------------------------
    def _move(self, asset: str, free: Decimal, locked: Decimal) -> None:
        entry = self.bal.setdefault(asset, [Decimal(0), Decimal(0)])
        entry[0] += free
        entry[1] += locked
        self.state.set_balance(asset, entry[0], entry[1])

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Return ``{asset: (free, locked)}`` after processing bars up to now."""
        with self.lock:
            self.sync()
            return {a: (v[0], v[1]) for a, v in sorted(self.bal.items())}

    # -- orders ---------------------------------------------------------------------------------------
    def place(self, symbol: str, side: str, type_: str, tif: str, qty: Decimal | None, price: Decimal | None,
              quote_qty: Decimal | None, client_id: str | None) -> tuple[Order, list[Trade]]:
        """Validate, accept and (where possible) fill a new order; raise ``BinanceError`` on rejection."""
        with self._atomic():
            now = self.sync()
            rules = self.rules[symbol]
            client_id = client_id or "emu" + secrets.token_hex(10)
            if any(o.symbol == symbol and o.client_order_id == client_id for o in self.open.values()):
                raise BinanceError(400, -2010, "Duplicate order sent.")
            k, ref, hs, vol = self._market(symbol, now)
            bar_ms = int(self.feeds[symbol].t[k])
            by_quote = qty is None and quote_qty is not None
            if by_quote:
                assert quote_qty is not None
                qty = self._size_by_quote(rules, side, quote_qty, ref, hs, vol)
            assert qty is not None
            n_open = sum(1 for o in self.open.values() if o.symbol == symbol)
            rules.check(type_, side, qty, price, ref, n_open)
            fee = max(self.params.taker_fee, self.params.maker_fee)
            if side == "BUY" and by_quote:
                assert quote_qty is not None
                lock_asset, lock = rules.quote, quote_qty  # Binance spends at most quoteOrderQty
            elif side == "BUY":
                unit = price if price is not None else ref * (1 + self.params.market_buy_buffer)
                lock_asset, lock = rules.quote, (unit * qty * (1 + fee)).quantize(Q8, rounding=ROUND_CEILING)
            else:
                lock_asset, lock = rules.base, qty
            ask, bid = ref * Decimal(1 + hs), ref * Decimal(1 - hs)
            crosses = price is not None and (price >= ask if side == "BUY" else price <= bid)
            marketable = type_ == "MARKET" or crosses
            if type_ == "LIMIT_MAKER" and marketable:
                raise BinanceError(400, -2010, "Order would immediately match and take.")
            if self.bal.get(lock_asset, [Decimal(0)])[0] < lock:
                raise insufficient_balance()
            order = Order(
                order_id=self.state.next_id("next_order_id", 1_000_001), symbol=symbol,
                client_order_id=client_id,
                side=side, type=type_, time_in_force=tif, price=price or Decimal(0), orig_qty=qty,
                executed_qty=Decimal(0), cum_quote=Decimal(0), status="NEW", time=now, update_time=now,
                locked=lock, lock_asset=lock_asset, orig_quote_qty=quote_qty or Decimal(0),
            )
            self._move(lock_asset, -lock, lock)
            self.open[order.order_id] = order
            fills: list[Trade] = []
            if marketable:
                q = min(order.remaining, self._room(symbol, bar_ms, self._cap(rules, vol)))
                if tif == "FOK" and q < order.orig_qty:
                    q = Decimal(0)
                if q > 0:
                    px = self._price(rules, side, ref, hs, q, vol)
                    if price is not None:
                        px = min(px, price) if side == "BUY" else max(px, price)
                    fills.extend(self._fill(order, q, px, now, maker=False))
                    self._use(symbol, bar_ms, fills)
            if order.is_open and tif in ("IOC", "FOK"):
                self._close(order, "EXPIRED", now)
            self.state.save_order(order)
            self.state.commit()
            return order, fills

    @staticmethod
    def _cost(qty: Decimal, price: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
        quote = (qty * price).quantize(Q8)
        return quote, (quote * rate).quantize(Q8, rounding=ROUND_FLOOR)

    def _affordable(self, order: Order, qty: Decimal, price: Decimal, rate: Decimal) -> Decimal:
        """Return the largest quantity up to ``qty`` whose cost plus fee the order's lock pays."""
        step = self.rules[order.symbol].step
        q = min(qty, round_step(order.locked / (price * (1 + rate)), step))
        while q > 0 and sum(self._cost(q, price, rate)) > order.locked:
            q -= step
        return max(q, Decimal(0))

    def _size_by_quote(self, rules: SymbolRules, side: str, quote_qty: Decimal, ref: Decimal, hs: float,
                       vol: float) -> Decimal:
        """Return the quantity a ``quoteOrderQty`` order trades (a buy's cost + fee stays within it)."""
        if side == "SELL":
            return round_step(quote_qty / (ref * Decimal(1 - hs)), rules.step)
        rate = 1 + self.params.taker_fee
        guess = round_step(quote_qty / (ref * Decimal(1 + hs) * rate), rules.step)
        # the fill price grows with size (impact), so price the guess and size again at that price:
        # the second quantity is smaller, so its own price (and cost) is no higher
        px = self._price(rules, "BUY", ref, hs, guess, vol)
        return round_step(quote_qty / (px * rate), rules.step)

    def _fill(self, order: Order, qty: Decimal, price: Decimal, when: int, maker: bool) -> list[Trade]:
        rules = self.rules[order.symbol]
        rate = self.params.maker_fee if maker else self.params.taker_fee
        exhausted = False
        if order.side == "BUY":
            # a buy pays only from its own lock; when the lock runs out the rest expires (Binance
            # expires a market order's unfillable remainder)
            wanted, qty = qty, self._affordable(order, qty, price, rate)
            exhausted = qty < wanted
            if qty <= 0:
                self._close(order, "EXPIRED", when)
                return []
        quote, fee = self._cost(qty, price, rate)
        if order.side == "BUY":
            release = quote + fee
            self._move(rules.quote, Decimal(0), -release)
            self._move(rules.base, qty, Decimal(0))
        else:
            release = qty
            self._move(rules.base, Decimal(0), -qty)
            self._move(rules.quote, quote - fee, Decimal(0))
        order.locked -= release
        order.executed_qty += qty
        order.cum_quote += quote
        order.update_time = when
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        trade = Trade(id=self.state.next_id("next_trade_id", 1), order_id=order.order_id, symbol=order.symbol,
                      price=price, qty=qty, quote_qty=quote, commission=fee, commission_asset=rules.quote,
                      time=when, is_buyer=order.side == "BUY", is_maker=maker)
        self.state.save_trade(trade)
        if order.status == "FILLED":
            self._close(order, "FILLED", when)
        elif exhausted:
            self._close(order, "EXPIRED", when)
        return [trade]

    def _close(self, order: Order, status: str, when: int) -> None:
        if order.locked:
            self._move(order.lock_asset, order.locked, -order.locked)
            order.locked = Decimal(0)
        order.status = status
        order.update_time = when
        self.open.pop(order.order_id, None)
        self.state.save_order(order)

    def cancel(self, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        """Cancel an open order; raise -2011 when it does not exist or is no longer open."""
        with self._atomic():
            now = self.sync()
            order = self._find_open(symbol, order_id, client_id)
            if order is None:
                raise unknown_order(cancel=True)
            self._close(order, "CANCELED", now)
            self.state.commit()
            return order

    def cancel_all(self, symbol: str) -> list[Order]:
        """Cancel every open order of ``symbol``."""
        with self._atomic():
            now = self.sync()
            done = [o for o in list(self.open.values()) if o.symbol == symbol]
            for order in done:
                self._close(order, "CANCELED", now)
            self.state.commit()
            return done

    def _find_open(self, symbol: str, order_id: int | None, client_id: str | None) -> Order | None:
        for o in self.open.values():
            same = o.order_id == order_id if order_id is not None else o.client_order_id == client_id
            if o.symbol == symbol and same:
                return o
        return None

    def order(self, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        """Return one order (open orders first, then history); raise -2013 when unknown."""
        with self.lock:
            self.sync()
            found = self._find_open(symbol, order_id, client_id) or \
                self.state.get_order(symbol, order_id, client_id)
            if found is None:
                raise unknown_order(cancel=False)
            return found

    def open_orders(self, symbol: str | None) -> list[Order]:
        """Return open orders (of one symbol or all), oldest first."""
        with self.lock:
            self.sync()
            found = [o for o in self.open.values() if symbol in (None, o.symbol)]
            return sorted(found, key=lambda o: o.order_id)

    # -- bar events -------------------------------------------------------------------------------------
    def _process(self, since: int, now: int) -> None:
        for symbol, feed in self.feeds.items():
            if not any(o.symbol == symbol for o in self.open.values()):
                continue
            rules = self.rules[symbol]
            j0 = int(np.searchsorted(feed.t, since - MINUTE, side="right"))
            j1 = int(np.searchsorted(feed.t, now, side="right"))
            for j in range(j0, j1):
                live = [o for o in self.open.values() if o.symbol == symbol]
                if not live:
                    break
                t_j = int(feed.t[j])
                if since < t_j:
                    self._on_open(rules, feed, j, [o for o in live if o.type == "MARKET" and o.time < t_j])
                if since < t_j + MINUTE <= now:
                    self._on_close(rules, feed, j, [o for o in live if o.type != "MARKET" and o.time < t_j])

    def _on_open(self, rules: SymbolRules, feed: BarFeed, j: int, orders: list[Order]) -> None:
        if not orders:
            return
        p = max(j - 1, 0)
        ref = Decimal(f"{feed.o[j]:.8f}")
        hs = max(self.params.min_half_spread_bps * 1e-4,
                 self.params.spread_coef * (feed.h[p] - feed.lo[p]) / feed.c[p])
        t_j = int(feed.t[j])
        room = self._room(rules.symbol, t_j, self._cap(rules, float(feed.v[p])))
        for order in orders:
            q = min(order.remaining, room)
            if q <= 0:
                break
            px = self._price(rules, order.side, ref, hs, q, float(feed.v[p]))
            done = self._fill(order, q, px, t_j, maker=False)
            self._use(rules.symbol, t_j, done)
            room -= sum((t.qty for t in done), Decimal(0))
            self.state.save_order(order)

    def _on_close(self, rules: SymbolRules, feed: BarFeed, j: int, orders: list[Order]) -> None:
        t_j = int(feed.t[j])
        room = self._room(rules.symbol, t_j, self._cap(rules, float(feed.v[j])))
        for order in orders:
            px = float(order.price)
            crossed = feed.lo[j] < px if order.side == "BUY" else feed.h[j] > px
            if not crossed:
                continue
            q = min(order.remaining, room)
            if q <= 0:
                break
            done = self._fill(order, q, order.price, t_j + MINUTE - 1, maker=True)
            self._use(rules.symbol, t_j, done)
            room -= sum((t.qty for t in done), Decimal(0))
            self.state.save_order(order)
