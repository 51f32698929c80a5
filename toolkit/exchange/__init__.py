"""The exchange adapter: ccxt client construction, errors by reaction, retries of idempotent reads.

The only toolkit package that imports ccxt (besides the emulator's tests of ccxt's own
behaviour). The fetcher and the runner both go through it:

* :class:`ExchangeSession` — one client; retried reads; order placement and cancel sent once.
* :func:`exchange_call` — convert ccxt errors at the call (``toolkit.exchange.convert``).
* :class:`Retrier` / :class:`RetryPolicy` — tenacity-based retries of idempotent calls.
* ``toolkit.exchange.errors`` — temporary, rejected, operational and outcome-unknown errors.
"""

from toolkit.exchange.client import BINANCE_API, SPOT_OPTIONS, exchange_client
from toolkit.exchange.convert import exchange_call
from toolkit.exchange.errors import (
    ExchangeCallError,
    ExchangeOperationalError,
    ExchangeRejected,
    ExchangeTemporaryError,
    OutcomeUnknown,
)
from toolkit.exchange.orders import Order, cancel_order, find_order, new_client_order_id, place_order
from toolkit.exchange.retry import Retrier, RetryEvent, RetryPolicy
from toolkit.exchange.session import ExchangeConfig, ExchangeSession

__all__ = [
    "BINANCE_API",
    "SPOT_OPTIONS",
    "ExchangeCallError",
    "ExchangeConfig",
    "ExchangeOperationalError",
    "ExchangeRejected",
    "ExchangeSession",
    "ExchangeTemporaryError",
    "Order",
    "OutcomeUnknown",
    "Retrier",
    "RetryEvent",
    "RetryPolicy",
    "cancel_order",
    "exchange_call",
    "exchange_client",
    "find_order",
    "new_client_order_id",
    "place_order",
]
