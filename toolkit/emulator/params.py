"""Request parameters as Binance reads them: the parsed request and the typed getters with Binance's errors."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from toolkit.emulator.errors import BinanceError, bad_param, mandatory

__all__ = ["Request", "dec", "f8", "integer", "limit_param", "text"]


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


