"""Order-side helpers: place and cancel without ever retrying, find by client order id (retried).

The placement rule: an order request is sent **once**. A failure after which the
exchange may have executed it (timeout, dropped connection, 5xx, maintenance) raises
:class:`~toolkit.exchange.errors.OutcomeUnknown` carrying the client order id; the caller
resolves it with :func:`find_order` (an idempotent, retried query) — never by resending.
A refusal the exchange answered (insufficient funds, filters, a 429) is definite:
nothing was executed. Amounts and prices cross this boundary as ``Decimal`` rounded with
the market's precision (ccxt's ``amount_to_precision`` / ``price_to_precision``).

These functions need the client's markets loaded (``ExchangeSession`` does it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from toolkit.errors import ConfigurationError
from toolkit.exchange.convert import exchange_call
from toolkit.exchange.errors import ExchangeCallError, OrderNotFoundRejected, TimestampRejected
from toolkit.exchange.retry import Retrier

__all__ = ["CLIENT_ORDER_ID", "Order", "cancel_order", "find_order", "new_client_order_id", "place_order",
           "to_precision"]

#: What Binance accepts as a client order id (``newClientOrderId``).
CLIENT_ORDER_ID = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
SIDES = ("buy", "sell")
TYPES = ("market", "limit")


@dataclass(frozen=True)
class Order:
    """An order as the exchange reports it; numbers are exact ``Decimal`` (None when not reported)."""

    id: str | None
    client_order_id: str | None
    symbol: str
    side: str | None
    type: str | None
    status: str | None
    amount: Decimal | None
    filled: Decimal | None
    remaining: Decimal | None
    price: Decimal | None
    average: Decimal | None
    cost: Decimal | None
    timestamp: int | None

    @classmethod
    def from_ccxt(cls, doc: Mapping[str, Any]) -> Order:
        """Return the order of a ccxt unified order structure."""
        stamp = doc.get("timestamp")
        return cls(id=_str(doc.get("id")), client_order_id=_str(doc.get("clientOrderId")),
                   symbol=str(doc.get("symbol")), side=_str(doc.get("side")), type=_str(doc.get("type")),
                   status=_str(doc.get("status")), amount=_dec(doc.get("amount")), filled=_dec(doc.get("filled")),
                   remaining=_dec(doc.get("remaining")), price=_dec(doc.get("price")),
                   average=_dec(doc.get("average")), cost=_dec(doc.get("cost")),
                   timestamp=None if stamp is None else int(stamp))


def new_client_order_id(prefix: str = "tk") -> str:
    """Return a fresh client order id Binance accepts (``prefix-`` and 32 hex digits, at most 36 characters)."""
    cid = f"{prefix}-{uuid.uuid4().hex}"[:36]
    _check_client_order_id(cid)
    return cid


def to_precision(client: Any, symbol: str, amount: Decimal | str | float,
                 price: Decimal | str | float | None = None) -> tuple[Decimal, Decimal | None]:
    """Return ``amount`` and ``price`` rounded with the market's precision (amount truncated).

    Raises
    ------
    InvalidOrderRejected
        The amount rounds to zero (below the market's step).
    UnknownSymbol
        The market is not listed.
    """
    with exchange_call(f"to_precision {symbol}", idempotent=True, client=client):
        qty = Decimal(client.amount_to_precision(symbol, _plain(amount)))
        px = None if price is None else Decimal(client.price_to_precision(symbol, _plain(price)))
    return qty, px


def place_order(client: Any, symbol: str, side: str, type: str, amount: Decimal | str | float,
                price: Decimal | str | float | None = None, *, client_order_id: str,
                params: Mapping[str, Any] | None = None) -> Order:
    """Send one order request, exactly once; never retry it.

    Parameters
    ----------
    client
        A ccxt client with its markets loaded.
    symbol, side, type
        ``BTC/USDT``; ``buy`` or ``sell``; ``market`` or ``limit`` (post-only: ``params={"postOnly": True}``).
    amount, price
        Base quantity and limit price (None for a market order), rounded with the market's precision.
    client_order_id
        The id to reconcile by; record it (journal) before calling.
    params
        Further ccxt/exchange parameters (``timeInForce``, ``postOnly`` …).

    Raises
    ------
    OutcomeUnknown
        The request may have been executed (timeout, dropped connection, 5xx, maintenance):
        resolve with :func:`find_order` by ``client_order_id``; do not resend.
    RateLimited
        A 429/418: the request was refused, nothing was executed.
    ExchangeRejected
        A definite refusal (:class:`InsufficientFundsRejected`, :class:`InvalidOrderRejected`,
        :class:`OrderWouldTakeRejected`, :class:`DuplicateOrderRejected`,
        :class:`MarketClosedRejected`, :class:`TimestampRejected` after which the clock was resynced).
    ExchangeOperationalError
        Credentials, account or unknown answers: halt.
    ConfigurationError
        A bad side, type, price or client order id (nothing was sent).
    """
    _check_client_order_id(client_order_id)
    if side not in SIDES:
        raise ConfigurationError("side", " or ".join(SIDES), side)
    if type not in TYPES:
        raise ConfigurationError("type", " or ".join(TYPES), type)
    if (price is None) != (type == "market"):
        raise ConfigurationError("price", "a price for a limit order and none for a market order", price)
    extra = dict(params or {})
    for key in ("clientOrderId", "newClientOrderId"):
        if key in extra:
            raise ConfigurationError(f"params.{key}", "the client order id as the client_order_id argument",
                                     extra[key])
    qty, px = to_precision(client, symbol, amount, price)
    operation = f"place_order {side} {type} {qty} {symbol}" + ("" if px is None else f" @ {px}")
    try:
        with exchange_call(operation, idempotent=False, client=client, client_order_id=client_order_id,
                           symbol=symbol):
            raw = client.create_order(symbol, type, side, str(qty), None if px is None else str(px),
                                      {**extra, "clientOrderId": client_order_id})
    except TimestampRejected:
        _resync(client)
        raise
    return Order.from_ccxt(raw)


def cancel_order(client: Any, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None,
                 params: Mapping[str, Any] | None = None) -> Order:
    """Send one cancel request, exactly once; never retry it.

    Parameters
    ----------
    client
        A ccxt client with its markets loaded.
    symbol
        The order's market.
    order_id, client_order_id
        The exchange's id or the client order id (one of them).
    params
        Further ccxt/exchange parameters.

    Raises
    ------
    OrderNotFoundRejected
        The exchange does not know the order as open: it is already gone (filled,
        cancelled or never placed) — check with :func:`find_order` if it matters which.
    OutcomeUnknown
        The cancel may or may not have been executed: query the order, do not resend blindly.
    RateLimited, ExchangeRejected, ExchangeOperationalError
        As for :func:`place_order`.
    """
    if (order_id is None) == (client_order_id is None):
        raise ConfigurationError("order_id/client_order_id", "exactly one of them", (order_id, client_order_id))
    extra = dict(params or {})
    if client_order_id is not None:
        extra["clientOrderId"] = client_order_id
    ref = order_id if order_id is not None else client_order_id
    try:
        with exchange_call(f"cancel_order {ref} {symbol}", idempotent=False, client=client,
                           client_order_id=client_order_id, symbol=symbol):
            raw = client.cancel_order(order_id, symbol, extra)
    except TimestampRejected:
        _resync(client)
        raise
    return Order.from_ccxt(raw)


def find_order(client: Any, symbol: str, client_order_id: str, *, retrier: Retrier | None = None) -> Order | None:
    """Return the order with ``client_order_id``, or None when the exchange does not know it (retried query).

    After an ``OutcomeUnknown`` placement, an order found is the one that was placed
    (never place it again); None means the exchange does not know it now. Against a real
    exchange, ask again after a few seconds before concluding it was not placed.

    Raises
    ------
    ExchangeTemporaryError
        The exchange stayed unreachable: the outcome is still unknown, ask again later.
    ExchangeCallError
        Any other failure (see ``toolkit.exchange.errors``).
    """
    _check_client_order_id(client_order_id)
    retrier = retrier or Retrier()
    try:
        raw = retrier.call(lambda: client.fetch_order(None, symbol, {"clientOrderId": client_order_id}),
                           f"find_order {client_order_id} {symbol}", client=client)
    except OrderNotFoundRejected:
        return None
    return Order.from_ccxt(raw)


def _resync(client: Any) -> None:
    """Resync the client's clock once after a timestamp refusal (best effort: the refusal is raised anyway)."""
    with suppress(ExchangeCallError), exchange_call("load_time_difference", idempotent=True, client=client):
        client.load_time_difference()


def _check_client_order_id(cid: str) -> None:
    if not isinstance(cid, str) or not CLIENT_ORDER_ID.match(cid):
        raise ConfigurationError("client_order_id", "1 to 36 characters of A-Z a-z 0-9 . : / _ -", cid)


def _plain(value: Decimal | str | float) -> str:
    """Return a number as a plain decimal string (no exponent), the form ccxt's precision helpers take."""
    return format(Decimal(str(value)), "f")


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
