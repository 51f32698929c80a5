"""Binance spot REST endpoints: dispatch, request signing and the public market data.

The signed (account and trading) endpoints are in :mod:`toolkit.emulator.trading`.
Market data follows the engine's model: the last price is the open of the forming
minute, the book is the synthesised book of that minute, and the last kline is the
one still forming (docs/emulator.md, "Clock and data").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from toolkit.emulator.errors import BinanceError, bad_param, invalid_symbol, mandatory, market_closed
from toolkit.emulator.feed import MINUTE
from toolkit.emulator.filters import SymbolRules
from toolkit.emulator.orders import Engine
from toolkit.emulator.params import Request, f8, integer, limit_param, symbol_rules, text
from toolkit.emulator.ratelimit import Limit
from toolkit.emulator.trading import Trading

__all__ = ["Api", "Request"]

H = Callable[[Request], Any]


class Api:
    """Route table and handlers; ``handle`` raises ``BinanceError`` for error answers."""

    def __init__(self, engine: Engine, rules: dict[str, SymbolRules], api_key: str, api_secret: str,
                 rate_limits: list[Limit], maintenance: Callable[[int], bool] | None = None,
                 order_usage: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.engine, self.feeds, self.rules = engine, engine.feeds, rules
        self._key, self._secret = api_key, api_secret.encode()
        self._rate_limits = rate_limits
        self._maintenance = maintenance or (lambda _ms: False)
        self.public: dict[tuple[str, str], H] = {
            ("GET", "/api/v3/ping"): lambda r: {},
            ("GET", "/api/v3/time"): lambda r: {"serverTime": r.server_ms},
            ("GET", "/api/v3/exchangeInfo"): self.exchange_info,
            ("GET", "/api/v3/klines"): self.klines,
            ("GET", "/api/v3/uiKlines"): self.klines,
            ("GET", "/api/v3/aggTrades"): self.agg_trades,
            ("GET", "/api/v3/ticker/bookTicker"): self.book_ticker,
            ("GET", "/api/v3/ticker/price"): self.ticker_price,
            ("GET", "/api/v3/ticker/24hr"): self.ticker_24hr,
            ("GET", "/api/v3/depth"): self.depth,
            ("GET", "/sapi/v1/system/status"): self.system_status,
        }
        self.trading = Trading(engine, rules, order_usage or (lambda: []))
        self.signed: dict[tuple[str, str], H] = self.trading.routes()

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
        ts = integer(req.params, "timestamp")
        if ts is None:
            raise mandatory("timestamp")
        window = integer(req.params, "recvWindow", 5000)
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

    def rules_of(self, p: dict[str, str]) -> SymbolRules:
        """Return the rules of the ``symbol`` parameter (-1121 when unknown)."""
        return symbol_rules(self.rules, p)

    def _now(self, req: Request) -> int:
        return self.engine.sync() - req.lag_ms

    def _symbols(self, req: Request) -> tuple[list[str], bool]:
        """Return the symbols asked for (``symbol``, a JSON ``symbols`` list, or all) and whether one was."""
        p = req.params
        if p.get("symbol") and p.get("symbols"):
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        if p.get("symbol"):
            return [self.rules_of(p).symbol], True
        if p.get("symbols"):
            try:
                wanted = json.loads(p["symbols"])
            except ValueError as exc:
                raise BinanceError(400, -1100, "Illegal characters found in parameter 'symbols'.") from exc
            if not isinstance(wanted, list) or not wanted:
                raise bad_param("symbols")
            if any(s not in self.rules for s in wanted):
                raise invalid_symbol()
            return [str(s) for s in dict.fromkeys(wanted)], False
        return list(self.rules), False

    # -- public ---------------------------------------------------------------------------------------
    def system_status(self, req: Request) -> dict[str, Any]:
        if self._maintenance(self.engine.clock.now_ms()):
            return {"status": 1, "msg": "system maintenance"}
        return {"status": 0, "msg": "normal"}

    def exchange_info(self, req: Request) -> dict[str, Any]:
        wanted, _ = self._symbols(req)
        now = self._now(req)
        symbols = []
        for s in wanted:
            view = self.engine.market(s, now)
            symbols.append(self.rules[s].info | {"status": "TRADING" if view is not None and view.open else "BREAK"})
        return {"timezone": "UTC", "serverTime": req.server_ms,
                "rateLimits": [limit.json() for limit in self._rate_limits], "exchangeFilters": [],
                "symbols": symbols}

    def klines(self, req: Request) -> list[list[object]]:
        rules = self.rules_of(req.params)
        interval = text(req.params, "interval")
        assert interval is not None
        limit = limit_param(req.params, 500, 1000)
        start, end = integer(req.params, "startTime"), integer(req.params, "endTime")
        return self.feeds[rules.symbol].klines(interval, self._now(req), start, end, limit)

    def agg_trades(self, req: Request) -> list[dict[str, Any]]:
        p = req.params
        rules = self.rules_of(p)
        from_id, start, end = integer(p, "fromId"), integer(p, "startTime"), integer(p, "endTime")
        if from_id is not None and (start is not None or end is not None):
            raise BinanceError(400, -1128, "Combination of optional parameters invalid.")
        trades = self.feeds[rules.symbol].agg_trades(self._now(req), from_id, start, end, limit_param(p, 500, 1000))
        return [{"a": t.id, "p": f8(t.price), "q": f8(t.qty), "f": t.id, "l": t.id, "T": t.time,
                 "m": t.buyer_maker, "M": True} for t in trades]

    def _book_levels(self, symbol: str, now: int, limit: int) -> tuple[list[list[str]], list[list[str]], int]:
        view = self.engine.market(symbol, now)
        if view is None:
            raise market_closed()
        book = self.engine.book(symbol, view)
        sides = []
        for taker in ("SELL", "BUY"):  # bids are what a seller takes, asks what a buyer takes
            levels = book.side(taker).visible(self.engine.taken(symbol, book.bar_ms, taker), limit)
            sides.append([[f8(book.price(lv.price)), f8(book.qty(lv.qty))] for lv in levels])
        taken = self.engine.taken(symbol, book.bar_ms, "SELL") + self.engine.taken(symbol, book.bar_ms, "BUY")
        return sides[0], sides[1], book.bar_ms // MINUTE * 1_000_000 + taken

    def depth(self, req: Request) -> dict[str, Any]:
        rules = self.rules_of(req.params)
        limit = min(limit_param(req.params, 100, 10**9), 5000)  # Binance truncates a larger limit to 5000
        with self.engine.lock:
            bids, asks, update_id = self._book_levels(rules.symbol, self._now(req), limit)
        return {"lastUpdateId": update_id, "bids": bids, "asks": asks}

    def _book(self, symbol: str, now: int) -> dict[str, Any]:
        bids, asks, _ = self._book_levels(symbol, now, 1)
        bid, ask = bids[0] if bids else [f8(0), f8(0)], asks[0] if asks else [f8(0), f8(0)]
        return {"symbol": symbol, "bidPrice": bid[0], "bidQty": bid[1], "askPrice": ask[0], "askQty": ask[1]}

    def _listed(self, req: Request, one: Callable[[str, int], dict[str, Any] | None]) -> Any:
        """Answer a per-symbol endpoint; a list skips symbols without data, a single one is -1013."""
        wanted, single = self._symbols(req)
        with self.engine.lock:
            now = self._now(req)
            out = [row for row in (one(s, now) for s in wanted) if row is not None]
        if single:
            if not out:
                raise market_closed()
            return out[0]
        return out

    def book_ticker(self, req: Request) -> Any:
        return self._listed(req, lambda s, now: self._book(s, now) if self.engine.market(s, now) else None)

    def ticker_price(self, req: Request) -> Any:
        def one(s: str, now: int) -> dict[str, Any] | None:
            view = self.engine.market(s, now)
            return None if view is None else {"symbol": s, "price": f8(view.last)}
        return self._listed(req, one)

    def ticker_24hr(self, req: Request) -> Any:
        return self._listed(req, self._ticker_24hr)

    def _ticker_24hr(self, s: str, now: int) -> dict[str, Any] | None:
        """The rolling 24 h of closed bars plus the forming minute's open (the last price)."""
        f, view = self.feeds[s], self.engine.market(s, now)
        if view is None:
            return None
        i = int(f.t.searchsorted(now - 1440 * MINUTE))
        j = f.last_closed(now)  # closed bars i..j lie in the window
        if j < i and not view.open:
            return None  # nothing traded in the last 24 h
        o = float(f.o[i]) if j >= i else view.mid
        hi = max(float(f.h[i:j + 1].max()) if j >= i else view.mid, view.mid)
        lo = min(float(f.lo[i:j + 1].min()) if j >= i else view.mid, view.mid)
        qv, v = float(f.qv[i:j + 1].sum()), float(f.v[i:j + 1].sum())
        last = float(view.last)
        return {
            "symbol": s, "priceChange": f8(last - o), "priceChangePercent": f"{(last / o - 1) * 100:.3f}",
            "weightedAvgPrice": f8(qv / v if v else last), "prevClosePrice": f8(f.c[i - 1] if i else o),
            "lastPrice": f8(last), "lastQty": f8(0),
            "openPrice": f8(o), "highPrice": f8(hi), "lowPrice": f8(lo), "volume": f8(v), "quoteVolume": f8(qv),
            "openTime": now - 1440 * MINUTE, "closeTime": now, "firstId": int(f.t[i]) // MINUTE * 4 if j >= i else -1,
            "lastId": int(f.t[j]) // MINUTE * 4 + 3 if j >= i else -1, "count": int(f.n[i:j + 1].sum()),
        } | {k: v for k, v in self._book(s, now).items() if k != "symbol"}


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
