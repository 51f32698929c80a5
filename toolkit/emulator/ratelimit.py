"""Binance's request-weight and order-count limits, with the weights of each endpoint.

The limits are the ones the newest bundled exchangeInfo snapshot announces
(``rateLimits``): REQUEST_WEIGHT 6000 per minute and RAW_REQUESTS 61000 per 5 minutes
per IP, ORDERS 50 per 10 seconds and 160000 per day per account. Windows are fixed
(they reset at the start of each minute, 10 seconds or UTC day) and run on the **wall
clock** given to the limiter: rate limits are about the real request rate, whatever
the replay speed. Tests give a ``toolkit.clock.ManualClock`` and step it.

* Every answer carries ``X-MBX-USED-WEIGHT-1M`` (the weight used in this minute,
  this request included); accepted orders carry ``X-MBX-ORDER-COUNT-10S`` and
  ``X-MBX-ORDER-COUNT-1D``.
* A request over a weight limit is answered 429, code -1003, with ``Retry-After``
  (seconds to the end of the window); an order over an order limit 429, code -1015,
  without ``Retry-After`` (as documented). A client that keeps sending is banned: after
  ``ban_after`` (3) 429s in one window, the next request over the limit gets 418, code
  -1003, ``Retry-After`` until the ban ends; bans last 2 minutes, doubling for each
  further ban up to 3 days.
* Orders count when accepted; an order's first fill takes it off the counts of the
  current windows (Binance's "unfilled order count", FAQ order_count_decrement).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.clock import Clock
from toolkit.emulator.errors import BinanceError, banned, too_much_weight

__all__ = ["Limit", "RateLimiter", "default_limits", "order_count", "request_weight"]

_SECOND, _MINUTE, _DAY = 1000, 60_000, 86_400_000
_UNIT_MS = {"SECOND": _SECOND, "MINUTE": _MINUTE, "HOUR": 3_600_000, "DAY": _DAY}
_LETTER = {"SECOND": "S", "MINUTE": "M", "HOUR": "H", "DAY": "D"}
#: intervalNum of each limit as Binance documents it (the normalised 2025 snapshot dropped the field)
_DOCUMENTED_NUM = {("REQUEST_WEIGHT", "MINUTE"): 1, ("RAW_REQUESTS", "MINUTE"): 5, ("ORDERS", "SECOND"): 10,
                   ("ORDERS", "DAY"): 1}
BAN_FIRST_MS = 2 * _MINUTE
BAN_MAX_MS = 3 * _DAY


@dataclass(frozen=True)
class Limit:
    """One entry of exchangeInfo's ``rateLimits``."""

    type: str
    interval: str
    num: int
    limit: int

    @property
    def window_ms(self) -> int:
        """Length of the window in milliseconds."""
        return _UNIT_MS[self.interval] * self.num

    @property
    def suffix(self) -> str:
        """Header suffix, e.g. ``1M`` or ``10S``."""
        return f"{self.num}{_LETTER[self.interval]}"

    def json(self) -> dict[str, Any]:
        """Return the exchangeInfo shape."""
        return {"rateLimitType": self.type, "interval": self.interval, "intervalNum": self.num,
                "limit": self.limit}


def default_limits(directory: Path | None = None) -> list[Limit]:
    """Return the ``rateLimits`` of the newest bundled exchangeInfo snapshot that has them."""
    from toolkit.emulator.filters import EXCHANGE_DIR

    newest: tuple[int, list[dict[str, Any]]] = (-1, [])
    for path in sorted((directory or EXCHANGE_DIR).glob("*exchangeInfo*.json")):
        doc = json.loads(path.read_text())
        doc = doc.get("result", doc)
        if doc.get("rateLimits") and int(doc.get("serverTime") or 0) > newest[0]:
            newest = (int(doc.get("serverTime") or 0), doc["rateLimits"])
    out = []
    for raw in newest[1]:
        key = (raw["rateLimitType"], raw["interval"])
        if key in _DOCUMENTED_NUM:
            out.append(Limit(key[0], key[1], int(raw.get("intervalNum") or _DOCUMENTED_NUM[key]), int(raw["limit"])))
    return out


def _symbols_count(params: dict[str, str]) -> int | None:
    raw = params.get("symbols")
    if raw in (None, ""):
        return None
    try:
        found = json.loads(str(raw))
    except ValueError:
        return 1
    return len(found) if isinstance(found, list) else 1


def request_weight(method: str, path: str, params: dict[str, str]) -> int:
    """Return Binance's request weight of one REST call (developers.binance.com, spot REST API)."""
    has_symbol = bool(params.get("symbol"))
    n_symbols = _symbols_count(params)
    if path == "/api/v3/depth":
        limit = int(params.get("limit") or 100) if str(params.get("limit") or "100").isdigit() else 100
        return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250
    if path == "/api/v3/ticker/24hr":
        if has_symbol:
            return 2
        if n_symbols is None:
            return 80
        return 2 if n_symbols <= 20 else 40 if n_symbols <= 100 else 80
    if path in ("/api/v3/ticker/price", "/api/v3/ticker/bookTicker"):
        return 2 if has_symbol else 4
    if path == "/api/v3/openOrders" and method == "GET":
        return 6 if has_symbol else 80
    if path == "/api/v3/myTrades":
        return 5 if params.get("orderId") else 20
    if path == "/api/v3/exchangeInfo":
        return 20
    return _FIXED.get((method, path), 1)


_FIXED = {
    ("GET", "/api/v3/klines"): 2, ("GET", "/api/v3/uiKlines"): 2, ("GET", "/api/v3/avgPrice"): 2,
    ("GET", "/api/v3/aggTrades"): 4, ("GET", "/api/v3/trades"): 25, ("GET", "/api/v3/historicalTrades"): 25,
    ("GET", "/api/v3/account"): 20, ("GET", "/api/v3/order"): 4, ("GET", "/api/v3/allOrders"): 20,
    ("GET", "/api/v3/orderList"): 4, ("GET", "/api/v3/openOrderList"): 6, ("GET", "/api/v3/allOrderList"): 20,
    ("GET", "/api/v3/rateLimit/order"): 40,
}


def order_count(method: str, path: str) -> int:
    """Return how many orders a request places (it counts towards ORDERS when accepted)."""
    if method != "POST":
        return 0
    return {"/api/v3/order": 1, "/api/v3/orderList/oco": 2, "/api/v3/order/oco": 2}.get(path, 0)


class RateLimiter:
    """Count request weight, raw requests and orders in fixed wall-clock windows; ban repeat offenders.

    Parameters
    ----------
    clock
        The wall clock the windows run on.
    limits
        The limits to enforce (default: the bundled exchangeInfo's).
    enabled
        False counts nothing, refuses nothing and sends no usage headers (throughput benchmarks).
    ban_after
        429s in one window after which the next request over the limit bans the IP.
    """

    def __init__(self, clock: Clock, limits: list[Limit] | None = None, enabled: bool = True,
                 ban_after: int = 3) -> None:
        self.clock, self.enabled, self.ban_after = clock, enabled, ban_after
        self.limits = limits if limits is not None else default_limits()
        self._lock = threading.Lock()
        self._counts: dict[Limit, tuple[int, int]] = {}  # limit -> (window start, count)
        self._refused: tuple[int, int] = (-1, 0)  # (weight window start, 429s in it)
        self.ban_until = -1
        self.bans = 0

    def _window(self, limit: Limit, now: int) -> int:
        return now - now % limit.window_ms

    def _count(self, limit: Limit, now: int) -> int:
        start, count = self._counts.get(limit, (-1, 0))
        return count if start == self._window(limit, now) else 0

    def _add(self, limit: Limit, now: int, n: int) -> int:
        count = max(0, self._count(limit, now) + n)
        self._counts[limit] = (self._window(limit, now), count)
        return count

    def admit(self, weight: int, orders: int) -> dict[str, str]:
        """Count one request; return its headers, or raise the 429/418 ``BinanceError`` that refuses it."""
        now = self.clock.now_ms()
        with self._lock:
            if not self.enabled:
                return {}
            if now < self.ban_until:
                raise banned(self.ban_until, -(-(self.ban_until - now) // 1000))
            headers: dict[str, str] = {}
            over: Limit | None = None
            for limit in self.limits:
                if limit.type == "REQUEST_WEIGHT":
                    used = self._add(limit, now, weight)
                    headers[f"X-MBX-USED-WEIGHT-{limit.suffix}"] = str(used)
                    over = over or (limit if used > limit.limit else None)
                elif limit.type == "RAW_REQUESTS":
                    over = over or (limit if self._add(limit, now, 1) > limit.limit else None)
            if over is not None:
                self._refuse(over, now, headers)
            for limit in self.limits:
                if orders and limit.type == "ORDERS" and self._count(limit, now) + orders > limit.limit:
                    raise BinanceError(429, -1015, f"Too many new orders; current limit is {limit.limit} orders "
                                       f"per {limit.num} {limit.interval}.", headers)
            return headers

    def _refuse(self, limit: Limit, now: int, headers: dict[str, str]) -> None:
        window = self._window(limit, now)
        start, refused = self._refused
        refused = refused + 1 if start == window else 1
        self._refused = (window, refused)
        if refused > self.ban_after:
            duration = min(BAN_MAX_MS, BAN_FIRST_MS * 2 ** self.bans)
            self.bans += 1
            self.ban_until = now + duration
            raise banned(self.ban_until, duration // 1000, headers)
        retry = -(-(window + limit.window_ms - now) // 1000)
        if limit.type == "RAW_REQUESTS":
            msg = f"Too many requests; current limit of IP is {limit.limit} requests per {limit.num} {limit.interval}."
            raise BinanceError(429, -1003, msg, {**headers, "Retry-After": str(retry)})
        raise too_much_weight(limit.limit, retry, f"{limit.num} {limit.interval}", headers)

    def placed(self, orders: int) -> dict[str, str]:
        """Count accepted orders; return the ``X-MBX-ORDER-COUNT-*`` headers."""
        now = self.clock.now_ms()
        with self._lock:
            out: dict[str, str] = {}
            if not self.enabled:
                return out
            for limit in self.limits:
                if limit.type == "ORDERS":
                    out[f"X-MBX-ORDER-COUNT-{limit.suffix}"] = str(self._add(limit, now, orders))
            return out

    def filled(self) -> None:
        """Take an order off the current windows' order counts at its first fill."""
        now = self.clock.now_ms()
        with self._lock:
            if self.enabled:
                for limit in self.limits:
                    if limit.type == "ORDERS":
                        self._add(limit, now, -1)

    def order_usage(self) -> list[dict[str, Any]]:
        """Return the ORDERS limits with their current counts (``GET /api/v3/rateLimit/order``)."""
        now = self.clock.now_ms()
        with self._lock:
            return [limit.json() | {"count": self._count(limit, now)} for limit in self.limits
                    if limit.type == "ORDERS"]
