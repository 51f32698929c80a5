"""Request parameters as Binance reads them: the parsed request and the typed getters with Binance's errors."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from toolkit.emulator.errors import BinanceError, bad_param, invalid_symbol, mandatory

if TYPE_CHECKING:
    from toolkit.emulator.filters import SymbolRules

__all__ = ["Request", "dec", "f8", "integer", "limit_param", "new_client_id", "side", "symbol_rules", "text",
           "time_in_force"]


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


def f8(value: Decimal | float) -> str:
    """Format an amount with Binance's eight decimals."""
    return f"{value:.8f}"


def text(p: dict[str, str], name: str, required: bool = True) -> str | None:
    """Return a string parameter; raise -1102 when a required one is missing."""
    value = p.get(name)
    if value in (None, ""):
        if required:
            raise mandatory(name)
        return None
    return value


def dec(p: dict[str, str], name: str, required: bool = True) -> Decimal | None:
    """Return a non-negative decimal parameter (-1100 / -1130 on bad input)."""
    raw = text(p, name, required)
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


def integer(p: dict[str, str], name: str, default: int | None = None) -> int | None:
    """Return an integer parameter (-1100 on bad input)."""
    raw = p.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(str(raw))
    except ValueError as exc:
        raise BinanceError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                           "legal range is '^-?[0-9]{1,20}$'.") from exc


def limit_param(p: dict[str, str], default: int, maximum: int) -> int:
    """Return ``limit`` (-1130 when out of 1..maximum)."""
    value = integer(p, "limit", default)
    assert value is not None
    if value <= 0 or value > maximum:
        raise bad_param("limit")
    return value




def symbol_rules(rules: dict[str, SymbolRules], p: dict[str, str]) -> SymbolRules:
    """Return the rules of the ``symbol`` parameter (-1102 when missing, -1121 when not listed)."""
    symbol = text(p, "symbol")
    if symbol not in rules:
        raise invalid_symbol()
    return rules[symbol]


def side(p: dict[str, str]) -> str:
    """Return the ``side`` parameter (-1117 unless BUY or SELL)."""
    value = p.get("side")
    if value not in ("BUY", "SELL"):
        raise BinanceError(400, -1117, "Invalid side.")
    return value


def time_in_force(p: dict[str, str], name: str) -> str:
    """Return a required time in force (-1102 when missing, -1115 unless GTC, IOC or FOK)."""
    value = p.get(name) or ""
    if not value:
        raise mandatory(name)
    if value not in ("GTC", "IOC", "FOK"):
        raise BinanceError(400, -1115, "Invalid timeInForce.")
    return value


def new_client_id(given: str | None) -> str:
    """Return the client order id given, or a fresh one the way Binance makes them."""
    return given or "emu" + secrets.token_hex(10)
