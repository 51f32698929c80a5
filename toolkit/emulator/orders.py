"""Order entry on top of the engine core: validation, locks, takers, stops, OCO lists and queries.

Locks follow what Binance reserves: a limit buy locks ``price x quantity`` of the quote
asset (no fee buffer: a buyer's fee comes out of the base asset received), a sell locks
its quantity, a market order locks exactly what its walk of the book fills (it fills
or expires at once), a stop order locks like its limit order from the moment it is
placed, and an OCO locks once for both legs.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from toolkit.emulator.book import Book
from toolkit.emulator.errors import BinanceError, insufficient_balance, market_closed, unknown_order
from toolkit.emulator.filters import SymbolRules
from toolkit.emulator.matching import ZERO, EngineCore, MarketView
from toolkit.emulator.params import new_client_id
from toolkit.emulator.state import STOP_TYPES, Order, OrderList, Trade

__all__ = ["Engine", "Leg"]


@dataclass(frozen=True)
class Leg:
    """One leg of an OCO as requested: its type, prices, time in force and client order id."""

    type: str
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str
    client_order_id: str | None


class Engine(EngineCore):
    """The matching engine: :class:`EngineCore` plus order entry, cancels and queries."""

    # -- entry helpers --------------------------------------------------------------------------
    def _view(self, symbol: str, now: int) -> MarketView:
        view = self.market(symbol, now)
        if view is None or not view.open:
            raise market_closed()
        return view

    def _check_duplicate(self, symbol: str, client_id: str) -> None:
        if any(o.symbol == symbol and o.client_order_id == client_id for o in self.open.values()):
            raise BinanceError(400, -2010, "Duplicate order sent.")

    def _n_open(self, symbol: str, stops_only: bool = False) -> int:
        return sum(1 for o in self.open.values() if o.symbol == symbol and (o.is_stop or not stops_only))

    def _new_order(self, rules: SymbolRules, side: str, type_: str, tif: str, qty: Decimal, price: Decimal | None,
                   client_id: str, now: int, lock: Decimal, lock_asset: str, quote_qty: Decimal | None = None,
                   stop_price: Decimal | None = None, list_id: int = -1) -> Order:
        if self.free(lock_asset) < lock:
            raise insufficient_balance()
        order = Order(
            order_id=self._next_id("next_order_id", 1_000_001), symbol=rules.symbol,
            client_order_id=client_id, side=side, type=type_, time_in_force=tif, price=price or ZERO,
            orig_qty=qty, executed_qty=ZERO, cum_quote=ZERO, status="NEW", time=now, update_time=now,
            locked=lock, lock_asset=lock_asset, orig_quote_qty=quote_qty or ZERO, stop_price=stop_price or ZERO,
            order_list_id=list_id, working_time=-1 if type_ in STOP_TYPES else now,
        )
        self._move(lock_asset, -lock, lock)
        self.open[order.order_id] = order
        self._save(order)
        return order

    def _limit_lock(self, rules: SymbolRules, side: str, qty: Decimal, price: Decimal) -> tuple[Decimal, str]:
        return ((price * qty).quantize(Decimal("0.00000001")), rules.quote) if side == "BUY" else (qty, rules.base)

    # -- new orders -----------------------------------------------------------------------------
    def place(self, symbol: str, side: str, type_: str, tif: str, qty: Decimal | None, price: Decimal | None,
              quote_qty: Decimal | None, client_id: str | None,
              stop_price: Decimal | None = None) -> tuple[Order, list[Trade]]:
        """Validate, accept and (where possible) fill a new order; raise ``BinanceError`` on rejection."""
        with self._atomic():
            now = self.sync()
            rules = self.rules[symbol]
            cid = new_client_id(client_id)
            self._check_duplicate(symbol, cid)
            view = self._view(symbol, now)
            book = self.book(symbol, view)
            if type_ == "MARKET":
                order, fills = self._place_market(rules, view, book, side, qty, quote_qty, cid, now)
            elif type_ in STOP_TYPES:
                assert qty is not None and stop_price is not None
                order, fills = self._place_stop(rules, view, side, type_, tif, qty, price, stop_price, cid, now), []
            else:
                assert qty is not None and price is not None
                order, fills = self._place_limit(rules, view, book, side, type_, tif, qty, price, cid, now)
            self._commit()
            return order, fills

    def _place_market(self, rules: SymbolRules, view: MarketView, book: Book, side: str, qty: Decimal | None,
                      quote_qty: Decimal | None, cid: str, now: int) -> tuple[Order, list[Trade]]:
        taken = self.taken(rules.symbol, book.bar_ms, side)
        if quote_qty is None:
            assert qty is not None
            rules.check("MARKET", side, qty, None, view.last, self._n_open(rules.symbol))
            levels, exhausted = book.walk(side, taken, qty=int(qty / rules.step))
        else:
            rules.check_quote_order(quote_qty, view.last)
            levels, exhausted = book.walk(side, taken, budget=quote_qty)
        walked = sum(lv.qty for lv in levels) * rules.step
        cost = sum((book.price(lv.price) * book.qty(lv.qty) for lv in levels), ZERO)
        if side == "BUY":
            need, lock, asset = (quote_qty if quote_qty is not None else cost), cost, rules.quote
        else:
            need = qty if qty is not None else walked
            lock, asset = need, rules.base
        if self.free(asset) < need:
            raise insufficient_balance()
        if qty is None:  # quoteOrderQty: the quantity is what the walk can get
            qty = walked if walked > 0 else rules.step
        order = self._new_order(rules, side, "MARKET", "GTC", qty, None, cid, now, lock, asset, quote_qty=quote_qty)
        fills = [self._fill(order, book.qty(lv.qty), book.price(lv.price), now, maker=False) for lv in levels]
        if levels:
            self._record_taken(rules.symbol, book.bar_ms, side, sum(lv.qty for lv in levels))
        if order.is_open:
            # quoteOrderQty: FILLED when the quote ran out first, EXPIRED when the book did (Binance 2023-03)
            if quote_qty is not None and not exhausted and order.executed_qty > 0:
                order.orig_qty = order.executed_qty
                self._close(order, "FILLED", now)
            else:
                self._close(order, "EXPIRED", now)
        elif quote_qty is not None and exhausted:
            self._close(order, "EXPIRED", now)
        return order, fills

    def _place_limit(self, rules: SymbolRules, view: MarketView, book: Book, side: str, type_: str, tif: str,
                     qty: Decimal, price: Decimal, cid: str, now: int) -> tuple[Order, list[Trade]]:
        rules.check(type_, side, qty, price, view.last, self._n_open(rules.symbol))
        taken = self.taken(rules.symbol, book.bar_ms, side)
        steps = int(qty / rules.step)
        levels, _ = book.walk(side, taken, qty=steps, limit=book.ticks(price, up=side == "SELL"))
        if type_ == "LIMIT_MAKER" and levels:
            raise BinanceError(400, -2010, "Order would immediately match and take.")
        lock, asset = self._limit_lock(rules, side, qty, price)
        order = self._new_order(rules, side, type_, tif, qty, price, cid, now, lock, asset)
        fills: list[Trade] = []
        if tif == "FOK" and sum(lv.qty for lv in levels) < steps:
            self._close(order, "EXPIRED", now)
            return order, fills
        if levels:
            fills, _ = self._take(order, book, now, limit=price)
        if order.is_open and tif in ("IOC", "FOK"):
            self._close(order, "EXPIRED", now)
        return order, fills

    def _check_stop(self, rules: SymbolRules, view: MarketView, side: str, type_: str, qty: Decimal,
                    price: Decimal | None, stop: Decimal, n_open: int, n_stops: int) -> None:
        rules.check(type_, side, qty, price, view.last, n_open, stop_price=stop, open_algo=n_stops)
        upwards = (side == "BUY") == type_.startswith("STOP_LOSS")
        if (stop <= view.last) if upwards else (stop >= view.last):
            raise BinanceError(400, -2010, "Order would trigger immediately.")

    def _place_stop(self, rules: SymbolRules, view: MarketView, side: str, type_: str, tif: str, qty: Decimal,
                    price: Decimal | None, stop: Decimal, cid: str, now: int) -> Order:
        self._check_stop(rules, view, side, type_, qty, price, stop, self._n_open(rules.symbol),
                         self._n_open(rules.symbol, stops_only=True))
        lock, asset = self._limit_lock(rules, side, qty, price if price is not None else stop)
        return self._new_order(rules, side, type_, tif, qty, price, cid, now, lock, asset, stop_price=stop)

    # -- OCO ------------------------------------------------------------------------------------
    def place_oco(self, symbol: str, side: str, qty: Decimal, above: Leg, below: Leg,
                  list_client_id: str | None) -> tuple[OrderList, list[Order]]:
        """Place an OCO: the ``above`` and ``below`` legs; the first to work cancels the other.

        SELL: above is LIMIT_MAKER or TAKE_PROFIT(_LIMIT), below STOP_LOSS(_LIMIT);
        BUY: above is STOP_LOSS(_LIMIT), below LIMIT_MAKER or TAKE_PROFIT(_LIMIT).
        """
        with self._atomic():
            now = self.sync()
            rules = self.rules[symbol]
            view = self._view(symbol, now)
            stop_leg, other_leg = (below, above) if side == "SELL" else (above, below)
            if not stop_leg.type.startswith("STOP_LOSS") or other_leg.type not in (
                    "LIMIT_MAKER", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"):
                raise BinanceError(400, -1014, "Unsupported order combination.")
            lcid = new_client_id(list_client_id)
            if any(lst.list_client_order_id == lcid for lst in self.lists.values()):
                raise BinanceError(400, -2010, "Duplicate order sent.")
            legs = [(above, True), (below, False)]
            n_open, n_stops = self._n_open(symbol), self._n_open(symbol, stops_only=True)
            for leg, is_above in legs:
                self._check_duplicate(symbol, new_client_id(leg.client_order_id))
                ref = leg.price if leg.type == "LIMIT_MAKER" else leg.stop_price
                if ref is None or (ref <= view.last if is_above else ref >= view.last):
                    raise BinanceError(400, -2010, "The relationship of the prices for the orders is not correct.")
                if leg.type == "LIMIT_MAKER":
                    rules.check("LIMIT_MAKER", side, qty, leg.price, view.last, n_open + 1)
                else:
                    assert leg.stop_price is not None
                    self._check_stop(rules, view, side, leg.type, qty, leg.price, leg.stop_price, n_open + 1,
                                     n_stops)
                    n_stops += 1
            prices = [leg.price if leg.price is not None else leg.stop_price for leg, _ in legs]
            lock, asset = self._limit_lock(rules, side, qty, max(p for p in prices if p is not None))
            if self.free(asset) < lock:
                raise insufficient_balance()
            list_id = self._next_id("next_order_list_id", 1)
            orders: list[Order] = []
            for leg, _ in legs:
                tif = leg.time_in_force if leg.type.endswith("_LIMIT") else "GTC"
                orders.append(self._new_order(rules, side, leg.type, tif, qty, leg.price,
                                              new_client_id(leg.client_order_id), now, ZERO if orders else lock,
                                              asset, stop_price=leg.stop_price, list_id=list_id))
            lst = OrderList(order_list_id=list_id, symbol=symbol, list_client_order_id=lcid, contingency_type="OCO",
                            list_status_type="EXEC_STARTED", list_order_status="EXECUTING", transaction_time=now,
                            order_ids=[o.order_id for o in orders])
            self.lists[list_id] = lst
            self.state.save_order_list(lst)
            self._commit()
            return lst, orders

    def cancel_list(self, symbol: str, list_id: int | None, client_id: str | None) -> tuple[OrderList, list[Order]]:
        """Cancel both legs of an open OCO; raise -2011 when there is no such open list."""
        with self._atomic():
            now = self.sync()
            found = [lst for lst in self.lists.values() if lst.symbol == symbol and (
                lst.order_list_id == list_id if list_id is not None else lst.list_client_order_id == client_id)]
            if not found:
                raise BinanceError(400, -2011, "Unknown order sent.")
            lst, orders = self._cancel_list(found[0], now)
            self._commit()
            return lst, orders

    def _cancel_list(self, lst: OrderList, now: int) -> tuple[OrderList, list[Order]]:
        orders = []
        for order_id in lst.order_ids:
            order = self._lookup(lst.symbol, order_id)
            assert order is not None
            if order.is_open:
                self._close(order, "CANCELED", now)
            orders.append(order)
        self._finish_list(lst, now)
        return lst, orders

    # -- cancels --------------------------------------------------------------------------------
    def cancel(self, symbol: str, order_id: int | None, client_id: str | None) -> Order:
        """Cancel an open order (an OCO leg cancels its whole list); raise -2011 when it is not open."""
        with self._atomic():
            now = self.sync()
            order = self._find_open(symbol, order_id, client_id)
            if order is None:
                raise unknown_order(cancel=True)
            lst = self.lists.get(order.order_list_id)
            if lst is not None:
                self._cancel_list(lst, now)
            else:
                self._close(order, "CANCELED", now)
            self._commit()
            return order

    def cancel_all(self, symbol: str) -> tuple[list[Order], list[tuple[OrderList, list[Order]]]]:
        """Cancel every open order of ``symbol``: the single orders, then the order lists."""
        with self._atomic():
            now = self.sync()
            lists = [self._cancel_list(lst, now) for lst in list(self.lists.values()) if lst.symbol == symbol]
            single = [o for o in list(self.open.values()) if o.symbol == symbol and o.order_list_id < 0]
            for order in single:
                self._close(order, "CANCELED", now)
            self._commit()
            return sorted(single, key=lambda o: o.order_id), lists

    def _find_open(self, symbol: str, order_id: int | None, client_id: str | None) -> Order | None:
        for o in self.open.values():
            same = o.order_id == order_id if order_id is not None else o.client_order_id == client_id
            if o.symbol == symbol and same:
                return o
        return None

    # -- queries --------------------------------------------------------------------------------
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

    def list_orders(self, lst: OrderList) -> list[Order]:
        """Return the orders of a list as they are now."""
        out = []
        for order_id in lst.order_ids:
            order = self._lookup(lst.symbol, order_id)
            assert order is not None
            out.append(order)
        return out
