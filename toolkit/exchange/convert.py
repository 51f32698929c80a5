"""Convert ccxt's exceptions into the toolkit's, at the call: the one place that maps them.

The reaction to every ccxt class is decided in :data:`REACTIONS` (looked up along the
exception's class hierarchy, so the most specific entry wins), refined by a few Binance
facts in :data:`BINANCE_REFINEMENTS` (ccxt maps -1013 filter failures to ``BadRequest``
and a duplicate client order id to plain ``InvalidOrder``). Wrap every ccxt call::

    with exchange_call("fetch_ohlcv BTC/USDT", idempotent=True, client=client):
        rows = client.fetch_ohlcv("BTC/USDT", "1m")

For a call that is **not** idempotent (placing or cancelling an order), a failure that
may have happened after the exchange executed the request (timeout, dropped connection,
5xx, maintenance) becomes :class:`~toolkit.exchange.errors.OutcomeUnknown`; a rate limit
(the request was refused) stays :class:`~toolkit.exchange.errors.RateLimited`; a timestamp
refusal becomes :class:`~toolkit.exchange.errors.TimestampRejected`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import ccxt

from toolkit.exchange.errors import (
    AccountSuspended,
    AuthenticationFailed,
    ClockOutOfSync,
    DuplicateOrderRejected,
    ExchangeCallError,
    ExchangeMaintenance,
    ExchangeNotSupported,
    ExchangeOperationalError,
    ExchangeRejected,
    ExchangeTemporaryError,
    InsufficientFundsRejected,
    InvalidOrderRejected,
    InvalidRequestRejected,
    MarketClosedRejected,
    OrderNotFoundRejected,
    OrderWouldTakeRejected,
    OutcomeUnknown,
    RateLimited,
    TimestampRejected,
    UnexpectedResponse,
    UnknownSymbol,
)

__all__ = ["BINANCE_REFINEMENTS", "REACTIONS", "classify", "convert", "exchange_call", "scrub"]

#: ccxt class → toolkit class. Looked up along ``type(exc).__mro__``: the most specific entry wins.
REACTIONS: dict[type[ccxt.BaseError], type[ExchangeCallError]] = {
    # temporary: retry (reads are retried by the adapter)
    ccxt.OperationFailed: ExchangeTemporaryError,  # Binance -1004 server busy, -1008 overloaded
    ccxt.NetworkError: ExchangeTemporaryError,  # connection reset / dropped, DNS
    ccxt.RequestTimeout: ExchangeTemporaryError,  # client timeout, HTTP 504
    ccxt.ExchangeNotAvailable: ExchangeTemporaryError,  # HTTP 5xx
    ccxt.OnMaintenance: ExchangeMaintenance,
    ccxt.DDoSProtection: RateLimited,  # HTTP 429 and 418 (ccxt's binance raises this for both)
    ccxt.RateLimitExceeded: RateLimited,  # Binance -1003
    ccxt.CancelPending: ExchangeTemporaryError,
    ccxt.ChecksumError: ExchangeTemporaryError,  # order-book checksum (streams)
    # operational: halt
    ccxt.InvalidNonce: ClockOutOfSync,  # Binance -1021 (the retrying caller resyncs once first)
    ccxt.BadResponse: UnexpectedResponse,
    ccxt.NullResponse: UnexpectedResponse,
    ccxt.AuthenticationError: AuthenticationFailed,  # -1022 bad signature, -2014/-2015 bad key
    ccxt.PermissionDenied: AuthenticationFailed,
    ccxt.AccountNotEnabled: AuthenticationFailed,
    ccxt.AccountSuspended: AccountSuspended,
    ccxt.RestrictedLocation: AccountSuspended,
    ccxt.ManualInteractionNeeded: AccountSuspended,
    ccxt.BadSymbol: UnknownSymbol,  # -1121, or a symbol missing from the loaded markets
    ccxt.NotSupported: ExchangeNotSupported,
    ccxt.InvalidProxySettings: ExchangeOperationalError,
    ccxt.ArgumentsRequired: ExchangeOperationalError,  # a programming error: the call lacks an argument
    ccxt.ExchangeClosedByUser: ExchangeOperationalError,
    ccxt.UnsubscribeError: ExchangeOperationalError,
    ccxt.ExchangeError: ExchangeOperationalError,  # an answer no entry covers (e.g. -1131): halt and look
    ccxt.BaseError: ExchangeOperationalError,
    # rejected: record, alert, never resend unchanged
    ccxt.BadRequest: InvalidRequestRejected,  # -1100, -1102, -1120 …
    ccxt.InsufficientFunds: InsufficientFundsRejected,  # -2010 insufficient balance
    ccxt.InvalidOrder: InvalidOrderRejected,  # filters: PRICE_FILTER, LOT_SIZE, PERCENT_PRICE_BY_SIDE …
    ccxt.OrderNotFillable: InvalidOrderRejected,
    ccxt.ContractUnavailable: InvalidOrderRejected,
    ccxt.OrderImmediatelyFillable: OrderWouldTakeRejected,  # LIMIT_MAKER that would take
    ccxt.DuplicateOrderId: DuplicateOrderRejected,
    ccxt.OrderNotFound: OrderNotFoundRejected,  # -2011 cancel unknown, -2013 query unknown
    ccxt.OrderNotCached: OrderNotFoundRejected,
    ccxt.MarketClosed: MarketClosedRejected,
    ccxt.OperationRejected: ExchangeRejected,
    ccxt.NoChange: ExchangeRejected,
    ccxt.MarginModeAlreadySet: ExchangeRejected,
    ccxt.InvalidAddress: ExchangeRejected,
    ccxt.AddressPending: ExchangeRejected,
}

#: Binance facts ccxt does not express in its classes: (ccxt class, test on (message, code), toolkit class).
BINANCE_REFINEMENTS: list[tuple[type[ccxt.BaseError], Callable[[str, int | None], bool],
                                type[ExchangeCallError]]] = [
    (ccxt.BadRequest, lambda msg, code: code == -1013, InvalidOrderRejected),  # "Filter failure: NOTIONAL"
    (ccxt.InvalidOrder, lambda msg, code: "Duplicate order sent" in msg, DuplicateOrderRejected),  # -2010
]

_CODE = re.compile(r'"code"\s*:\s*(-?\d+)')
_STATUS = re.compile(r"^\S+ (418|429) ")
_SECRET_ATTRS = ("secret", "password", "privateKey", "apiKey", "uid", "token")


def classify(exc: ccxt.BaseError) -> type[ExchangeCallError]:
    """Return the toolkit class for a ccxt exception (the reaction table plus Binance refinements)."""
    message, code = str(exc), _binance_code(str(exc))
    for ccxt_class, applies, target in BINANCE_REFINEMENTS:
        if type(exc) is ccxt_class and applies(message, code):  # not its subclasses (BadSymbol …)
            return target
    for cls in type(exc).__mro__:
        if cls in REACTIONS:
            return REACTIONS[cls]
    return ExchangeOperationalError  # not a ccxt.BaseError subclass: unreachable through exchange_call


def scrub(text: str, client: Any = None) -> str:
    """Return ``text`` with the client's credentials replaced by ``***`` (and signatures shortened)."""
    for attr in _SECRET_ATTRS:
        value = getattr(client, attr, None) if client is not None else None
        if isinstance(value, str) and len(value) >= 4:
            text = text.replace(value, "***")
    return re.sub(r"signature=[0-9a-fA-F]+", "signature=***", text)


def convert(exc: ccxt.BaseError, operation: str, *, client: Any = None, exchange: str | None = None,
            idempotent: bool = True, client_order_id: str | None = None,
            symbol: str | None = None) -> ExchangeCallError:
    """Return the toolkit error for a ccxt exception raised by ``operation``.

    Parameters
    ----------
    exc
        What ccxt raised.
    operation
        What was being done, for the message (``place_order buy 0.001 BTC/USDT``).
    client
        The ccxt client that raised it: its id names the exchange, its last response
        headers give ``Retry-After``, its credentials are scrubbed from the message.
    exchange
        The exchange id when there is no client.
    idempotent
        False for order placement and cancellation: an ambiguous failure becomes
        ``OutcomeUnknown`` and a timestamp refusal ``TimestampRejected``.
    client_order_id, symbol
        The order's client id and market, carried by ``OutcomeUnknown``.
    """
    target = classify(exc)
    name = getattr(client, "id", None) or exchange or "exchange"
    detail = scrub(str(exc), client)
    code = _binance_code(detail)
    ccxt_class = type(exc).__name__
    if not idempotent:
        if issubclass(target, ClockOutOfSync):
            return TimestampRejected(operation, name, detail, ccxt_class=ccxt_class, code=code)
        if issubclass(target, ExchangeTemporaryError) and not issubclass(target, RateLimited):
            return OutcomeUnknown(operation, name, detail, client_order_id=client_order_id, symbol=symbol,
                                  ccxt_class=ccxt_class, code=code)
    if issubclass(target, RateLimited):
        status = _STATUS.match(detail)
        return target(operation, name, detail, ccxt_class=ccxt_class, code=code,
                      retry_after=_retry_after(client), status=int(status.group(1)) if status else None)
    return target(operation, name, detail, ccxt_class=ccxt_class, code=code)


@contextmanager
def exchange_call(operation: str, *, idempotent: bool, client: Any = None, exchange: str | None = None,
                  client_order_id: str | None = None, symbol: str | None = None) -> Iterator[None]:
    """Convert every ``ccxt.BaseError`` raised inside the block (``raise … from e``).

    Parameters
    ----------
    operation
        What the block does, for messages (``fetch_ohlcv BTC/USDT 1m``).
    idempotent
        Whether repeating the block is harmless (reads: True; placing or cancelling an order: False).
    client, exchange, client_order_id, symbol
        As for :func:`convert`.

    Raises
    ------
    ExchangeCallError
        A subclass naming the reaction (see :data:`REACTIONS`).
    """
    try:
        yield
    except ccxt.BaseError as exc:
        raise convert(exc, operation, client=client, exchange=exchange, idempotent=idempotent,
                      client_order_id=client_order_id, symbol=symbol) from exc


def _binance_code(message: str) -> int | None:
    found = _CODE.search(message)
    return int(found.group(1)) if found else None


def _retry_after(client: Any) -> float | None:
    """Return the ``Retry-After`` seconds of the client's last response (a 418/429), if any."""
    headers = getattr(client, "last_response_headers", None) or {}
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None
