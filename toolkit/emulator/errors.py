"""Binance-shaped errors raised inside the emulator and turned into HTTP responses.

Each error carries the HTTP status, Binance's numeric ``code`` and its ``msg``
text, so ccxt's real ``binance`` class maps it to the same exception it would
raise against the real exchange.
"""

from __future__ import annotations

__all__ = [
    "BinanceError",
    "bad_param",
    "banned",
    "filter_failure",
    "insufficient_balance",
    "invalid_symbol",
    "mandatory",
    "market_closed",
    "too_much_weight",
    "unknown_order",
]


class BinanceError(Exception):
    """An error response: HTTP ``status``, Binance ``code`` and ``msg``."""

    def __init__(self, status: int, code: int, msg: str, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = headers or {}
        super().__init__(f"{status} {code} {msg}")

    def body(self) -> dict[str, object]:
        """Return the JSON body Binance sends for this error."""
        return {"code": self.code, "msg": self.msg}


def mandatory(name: str) -> BinanceError:
    """Return -1102: a mandatory parameter is missing."""
    return BinanceError(400, -1102,
                        f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def bad_param(name: str) -> BinanceError:
    """Return -1100/-1130: a parameter has an illegal value."""
    return BinanceError(400, -1130, f"Data sent for parameter '{name}' is not valid.")


def invalid_symbol() -> BinanceError:
    """Return -1121: the symbol is not listed."""
    return BinanceError(400, -1121, "Invalid symbol.")


def filter_failure(name: str) -> BinanceError:
    """Return -1013: an exchangeInfo filter rejected the order."""
    return BinanceError(400, -1013, f"Filter failure: {name}")


def insufficient_balance() -> BinanceError:
    """Return -2010 with Binance's insufficient-balance text."""
    return BinanceError(400, -2010, "Account has insufficient balance for requested action.")


def unknown_order(cancel: bool) -> BinanceError:
    """Return -2011 (cancel) or -2013 (query) for an order that does not exist."""
    if cancel:
        return BinanceError(400, -2011, "Unknown order sent.")
    return BinanceError(400, -2013, "Order does not exist.")


def market_closed() -> BinanceError:
    """Return -1013 "Market is closed." (no bar at the replay time: a halt or the data's end)."""
    return BinanceError(400, -1013, "Market is closed.")


def too_much_weight(limit: int, retry_after: int, per: str = "1 MINUTE",
                    headers: dict[str, str] | None = None) -> BinanceError:
    """Return 429 -1003: the request weight of the window is used up; retry after ``retry_after`` seconds."""
    return BinanceError(429, -1003, f"Too much request weight used; current limit is {limit} request weight per "
                        f"{per}. Please use WebSocket Streams for live updates to avoid polling the API.",
                        {**(headers or {}), "Retry-After": str(retry_after)})


def banned(until_ms: int, retry_after: int, headers: dict[str, str] | None = None) -> BinanceError:
    """Return 418 -1003: the IP is banned until ``until_ms``; retry after ``retry_after`` seconds."""
    return BinanceError(418, -1003, f"Way too much request weight used; IP banned until {until_ms}. "
                        "Please use WebSocket Streams for live updates to avoid bans.",
                        {**(headers or {}), "Retry-After": str(retry_after)})
