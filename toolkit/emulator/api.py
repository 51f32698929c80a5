"""Binance spot REST endpoints over the engine: parameters in, Binance-shaped JSON out."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from toolkit.emulator.errors import BinanceError, bad_param, invalid_symbol, mandatory
from toolkit.emulator.feed import MINUTE, BarFeed
from toolkit.emulator.filters import SymbolRules, round_step
from toolkit.emulator.matching import Engine
from toolkit.emulator.state import Order, Trade

__all__ = ["Api", "Request"]

RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
]


@dataclass
class Request:
    """One parsed API request as the handlers see it."""

    method: str
    path: str
    params: dict[str, str]
    raw_query: str
    raw_body: str
    api_key: str | None
    #: the server's time for this request: replay time, shifted by a clock_skew fault
    server_ms: int
    lag_ms: int = 0


def _f8(value: Decimal | float) -> str:
    return f"{value:.8f}"


def _text(p: dict[str, str], name: str, required: bool = True) -> str | None:
    value = p.get(name)
    if value in (None, ""):
        if required:
            raise mandatory(name)
        return None
    return value


def _dec(p: dict[str, str], name: str, required: bool = True) -> Decimal | None:
    raw = _text(p, name, required)
    if raw is None:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation as exc:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                           "legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.") from exc
    if not value.is_finite() or value < 0:
        raise bad_param(name)
    return value


def _int(p: dict[str, str], name: str, default: int | None = None) -> int | None:
    raw = p.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(str(raw))
    except ValueError as exc:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                           "legal range is '^-?[0-9]{1,20}$'.") from exc


def _limit(p: dict[str, str], default: int, maximum: int) -> int:
    value = _int(p, "limit", default)
    assert value is not None
    if value <= 0 or value > maximum:
        raise bad_param("limit")
    return value


def order_json(o: Order) -> dict[str, Any]:
    """Return the GET /api/v3/order shape of an order."""
    return {
        "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1, "clientOrderId": o.client_order_id,
        "price": _f8(o.price), "origQty": _f8(o.orig_qty), "executedQty": _f8(o.executed_qty),
        "cummulativeQuoteQty": _f8(o.cum_quote), "status": o.status, "timeInForce": o.time_in_force,
        "type": o.type, "side": o.side, "stopPrice": "0.00000000", "icebergQty": "0.00000000",
        "time": o.time, "updateTime": o.update_time, "isWorking": True, "workingTime": o.time,
        "origQuoteOrderQty": _f8(o.orig_quote_qty), "selfTradePreventionMode": "EXPIRE_MAKER",
    }


def trade_json(t: Trade) -> dict[str, Any]:
    """Return the GET /api/v3/myTrades shape of a fill."""
    return {
        "symbol": t.symbol, "id": t.id, "orderId": t.order_id, "orderListId": -1, "price": _f8(t.price),
        "qty": _f8(t.qty), "quoteQty": _f8(t.quote_qty), "commission": _f8(t.commission),
        "commissionAsset": t.commission_asset, "time": t.time, "isBuyer": t.is_buyer,
        "isMaker": t.is_maker, "isBestMatch": True,
    }


class Api:
    """Route table and handlers; ``handle`` raises ``BinanceError`` for error answers."""

    def __init__(self, engine: Engine, feeds: dict[str, BarFeed], rules: dict[str, SymbolRules],
                 api_key: str, api_secret: str, maintenance: Callable[[int], bool] | None = None) -> None:
        self.engine, self.feeds, self.rules = engine, feeds, rules
        self._key, self._secret = api_key, api_secret.encode()
        self._maintenance = maintenance or (lambda _ms: False)
        H = Callable[[Request], Any]
        self.public: dict[tuple[str, str], H] = {
            ("GET", "/api/v3/ping"): lambda r: {},
            ("GET", "/api/v3/time"): lambda r: {"serverTime": r.server_ms},
            ("GET", "/api/v3/exchangeInfo"): self.exchange_info,
            ("GET", "/api/v3/klines"): self.klines,
            ("GET", "/api/v3/uiKlines"): self.klines,
            ("GET", "/api/v3/ticker/bookTicker"): self.book_ticker,
            ("GET", "/api/v3/ticker/price"): self.ticker_price,
            ("GET", "/api/v3/ticker/24hr"): self.ticker_24hr,
            ("GET", "/api/v3/depth"): self.depth,
            ("GET", "/sapi/v1/system/status"): self.system_status,
        }
        self.signed: dict[tuple[str, str], H] = {
            ("GET", "/api/v3/account"): self.account,
            ("POST", "/api/v3/order"): self.new_order,
            ("POST", "/api/v3/order/test"): self.test_order,
            ("GET", "/api/v3/order"): self.get_order,
            ("DELETE", "/api/v3/order"): self.cancel_order,
            ("GET", "/api/v3/openOrders"): self.open_orders,
            ("DELETE", "/api/v3/openOrders"): self.cancel_open_orders,
            ("GET", "/api/v3/allOrders"): self.all_orders,
            ("GET", "/api/v3/myTrades"): self.my_trades,
        }

    # -- dispatch -----------------------------------------------------------------------------------
    def handle(self, req: Request) -> Any:
        """Run the handler of ``req``; raise ``BinanceError`` for every error answer."""
        key = (req.method, req.path)
        if key in self.public:
            return self.public[key](req)
        if key in self.signed:
            self.authenticate(req)
            return self.signed[key](req)
        if any(path == req.path for _, path in [*self.public, *self.signed]):
            raise BinanceError(405, -1000, "Method not allowed.")
        raise BinanceError(404, -1000, f"Unknown endpoint {req.method} {req.path}.")

    def authenticate(self, req: Request) -> None:
        """Check the API key, the timestamp window and the HMAC-SHA256 signature like Binance."""
        if not req.api_key:
            raise BinanceError(401, -2014, "API-key format invalid.")
        if not hmac.compare_digest(req.api_key, self._key):
            raise BinanceError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        ts = _int(req.params, "timestamp")
        if ts is None:
            raise mandatory("timestamp")
        window = _int(req.params, "recvWindow", 5000)
        assert window is not None
        if window > 60000 or window <= 0:
            raise BinanceError(400, -1131, "recvWindow must be less than 60000")
        server = req.server_ms
        if ts >= server + 1000:
            raise BinanceError(400, -1021,
                               "Timestamp for this request was 1000ms ahead of the server's time.")
        if server - ts > window:
            raise BinanceError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        query, sig_q = _strip_signature(req.raw_query)
        body, sig_b = _strip_signature(req.raw_body)
        signature = sig_q or sig_b
        if not signature:
            raise mandatory("signature")
        expected = hmac.new(self._secret, (query + body).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.lower(), expected):
            raise BinanceError(400, -1022, "Signature for this request is not valid.")

    def _rules(self, p: dict[str, str]) -> SymbolRules:
        symbol = _text(p, "symbol")
        if symbol not in self.rules:
            raise invalid_symbol()
        return self.rules[symbol]

    def _now(self, req: Request) -> int:
        return self.engine.sync() - req.lag_ms

    # -- public ---------------------------------------------------------------------------------------
    def system_status(self, req: Request) -> dict[str, Any]:
        if self._maintenance(self.engine.clock.now_ms()):
            return {"status": 1, "msg": "system maintenance"}
        return {"status": 0, "msg": "normal"}

    def exchange_info(self, req: Request) -> dict[str, Any]:
        wanted = list(self.rules)
        if req.params.get("symbol"):
            wanted = [self._rules(req.params).symbol]
        return {"timezone": "UTC", "serverTime": req.server_ms, "rateLimits": RATE_LIMITS,
                "exchangeFilters": [], "symbols": [self.rules[s].info for s in wanted]}

    def klines(self, req: Request) -> list[list[object]]:
        rules = self._rules(req.params)
        interval = _text(req.params, "interval")
        assert interval is not None
        limit = _limit(req.params, 500, 1000)
        start, end = _int(req.params, "startTime"), _int(req.params, "endTime")
        return self.feeds[rules.symbol].klines(interval, self._now(req), start, end, limit)

    def _book(self, symbol: str, lag_ms: int) -> dict[str, Any]:
        bid, ask, vol = self.engine.quote(symbol, lag_ms)
        qty = _f8(round_step(Decimal(f"{vol * 0.01:.8f}"), self.rules[symbol].step))
        return {"symbol": symbol, "bidPrice": _f8(bid), "bidQty": qty, "askPrice": _f8(ask), "askQty": qty}

    def _symbols(self, req: Request) -> list[str]:
        return [self._rules(req.params).symbol] if req.params.get("symbol") else list(self.rules)

    def book_ticker(self, req: Request) -> Any:
        out = [self._book(s, req.lag_ms) for s in self._symbols(req)]
        return out[0] if req.params.get("symbol") else out

    def ticker_price(self, req: Request) -> Any:
        now = self._now(req)
        out = []
        for s in self._symbols(req):
            j = self.feeds[s].last_closed(now)
            out.append({"symbol": s, "price": _f8(self.feeds[s].c[j]) if j >= 0 else "0.00000000"})
        return out[0] if req.params.get("symbol") else out

    def ticker_24hr(self, req: Request) -> Any:
        now = self._now(req)
        out = []
        for s in self._symbols(req):
            f = self.feeds[s]
            j = f.last_closed(now)
            i = max(0, int(f.t.searchsorted(now - 1440 * MINUTE)))
            if j < i:
                raise BinanceError(400, -1013, "Market is closed.")
            o, c = f.o[i], f.c[j]
            qv, v = float(f.qv[i:j + 1].sum()), float(f.v[i:j + 1].sum())
            out.append({
                "symbol": s, "priceChange": _f8(c - o), "priceChangePercent": f"{(c / o - 1) * 100:.3f}",
                "weightedAvgPrice": _f8(qv / v if v else c), "prevClosePrice": _f8(f.c[i - 1] if i else o),
                "lastPrice": _f8(c), "lastQty": "0.00000000", "openPrice": _f8(o),
                "highPrice": _f8(f.h[i:j + 1].max()), "lowPrice": _f8(f.lo[i:j + 1].min()),
                "volume": _f8(v), "quoteVolume": _f8(qv), "openTime": int(f.t[i]),
                "closeTime": int(f.t[j]) + MINUTE - 1, "firstId": -1, "lastId": -1,
                "count": int(f.n[i:j + 1].sum()),
            } | {k: v for k, v in self._book(s, req.lag_ms).items() if k != "symbol"})
        return out[0] if req.params.get("symbol") else out

    def depth(self, req: Request) -> dict[str, Any]:
        rules = self._rules(req.params)
        limit = _limit(req.params, 100, 5000)
        bid, ask, vol = self.engine.quote(rules.symbol, req.lag_ms)
        per_level = round_step(Decimal(f"{vol * 0.5 / limit:.8f}"), rules.step) or rules.step
        bids = [[_f8(bid - k * rules.tick), _f8(per_level)] for k in range(limit) if bid - k * rules.tick > 0]
        asks = [[_f8(ask + k * rules.tick), _f8(per_level)] for k in range(limit)]
        return {"lastUpdateId": self._now(req) // 1000, "bids": bids, "asks": asks}

    # -- signed ---------------------------------------------------------------------------------------
    def account(self, req: Request) -> dict[str, Any]:
        bal = self.engine.balances()
        omit = req.params.get("omitZeroBalances") == "true"
        rate = _f8(self.engine.params.taker_fee)
        return {
            "makerCommission": int(self.engine.params.maker_fee * 10000),
            "takerCommission": int(self.engine.params.taker_fee * 10000),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": _f8(self.engine.params.maker_fee), "taker": rate,
                                "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.engine.processed,
            "accountType": "SPOT", "permissions": ["SPOT"], "uid": 1,
            "balances": [{"asset": a, "free": _f8(f), "locked": _f8(lk)} for a, (f, lk) in bal.items()
                         if not (omit and f == 0 and lk == 0)],
        }

    def _order_args(self, req: Request) -> tuple[Any, ...]:
        p = req.params
        rules = self._rules(p)
        side = _text(p, "side")
        if side not in ("BUY", "SELL"):
            raise BinanceError(400, -1117, "Invalid side.")
        type_ = _text(p, "type")
        if type_ not in ("MARKET", "LIMIT", "LIMIT_MAKER"):
            raise BinanceError(400, -1116, "Invalid orderType.")
        qty, quote_qty, price = _dec(p, "quantity", False), _dec(p, "quoteOrderQty", False), None
        tif = p.get("timeInForce") or "GTC"
        if type_ == "MARKET":
            if qty is None and quote_qty is None:
                raise BinanceError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, "
                                   "but both were empty/null!")
            if p.get("price"):
                raise BinanceError(400, -1106, "Parameter 'price' sent when not required.")
        else:
            if type_ == "LIMIT" and not p.get("timeInForce"):
                raise mandatory("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise BinanceError(400, -1115, "Invalid timeInForce.")
            qty, price = _dec(p, "quantity"), _dec(p, "price")
        return rules.symbol, side, type_, tif, qty, price, quote_qty, p.get("newClientOrderId")

    def new_order(self, req: Request) -> dict[str, Any]:
        resp = req.params.get("newOrderRespType") or "FULL"
        order, fills = self.engine.place(*self._order_args(req))
        out: dict[str, Any] = {"symbol": order.symbol, "orderId": order.order_id, "orderListId": -1,
                               "clientOrderId": order.client_order_id, "transactTime": order.time}
        if resp == "ACK":
            return out
        full = order_json(order)
        out |= {k: full[k] for k in ("price", "origQty", "executedQty", "cummulativeQuoteQty", "status",
                                     "timeInForce", "type", "side", "workingTime", "selfTradePreventionMode")}
        out["origQuoteOrderQty"] = full["origQuoteOrderQty"]
        if resp == "FULL":
            out["fills"] = [{"price": _f8(t.price), "qty": _f8(t.qty), "commission": _f8(t.commission),
                             "commissionAsset": t.commission_asset, "tradeId": t.id} for t in fills]
        return out

    def test_order(self, req: Request) -> dict[str, Any]:
        self._order_args(req)
        return {}

    def _ids(self, req: Request) -> tuple[str, int | None, str | None]:
        rules = self._rules(req.params)
        order_id, client = _int(req.params, "orderId"), req.params.get("origClientOrderId") or None
        if order_id is None and client is None:
            raise BinanceError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                               "but both were empty/null!")
        return rules.symbol, order_id, client

    def get_order(self, req: Request) -> dict[str, Any]:
        return order_json(self.engine.order(*self._ids(req)))

    def _cancel_json(self, order: Order, new_client: str | None) -> dict[str, Any]:
        full = order_json(order)
        keep = ("symbol", "orderId", "orderListId", "price", "origQty", "executedQty", "cummulativeQuoteQty",
                "status", "timeInForce", "type", "side", "selfTradePreventionMode")
        return {k: full[k] for k in keep} | {
            "origClientOrderId": order.client_order_id, "transactTime": order.update_time,
            "clientOrderId": new_client or "emu" + secrets.token_hex(10)}

    def cancel_order(self, req: Request) -> dict[str, Any]:
        order = self.engine.cancel(*self._ids(req))
        return self._cancel_json(order, req.params.get("newClientOrderId"))

    def cancel_open_orders(self, req: Request) -> list[dict[str, Any]]:
        rules = self._rules(req.params)
        done = self.engine.cancel_all(rules.symbol)
        if not done:
            raise BinanceError(400, -2011, "Unknown order sent.")
        return [self._cancel_json(o, None) for o in done]

    def open_orders(self, req: Request) -> list[dict[str, Any]]:
        symbol = self._rules(req.params).symbol if req.params.get("symbol") else None
        return [order_json(o) for o in self.engine.open_orders(symbol)]

    def all_orders(self, req: Request) -> list[dict[str, Any]]:
        rules, p = self._rules(req.params), req.params
        with self.engine.lock:
            self.engine.sync()
            rows = self.engine.state.orders(rules.symbol, _int(p, "orderId"), _int(p, "startTime"),
                                            _int(p, "endTime"), _limit(p, 500, 1000))
            live = {o.order_id: o for o in self.engine.open.values()}
            return [order_json(live.get(o.order_id, o)) for o in rows]

    def my_trades(self, req: Request) -> list[dict[str, Any]]:
        rules, p = self._rules(req.params), req.params
        with self.engine.lock:
            self.engine.sync()
            rows = self.engine.state.trades(rules.symbol, _int(p, "orderId"), _int(p, "fromId"),
                                            _int(p, "startTime"), _int(p, "endTime"), _limit(p, 500, 1000))
        return [trade_json(t) for t in rows]


def _strip_signature(raw: str) -> tuple[str, str | None]:
    if "signature=" not in raw:
        return raw, None
    keep, sig = [], None
    for part in raw.split("&"):
        if part.startswith("signature="):
            sig = part[len("signature="):]
        else:
            keep.append(part)
    return "&".join(keep), sig
