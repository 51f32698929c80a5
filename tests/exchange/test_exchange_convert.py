"""The reaction table, class by class, against errors ccxt really raises from the emulator.

Each row provokes one failure through real ccxt over loopback HTTP (a fault or a real bad
request) with a single attempt, and checks the toolkit class, the ccxt class it came from,
the Binance code and the family's exit code.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import ccxt
import pytest
from ccxt.base import errors as ccxt_errors
from exchange_support import ONCE, faults, requests_seen

from toolkit.clock import ManualClock
from toolkit.emulator import Emulator
from toolkit.errors import ConfigurationError, TemporaryError
from toolkit.exchange import ExchangeSession, exchange_call
from toolkit.exchange.convert import REACTIONS, classify, convert, scrub
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
    UnexpectedResponse,
    UnknownSymbol,
    error_fields,
)

Connect = Callable[..., ExchangeSession]


def _last(s: ExchangeSession) -> float:
    return float(s.fetch_ticker("BTC/USDT")["last"])


def _raw(s: ExchangeSession, what: str, fn: Callable[[], Any]) -> Any:
    """Call ccxt directly, converted at the call as the adapter does."""
    with exchange_call(what, idempotent=True, client=s.client):
        return fn()


def _duplicate(s: ExchangeSession) -> None:
    price = round(_last(s) * 0.97, 2)
    s.place_order("BTC/USDT", "buy", "limit", "0.001", price, client_order_id="dup-1")
    s.place_order("BTC/USDT", "buy", "limit", "0.001", price, client_order_id="dup-1")


# name, faults, action, toolkit class, ccxt class, Binance code
CASES: list[tuple[str, list[dict[str, Any]], Callable[[ExchangeSession], Any], type[ExchangeCallError], str,
                  int | None]] = [
    ("insufficient funds", [],
     lambda s: s.place_order("BTC/USDT", "sell", "market", "1", client_order_id="c-1"),
     InsufficientFundsRejected, "InsufficientFunds", None),
    ("NOTIONAL filter is -1013 BadRequest", [],
     lambda s: s.place_order("BTC/USDT", "buy", "limit", "0.00001", "40000", client_order_id="c-2"),
     InvalidOrderRejected, "BadRequest", -1013),
    ("PERCENT_PRICE_BY_SIDE filter", [],
     lambda s: s.place_order("BTC/USDT", "buy", "limit", "0.001", "100", client_order_id="c-3"),
     InvalidOrderRejected, "InvalidOrder", None),
    ("amount below the step (ccxt, before sending)", [],
     lambda s: s.place_order("BTC/USDT", "buy", "market", "0.000001", client_order_id="c-4"),
     InvalidOrderRejected, "InvalidOrder", None),
    ("post-only that would take", [],
     lambda s: s.place_order("BTC/USDT", "buy", "limit", "0.001", round(_last(s) * 1.01, 2),
                             client_order_id="c-5", params={"postOnly": True}),
     OrderWouldTakeRejected, "OrderImmediatelyFillable", None),
    ("duplicate client order id (-2010)", [], _duplicate, DuplicateOrderRejected, "InvalidOrder", -2010),
    ("cancel an unknown order (-2011)", [],
     lambda s: s.cancel_order("BTC/USDT", client_order_id="never-placed"),
     OrderNotFoundRejected, "OrderNotFound", -2011),
    ("query an unknown order (-2013)", [], lambda s: s.fetch_order("BTC/USDT", "424242"),
     OrderNotFoundRejected, "OrderNotFound", -2013),
    ("symbol missing from the markets", [], lambda s: s.fetch_ohlcv("DOGE/USDT"), UnknownSymbol, "BadSymbol", None),
    ("symbol refused by the server (-1121)", [],
     lambda s: _raw(s, "klines", lambda: s.client.public_get_klines({"symbol": "DOGEUSDT", "interval": "1m"})),
     UnknownSymbol, "BadSymbol", -1121),
    ("invalid interval (-1120)", [],
     lambda s: _raw(s, "klines", lambda: s.client.public_get_klines({"symbol": "BTCUSDT", "interval": "7m"})),
     InvalidRequestRejected, "BadRequest", -1120),
    ("an error ccxt does not map (-1131)", [], lambda s: s.fetch_balance({"recvWindow": 70000}),
     ExchangeOperationalError, "ExchangeError", -1131),
    ("a call ccxt does not support", [],
     lambda s: _raw(s, "fetch_open_order", lambda: s.client.fetch_open_order("1", "BTC/USDT", {"trigger": True})),
     ExchangeNotSupported, "NotSupported", None),
    ("HTTP 503", [{"kind": "http_5xx", "status": 503}], lambda s: s.fetch_balance(),
     ExchangeTemporaryError, "ExchangeNotAvailable", None),
    ("HTTP 504", [{"kind": "http_5xx", "status": 504}], lambda s: s.fetch_balance(),
     ExchangeTemporaryError, "RequestTimeout", None),
    ("HTTP 429", [{"kind": "rate_limit", "retry_after": 7}], lambda s: s.fetch_balance(),
     RateLimited, "DDoSProtection", -1003),
    ("HTTP 418", [{"kind": "ban", "retry_after": 9}], lambda s: s.fetch_balance(),
     RateLimited, "DDoSProtection", -1003),
    ("maintenance", [{"kind": "maintenance"}], lambda s: s.fetch_balance(),
     ExchangeMaintenance, "OnMaintenance", None),
    ("client timeout", [{"kind": "timeout", "seconds": 0.6, "path": "/api/v3/account"}],
     lambda s: s.fetch_balance(), ExchangeTemporaryError, "RequestTimeout", None),
    ("connection dropped after an accepted order", [{"kind": "drop_after_order"}],
     lambda s: s.place_order("BTC/USDT", "buy", "market", "0.001", client_order_id="c-6"),
     OutcomeUnknown, "NetworkError", None),
]


@pytest.mark.parametrize(("name", "rules", "action", "expected", "ccxt_class", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_real_ccxt_errors_convert_by_the_table(emu: Emulator, connect: Connect, name: str,
                                               rules: list[dict[str, Any]], action: Callable[[ExchangeSession], Any],
                                               expected: type[ExchangeCallError], ccxt_class: str,
                                               code: int | None) -> None:
    session = connect(retry=ONCE, timeout_ms=300)
    session.load_markets()
    faults(emu, *rules)
    with pytest.raises(ExchangeCallError) as info:
        action(session)
    exc = info.value
    assert type(exc) is expected, f"{name}: {type(exc).__name__}: {exc}"
    assert exc.ccxt_class == ccxt_class and type(exc.__cause__).__name__ == ccxt_class
    assert isinstance(exc.__cause__, ccxt.BaseError)
    assert exc.code == code and exc.exchange == "binance"
    assert str(exc).count("expected") == 1 and ccxt_class in str(exc)
    families = {ExchangeTemporaryError: 75, ExchangeRejected: 8, OutcomeUnknown: 10}
    family_code = next((c for f, c in families.items() if isinstance(exc, f)), None)
    if family_code is None:  # operational: 2 when the fix is a configuration change, else 9
        assert isinstance(exc, ExchangeOperationalError)
        family_code = 2 if isinstance(exc, ConfigurationError) else 9
    assert exc.exit_code == family_code
    assert error_fields(exc)["class"] == expected.__name__


def test_rate_limit_carries_status_and_retry_after(emu: Emulator, connect: Connect) -> None:
    session = connect(retry=ONCE)
    session.load_markets()
    for kind, status, wait in (("rate_limit", 429, 7), ("ban", 418, 9)):
        faults(emu, {"kind": kind, "retry_after": wait, "times": 1})
        with pytest.raises(RateLimited) as info:
            session.fetch_balance()
        assert (info.value.status, info.value.retry_after) == (status, float(wait))
        assert isinstance(info.value, TemporaryError) and f"Retry-After {wait} s" in str(info.value)


def test_authentication_failures_are_configuration_shaped(emu: Emulator, connect: Connect) -> None:
    for key, secret, code in (("emulator-api-key", "not-the-secret", -1022), ("no-such-key", "whatever", -2015)):
        session = connect(api_key=key, secret=secret, retry=ONCE)
        with pytest.raises(AuthenticationFailed) as info:
            session.fetch_balance()
        assert info.value.code == code and info.value.field == "credentials" and info.value.exit_code == 2
        assert str(info.value).startswith("credentials: expected a valid API key and secret")


def test_market_closed_when_the_replay_has_no_bar(make_emulator: Callable[..., Emulator], connect: Connect) -> None:
    closed = make_emulator(start="2024-03-04")  # the data ends 2024-03-03 23:59
    session = connect(closed, retry=ONCE)
    with pytest.raises(MarketClosedRejected) as info:
        session.place_order("BTC/USDT", "buy", "market", "0.001", client_order_id="closed-1")
    assert info.value.ccxt_class == "MarketClosed" and info.value.exit_code == 8
    assert requests_seen(closed, "POST", "/api/v3/order")[0]["status"] == 400


class RacingClock(ManualClock):
    """A signing clock that runs 10 s ahead on every reading: a resync is stale by the next request."""

    def now_ms(self) -> int:
        return self.advance(10_000)


def test_clock_that_one_resync_does_not_cure(emu: Emulator, connect: Connect) -> None:
    session = connect(clock=RacingClock("2024-03-01"))  # drifts faster than any resync can follow
    session.load_markets()
    with pytest.raises(ClockOutOfSync) as info:
        session.fetch_balance()
    assert info.value.code == -1021 and info.value.field == "clock" and info.value.exit_code == 2
    assert info.value.attempts == 2  # the call, the resync (GET /time, not counted), the one retry
    assert [r["path"] for r in requests_seen(emu) if r["path"] != "/api/v3/exchangeInfo"] == [
        "/api/v3/account", "/api/v3/time", "/api/v3/account"]


def test_every_ccxt_class_has_a_reaction() -> None:
    """Classes the emulator cannot provoke: the table still decides each of them."""
    names = [n for n in ccxt_errors.__all__ if n != "error_hierarchy"]
    families = (ExchangeTemporaryError, ExchangeRejected, ExchangeOperationalError, OutcomeUnknown)
    for name in names:
        cls = getattr(ccxt, name)
        assert cls in REACTIONS, f"ccxt.{name} has no entry in REACTIONS"
        assert issubclass(classify(cls("binance x")), families), name
    expected = {"BadResponse": UnexpectedResponse, "NullResponse": UnexpectedResponse,
                "AccountSuspended": AccountSuspended, "PermissionDenied": AuthenticationFailed,
                "CancelPending": ExchangeTemporaryError, "DuplicateOrderId": DuplicateOrderRejected,
                "OperationFailed": ExchangeTemporaryError, "RateLimitExceeded": RateLimited,
                "InvalidNonce": ClockOutOfSync, "BadSymbol": UnknownSymbol}
    for name, target in expected.items():
        assert classify(getattr(ccxt, name)("binance x")) is target, name


def test_order_calls_turn_ambiguous_failures_into_outcome_unknown() -> None:
    """The same ccxt class reads differently when the call was an order placement."""
    timeout = ccxt.RequestTimeout("binance POST http://127.0.0.1/api/v3/order")
    read = convert(timeout, "fetch_balance", exchange="binance")
    order = convert(timeout, "place_order", exchange="binance", idempotent=False, client_order_id="x-1",
                    symbol="BTC/USDT")
    assert type(read) is ExchangeTemporaryError
    assert isinstance(order, OutcomeUnknown) and not isinstance(order, TemporaryError)
    assert (order.client_order_id, order.symbol) == ("x-1", "BTC/USDT") and "'x-1'" in str(order)
    refused = convert(ccxt.DDoSProtection("binance 429 Too Many Requests {}"), "place_order", idempotent=False)
    assert type(refused) is RateLimited and refused.status == 429  # refused, not ambiguous
    stale = convert(ccxt.InvalidNonce('binance {"code":-1021}'), "place_order", idempotent=False)
    assert type(stale).__name__ == "TimestampRejected" and isinstance(stale, ExchangeRejected)


def test_errors_survive_pickling_with_their_fields() -> None:
    """A runner may hand errors across processes (journal writer, alerting)."""
    lost = convert(ccxt.NetworkError("binance POST http://127.0.0.1/api/v3/order"), "place_order", exchange="binance",
                   idempotent=False, client_order_id="p-1", symbol="BTC/USDT")
    lost.attempts = 1
    again = pickle.loads(pickle.dumps(lost))
    assert type(again) is OutcomeUnknown and str(again) == str(lost)
    assert error_fields(again) == error_fields(lost) and again.client_order_id == "p-1"
    symbol = pickle.loads(pickle.dumps(convert(ccxt.BadSymbol("binance DOGE/USDT"), "fetch_ohlcv")))
    assert isinstance(symbol, ConfigurationError) and symbol.field == "symbol" and symbol.exit_code == 2


def test_exchange_call_passes_other_exceptions_through() -> None:
    with pytest.raises(KeyError), exchange_call("not ccxt", idempotent=True):
        raise KeyError("ours")


def test_scrub_removes_credentials_and_signatures() -> None:
    client = ccxt.binance({"apiKey": "key-abcdef", "secret": "very-secret-value"})
    text = "GET /x?note=very-secret-value&signature=0123abcd key-abcdef"
    assert scrub(text, client) == "GET /x?note=***&signature=*** ***"
