"""The signed spot endpoints: account, orders, OCO order lists and the account's trades.

Parameters are checked the way Binance documents them (mandatory fields per order
type, the supported parameter combinations of ``myTrades``); the answers have
Binance's shapes (``newOrderRespType`` ACK / RESULT / FULL, order lists with
``orderReports``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit.emulator.errors import BinanceError, mandatory
from toolkit.emulator.filters import SymbolRules
from toolkit.emulator.orders import Engine, Leg
from toolkit.emulator.params import (
    Request,
    dec,
    f8,
    integer,
    limit_param,
    new_client_id,
    side,
    symbol_rules,
    time_in_force,
)
from toolkit.emulator.state import STOP_TYPES, Order, OrderList, Trade

__all__ = ["Trading", "order_json", "trade_json"]

ORDER_TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER", *STOP_TYPES)
DAY_MS = 86_400_000


def order_json(o: Order) -> dict[str, Any]:
    """Return the GET /api/v3/order shape of an order."""
    return {
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": o.order_list_id,
        "clientOrderId": o.client_order_id, "price": f8(o.price), "origQty": f8(o.orig_qty),
        "executedQty": f8(o.executed_qty), "cummulativeQuoteQty": f8(o.cum_quote), "status": o.status,
        "timeInForce": o.time_in_force, "type": o.type, "side": o.side, "stopPrice": f8(o.stop_price),
        "icebergQty": f8(0), "time": o.time, "updateTime": o.update_time, "isWorking": o.is_working,
        "workingTime": o.working_time, "origQuoteOrderQty": f8(o.orig_quote_qty),
        "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def _report(o: Order, keys: tuple[str, ...]) -> dict[str, Any]:
    full = order_json(o)
    out = {k: full[k] for k in keys}
    if o.is_stop:
        out["stopPrice"] = full["stopPrice"]
    return out


_RESULT_KEYS = ("symbol", "orderId", "orderListId", "clientOrderId", "price", "origQty", "executedQty",
                "origQuoteOrderQty", "cummulativeQuoteQty", "status", "timeInForce", "type", "side", "workingTime",
                "selfTradePreventionMode")
_CANCEL_KEYS = ("symbol", "orderId", "orderListId", "price", "origQty", "executedQty", "origQuoteOrderQty",
                "cummulativeQuoteQty", "status", "timeInForce", "type", "side", "selfTradePreventionMode")


def trade_json(t: Trade, list_id: int = -1) -> dict[str, Any]:
    """Return the GET /api/v3/myTrades shape of a fill."""
    return {
        "symbol": t.symbol, "id": t.id, "orderId": t.order_id, "orderListId": list_id, "price": f8(t.price),
        "qty": f8(t.qty), "quoteQty": f8(t.quote_qty), "commission": f8(t.commission),
        "commissionAsset": t.commission_asset, "time": t.time, "isBuyer": t.is_buyer,
        "isMaker": t.is_maker, "isBestMatch": True,
    }


class Trading:
    """Handlers of the signed endpoints (the caller has authenticated the request)."""

    def __init__(self, engine: Engine, rules: dict[str, SymbolRules],
                 order_usage: Callable[[], list[dict[str, Any]]]) -> None:
        self.engine, self.rules, self._order_usage = engine, rules, order_usage

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Any]]:
        """Return the route table of the signed endpoints."""
        return {
            ("GET", "/api/v3/account"): self.account,
            ("POST", "/api/v3/order"): self.new_order,
            ("POST", "/api/v3/order/test"): self.test_order,
            ("GET", "/api/v3/order"): self.get_order,
            ("DELETE", "/api/v3/order"): self.cancel_order,
            ("GET", "/api/v3/openOrders"): self.open_orders,
            ("DELETE", "/api/v3/openOrders"): self.cancel_open_orders,
            ("GET", "/api/v3/allOrders"): self.all_orders,
            ("GET", "/api/v3/myTrades"): self.my_trades,
            ("POST", "/api/v3/orderList/oco"): self.new_oco,
            ("POST", "/api/v3/order/oco"): self.new_oco_legacy,
            ("GET", "/api/v3/orderList"): self.get_order_list,
            ("DELETE", "/api/v3/orderList"): self.cancel_order_list,
            ("GET", "/api/v3/openOrderList"): self.open_order_lists,
            ("GET", "/api/v3/allOrderList"): self.all_order_lists,
            ("GET", "/api/v3/rateLimit/order"): lambda r: self._order_usage(),
        }

    def _rules(self, p: dict[str, str]) -> SymbolRules:
        return symbol_rules(self.rules, p)

    # -- account --------------------------------------------------------------------------------------
    def account(self, req: Request) -> dict[str, Any]:
        bal = self.engine.balances()
        p = self.engine.params
        omit = req.params.get("omitZeroBalances") == "true"
        return {
            "makerCommission": int(p.maker_fee * 10000), "takerCommission": int(p.taker_fee * 10000),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": f8(p.maker_fee), "taker": f8(p.taker_fee),
                                "buyer": f8(0), "seller": f8(0)},
            "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.engine.processed,
            "accountType": "SPOT", "permissions": ["SPOT"], "uid": 1,
            "balances": [{"asset": a, "free": f8(f), "locked": f8(lk)} for a, (f, lk) in bal.items()
                         if not (omit and f == 0 and lk == 0)],
        }

    # -- orders ---------------------------------------------------------------------------------------
    def _order_args(self, p: dict[str, str]) -> dict[str, Any]:
        """Check a new order's parameters per type (Binance's mandatory fields) and return the engine's."""
        rules = self._rules(p)
        side_ = side(p)
        type_ = p.get("type")
        if type_ not in ORDER_TYPES:
            raise BinanceError(400, -1116, "Invalid orderType.")
        if p.get("trailingDelta"):
            raise BinanceError(400, -2010, "Trailing stop orders are not supported by the emulator.")
        if p.get("icebergQty"):
            raise BinanceError(400, -2010, "Iceberg orders are not supported by the emulator.")
        qty, quote_qty = dec(p, "quantity", False), dec(p, "quoteOrderQty", False)
        price, stop = dec(p, "price", False), dec(p, "stopPrice", False)
        tif = p.get("timeInForce") or "GTC"
        needs_price = type_ in ("LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
        needs_tif = type_ in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT")
        if type_ == "MARKET":
            if qty is None and quote_qty is None:
                raise BinanceError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, "
                                   "but both were empty/null!")
            if qty is not None and quote_qty is not None:
                raise BinanceError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        elif qty is None:
            raise mandatory("quantity")
        if type_ != "MARKET" and quote_qty is not None:
            raise BinanceError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
        if needs_price and price is None:
            raise mandatory("price")
        if not needs_price and price is not None:
            raise BinanceError(400, -1106, "Parameter 'price' sent when not required.")
        if type_ in STOP_TYPES and stop is None:
            raise mandatory("stopPrice")
        if type_ not in STOP_TYPES and stop is not None:
            raise BinanceError(400, -1106, "Parameter 'stopPrice' sent when not required.")
        if needs_tif:
            time_in_force(p, "timeInForce")
        return {"symbol": rules.symbol, "side": side_, "type_": type_, "tif": tif, "qty": qty, "price": price,
                "quote_qty": quote_qty, "client_id": p.get("newClientOrderId"), "stop_price": stop}

    def new_order(self, req: Request) -> dict[str, Any]:
        resp = req.params.get("newOrderRespType") or "FULL"
        order, fills = self.engine.place(**self._order_args(req.params))
        out: dict[str, Any] = {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
                               "clientOrderId": order.client_order_id, "transactTime": order.time}
        if resp == "ACK":
            return out
        out |= _report(order, _RESULT_KEYS)
        if resp == "FULL":
            out["fills"] = [{"price": f8(t.price), "qty": f8(t.qty), "commission": f8(t.commission),
                             "commissionAsset": t.commission_asset, "tradeId": t.id} for t in fills]
        return out

    def test_order(self, req: Request) -> dict[str, Any]:
        self._order_args(req.params)
        return {}

    def _ids(self, req: Request) -> tuple[str, int | None, str | None]:
        rules = self._rules(req.params)
        order_id, client = integer(req.params, "orderId"), req.params.get("origClientOrderId") or None
        if order_id is None and client is None:
            raise BinanceError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                               "but both were empty/null!")
        return rules.symbol, order_id, client

    def get_order(self, req: Request) -> dict[str, Any]:
        return order_json(self.engine.order(*self._ids(req)))

    def _cancel_json(self, order: Order, new_client: str | None = None) -> dict[str, Any]:
        return _report(order, _CANCEL_KEYS) | {
            "origClientOrderId": order.client_order_id, "transactTime": order.update_time,
            "clientOrderId": new_client_id(new_client)}

    def cancel_order(self, req: Request) -> dict[str, Any]:
        order = self.engine.cancel(*self._ids(req))
        return self._cancel_json(order, req.params.get("newClientOrderId"))

    def cancel_open_orders(self, req: Request) -> list[dict[str, Any]]:
        rules = self._rules(req.params)
        single, lists = self.engine.cancel_all(rules.symbol)
        if not single and not lists:
            raise BinanceError(400, -2011, "Unknown order sent.")
        return [self._cancel_json(o) for o in single] + [self._list_json(lst, orders, reports=_CANCEL_KEYS)
                                                         for lst, orders in lists]

    def open_orders(self, req: Request) -> list[dict[str, Any]]:
        symbol = self._rules(req.params).symbol if req.params.get("symbol") else None
        return [order_json(o) for o in self.engine.open_orders(symbol)]

    def _window(self, p: dict[str, str]) -> tuple[int | None, int | None]:
        start, end = integer(p, "startTime"), integer(p, "endTime")
        if start is not None and end is not None and end - start > DAY_MS:
            raise BinanceError(400, -1127, "More than 24 hours between startTime and endTime.")
        return start, end

    def all_orders(self, req: Request) -> list[dict[str, Any]]:
        rules, p = self._rules(req.params), req.params
        start, end = self._window(p)
        with self.engine.lock:
            self.engine.sync()
            rows = self.engine.state.orders(rules.symbol, integer(p, "orderId"), start, end, limit_param(p, 500, 1000))
            live = {o.order_id: o for o in self.engine.open.values()}
            return [order_json(live.get(o.order_id, o)) for o in rows]

    def my_trades(self, req: Request) -> list[dict[str, Any]]:
        rules, p = self._rules(req.params), req.params
        given = frozenset(k for k in ("orderId", "startTime", "endTime", "fromId") if p.get(k) not in (None, ""))
        if given not in _TRADE_COMBINATIONS:  # Binance's supported combinations (2022-12-05)
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        start, end = self._window(p)
        with self.engine.lock:
            self.engine.sync()
            rows = self.engine.state.trades(rules.symbol, integer(p, "orderId"), integer(p, "fromId"), start, end,
                                            limit_param(p, 500, 1000))
            list_ids = {o.order_id: o.order_list_id for o in (
                self.engine.state.get_order(rules.symbol, i) for i in {t.order_id for t in rows}) if o is not None}
        return [trade_json(t, list_ids.get(t.order_id, -1)) for t in rows]

    # -- order lists ----------------------------------------------------------------------------------
    def _list_json(self, lst: OrderList, orders: list[Order],
                   reports: tuple[str, ...] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "orderListId": lst.order_list_id, "contingencyType": lst.contingency_type,
            "listStatusType": lst.list_status_type, "listOrderStatus": lst.list_order_status,
            "listClientOrderId": lst.list_client_order_id, "transactionTime": lst.transaction_time,
            "symbol": lst.symbol,
            "orders": [{"symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_order_id}
                       for o in orders],
        }
        if reports is not None:
            out["orderReports"] = [_report(o, reports) | (
                {"transactTime": o.time} if reports is _RESULT_KEYS else
                {"origClientOrderId": o.client_order_id, "clientOrderId": o.client_order_id}) for o in orders]
        return out

    def _oco(self, p: dict[str, str], above: Leg, below: Leg) -> dict[str, Any]:
        rules = self._rules(p)
        side_ = side(p)
        qty = dec(p, "quantity")
        assert qty is not None
        lst, orders = self.engine.place_oco(rules.symbol, side_, qty, above, below, p.get("listClientOrderId"))
        return self._list_json(lst, orders, reports=_RESULT_KEYS)

    def new_oco(self, req: Request) -> dict[str, Any]:
        """Place an OCO from ``above*`` and ``below*`` legs (``POST /api/v3/orderList/oco``)."""
        p = req.params
        legs = []
        for prefix in ("above", "below"):
            type_ = p.get(f"{prefix}Type")
            if type_ not in ("LIMIT_MAKER", *STOP_TYPES):
                raise mandatory(f"{prefix}Type") if not type_ else BinanceError(400, -1116, "Invalid orderType.")
            price, stop = dec(p, f"{prefix}Price", False), dec(p, f"{prefix}StopPrice", False)
            if type_ in ("LIMIT_MAKER", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") and price is None:
                raise mandatory(f"{prefix}Price")
            if type_ in STOP_TYPES and stop is None:
                raise mandatory(f"{prefix}StopPrice")
            tif = time_in_force(p, f"{prefix}TimeInForce") if type_.endswith("_LIMIT") else "GTC"
            legs.append(Leg(type_, price, stop, tif, p.get(f"{prefix}ClientOrderId")))
        return self._oco(p, legs[0], legs[1])

    def new_oco_legacy(self, req: Request) -> dict[str, Any]:
        """Place an OCO the deprecated way (``POST /api/v3/order/oco``): a LIMIT_MAKER and a stop-loss leg."""
        p = req.params
        price, stop = dec(p, "price"), dec(p, "stopPrice")
        limit_price = dec(p, "stopLimitPrice", False)
        tif = time_in_force(p, "stopLimitTimeInForce") if limit_price is not None else "GTC"
        maker = Leg("LIMIT_MAKER", price, None, "GTC", p.get("limitClientOrderId"))
        stop_leg = Leg("STOP_LOSS_LIMIT" if limit_price is not None else "STOP_LOSS", limit_price, stop, tif,
                       p.get("stopClientOrderId"))
        above, below = (maker, stop_leg) if p.get("side") == "SELL" else (stop_leg, maker)
        return self._oco(p, above, below)

    def _list_ids(self, p: dict[str, str]) -> tuple[int | None, str | None]:
        list_id = integer(p, "orderListId")
        client = p.get("listClientOrderId") or p.get("origClientOrderId") or None
        if list_id is None and client is None:
            raise BinanceError(400, -1102, "Param 'listClientOrderId' or 'orderListId' must be sent, "
                               "but both were empty/null!")
        return list_id, client

    def get_order_list(self, req: Request) -> dict[str, Any]:
        list_id, client = self._list_ids(req.params)
        with self.engine.lock:
            self.engine.sync()
            found = self.engine.state.order_lists(list_id=list_id, client_id=client, limit=1)
            if not found:
                raise BinanceError(400, -2013, "Order list does not exist.")
            return self._list_json(found[0], self.engine.list_orders(found[0]))

    def cancel_order_list(self, req: Request) -> dict[str, Any]:
        rules = self._rules(req.params)
        lst, orders = self.engine.cancel_list(rules.symbol, *self._list_ids(req.params))
        return self._list_json(lst, orders, reports=_CANCEL_KEYS)

    def open_order_lists(self, req: Request) -> list[dict[str, Any]]:
        with self.engine.lock:
            self.engine.sync()
            return [self._list_json(lst, self.engine.list_orders(lst))
                    for lst in self.engine.state.order_lists(open_only=True, limit=10**6)]

    def all_order_lists(self, req: Request) -> list[dict[str, Any]]:
        p = req.params
        from_id = integer(p, "fromId")
        start, end = self._window(p)
        if from_id is not None and (start is not None or end is not None):
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        with self.engine.lock:
            self.engine.sync()
            rows = self.engine.state.order_lists(from_id=from_id, start=start, end=end, limit=limit_param(p, 500, 1000))
            return [self._list_json(lst, self.engine.list_orders(lst)) for lst in rows]


_TRADE_COMBINATIONS = {frozenset(c) for c in (
    (), ("orderId",), ("startTime",), ("endTime",), ("fromId",), ("startTime", "endTime"), ("orderId", "fromId"))}
