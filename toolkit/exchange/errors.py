"""Errors of the exchange adapter, named for the reaction they call for.

Four families, each a :class:`ExchangeCallError` carrying typed fields (the operation,
the exchange, the ccxt class it was converted from, the Binance error code when the
answer had one, and the exchange's own words):

* :class:`ExchangeTemporaryError` (a ``toolkit.errors.TemporaryError``, exit 75): retry
  later. Idempotent reads are retried by the adapter already.
* :class:`ExchangeRejected` (exit 8): the exchange answered "no". Record it and alert;
  never send the same request unchanged again.
* :class:`ExchangeOperationalError` (exit 9; its configuration-shaped subclasses are also
  ``ConfigurationError``, exit 2): halt the bot until a human fixes something.
* :class:`OutcomeUnknown` (exit 10): an order placement or cancel failed in a way where
  the exchange may have executed it. Reconcile by client order id; never resend blindly.

No ccxt import here: the mapping from ccxt's classes lives in ``toolkit.exchange.convert``.
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import ConfigurationError, TemporaryError, ToolkitError

__all__ = [
    "AccountSuspended",
    "AuthenticationFailed",
    "ClockOutOfSync",
    "DuplicateOrderRejected",
    "ExchangeCallError",
    "ExchangeMaintenance",
    "ExchangeNotSupported",
    "ExchangeOperationalError",
    "ExchangeRejected",
    "ExchangeTemporaryError",
    "InsufficientFundsRejected",
    "InvalidOrderRejected",
    "InvalidRequestRejected",
    "MarketClosedRejected",
    "OrderNotFoundRejected",
    "OrderWouldTakeRejected",
    "OutcomeUnknown",
    "RateLimited",
    "TimestampRejected",
    "UnexpectedResponse",
    "UnknownSymbol",
    "error_fields",
]


class ExchangeCallError(ToolkitError):
    """A call to the exchange failed; the subclass says what to do about it.

    Parameters
    ----------
    operation
        What was being done, e.g. ``fetch_ohlcv BTC/USDT 1m``.
    exchange
        The ccxt exchange id (``binance``).
    detail
        The exchange's (or ccxt's) own words, with any secret removed.
    ccxt_class
        The name of the ccxt exception this was converted from (None when raised directly).
    code
        The Binance error code of the answer (``-2010``), when it had one.
    """

    #: What a successful call would have given; the subclass narrows it.
    expected = "a successful answer from the exchange"

    def __init__(self, operation: str, exchange: str, detail: str, *, ccxt_class: str | None = None,
                 code: int | None = None) -> None:
        self.operation = operation
        self.exchange = exchange
        self.detail = detail
        self.ccxt_class = ccxt_class
        self.code = code
        #: How many attempts were made (set by the retrying caller; 1 when not retried).
        self.attempts = 1
        Exception.__init__(self, operation, exchange, detail)  # not ConfigurationError's (field, expected, found)

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))

    @property
    def found(self) -> str:
        """Return what the exchange answered, in one line."""
        parts = [p for p in (self.ccxt_class, None if self.code is None else f"code {self.code}") if p]
        head = f"{' '.join(parts)}: " if parts else ""
        return f"{head}{self.detail}"

    @property
    def where(self) -> str:
        """Return the operation, the exchange and the number of attempts, in one line."""
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.operation} on {self.exchange}{tries}"

    def __str__(self) -> str:
        return f"{self.where}: expected {self.expected}, found {self.found}"


# --- temporary: retry ---------------------------------------------------------------------------


class ExchangeTemporaryError(ExchangeCallError, TemporaryError):
    """The exchange was unreachable, slow, overloaded or under maintenance: retrying may succeed."""

    exit_code = TemporaryError.exit_code
    expected = "an answer from the exchange (a temporary failure: retry later)"


class RateLimited(ExchangeTemporaryError):
    """HTTP 429 (rate limit) or 418 (IP ban): wait at least ``retry_after`` seconds before calling again.

    Parameters
    ----------
    retry_after
        The server's ``Retry-After`` in seconds, when it sent one.
    status
        The HTTP status (429 or 418), when known.
    """

    expected = "a request within the exchange's rate limits"

    def __init__(self, operation: str, exchange: str, detail: str, *, ccxt_class: str | None = None,
                 code: int | None = None, retry_after: float | None = None, status: int | None = None) -> None:
        self.retry_after = retry_after
        self.status = status
        super().__init__(operation, exchange, detail, ccxt_class=ccxt_class, code=code)

    @property
    def found(self) -> str:
        wait = "" if self.retry_after is None else f" (Retry-After {self.retry_after:g} s)"
        status = "" if self.status is None else f"HTTP {self.status} "
        return f"{status}{super().found}{wait}"


class ExchangeMaintenance(ExchangeTemporaryError):
    """The exchange announced maintenance: retry after it ends."""

    expected = "the exchange in normal operation (it is under maintenance)"


# --- rejected: record, alert, never resend unchanged --------------------------------------------


class ExchangeRejected(ExchangeCallError):
    """The exchange refused the request: record and alert; never resend it unchanged."""

    exit_code = 8
    expected = "a request the exchange accepts"


class InsufficientFundsRejected(ExchangeRejected):
    """Not enough free balance for the order."""

    expected = "enough free balance for the order"


class InvalidRequestRejected(ExchangeRejected):
    """The request's parameters are invalid (a bad interval, a malformed parameter)."""

    expected = "valid request parameters"


class InvalidOrderRejected(InvalidRequestRejected):
    """The order breaks the market's rules (filters: price, lot size, notional, percent price)."""

    expected = "an order within the market's filters (tick, step, minimum notional, price band)"


class OrderWouldTakeRejected(InvalidOrderRejected):
    """A post-only (LIMIT_MAKER) order would have matched at once."""

    expected = "a post-only order that rests on the book"


class DuplicateOrderRejected(InvalidOrderRejected):
    """The client order id is already used by an open order."""

    expected = "a client order id not used by an open order"


class OrderNotFoundRejected(ExchangeRejected):
    """The exchange does not know the order (on a cancel: it is already gone)."""

    expected = "an order the exchange knows"


class MarketClosedRejected(ExchangeRejected):
    """The market does not trade now (halt, delisting, no data at the replay time)."""

    expected = "an open market"


class TimestampRejected(ExchangeRejected):
    """An order request was refused for its timestamp; the clock has been resynced, nothing was executed."""

    expected = "a request timestamp within recvWindow of the exchange's clock (the clock is now resynced)"


# --- operational: halt the bot ------------------------------------------------------------------


class ExchangeOperationalError(ExchangeCallError):
    """Something only a human can fix: halt the bot (credentials, account, clock, unknown answers)."""

    exit_code = 9
    expected = "an exchange answer the toolkit knows how to handle"


class AccountSuspended(ExchangeOperationalError):
    """The account may not trade (suspended, restricted location, manual action needed)."""

    expected = "an account allowed to trade"


class UnexpectedResponse(ExchangeOperationalError):
    """The exchange answered in a shape ccxt could not parse."""

    expected = "an answer in the exchange's documented shape"


class _ConfigurationShaped(ExchangeOperationalError, ConfigurationError):
    """Operational errors whose fix is a configuration change (exit 2, ``field: expected …, found …``)."""

    exit_code = ConfigurationError.exit_code
    field = "exchange"

    def __str__(self) -> str:
        return f"{self.field}: expected {self.expected}, found {self.found} ({self.where})"


class AuthenticationFailed(_ConfigurationShaped):
    """The API key or secret is wrong, or lacks a permission the call needs."""

    field = "credentials"
    expected = "a valid API key and secret with the permissions the call needs"


class ClockOutOfSync(_ConfigurationShaped):
    """The request timestamp is outside recvWindow even after one resync of the clock."""

    field = "clock"
    expected = ("a local clock within recvWindow of the exchange's (load_time_difference() did not cure it: "
                "sync the host clock)")


class UnknownSymbol(_ConfigurationShaped):
    """The exchange does not list the symbol."""

    field = "symbol"
    expected = "a symbol listed by the exchange"


class ExchangeNotSupported(_ConfigurationShaped):
    """The exchange (or ccxt for it) does not support the call."""

    field = "exchange"
    expected = "an exchange that supports the call"


# --- outcome unknown: reconcile by client order id ----------------------------------------------


class OutcomeUnknown(ExchangeCallError):
    """An order placement or cancel may or may not have been executed: reconcile, never resend blindly.

    Query the order by ``client_order_id`` (``find_order``) until the answer is definite.

    Parameters
    ----------
    client_order_id
        The client order id the request carried.
    symbol
        The market of the order.
    """

    exit_code = 10
    expected = "a definite answer to an order request (the exchange may have executed it: reconcile)"

    def __init__(self, operation: str, exchange: str, detail: str, *, client_order_id: str | None,
                 symbol: str | None, ccxt_class: str | None = None, code: int | None = None) -> None:
        self.client_order_id = client_order_id
        self.symbol = symbol
        super().__init__(operation, exchange, detail, ccxt_class=ccxt_class, code=code)

    @property
    def found(self) -> str:
        return f"{super().found} [client order id {self.client_order_id!r}]"


def error_fields(exc: ExchangeCallError) -> dict[str, Any]:
    """Return the typed fields of an exchange error as a JSON-ready dict (for journals and alerts)."""
    doc: dict[str, Any] = {"class": type(exc).__name__, "operation": exc.operation, "exchange": exc.exchange,
                           "ccxt_class": exc.ccxt_class, "code": exc.code, "detail": exc.detail,
                           "attempts": exc.attempts, "exit_code": exc.exit_code}
    for name in ("retry_after", "status", "client_order_id", "symbol"):
        if hasattr(exc, name):
            doc[name] = getattr(exc, name)
    return doc


def _rebuild(cls: type[ExchangeCallError], args: tuple[Any, ...], state: dict[str, Any]) -> ExchangeCallError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc
