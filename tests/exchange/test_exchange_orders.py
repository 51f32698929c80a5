"""Order placement and cancellation are sent exactly once; an ambiguous failure is reconciled by client order id.

Each test counts the ``POST /api/v3/order`` (or ``DELETE``) requests the emulator received:
if anyone made the adapter resend an order, these counts (and the orders on the exchange)
would show it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest
from exchange_support import fault_counts, faults, forget_requests, requests_seen

from toolkit.emulator import Emulator
from toolkit.errors import ConfigurationError
from toolkit.exchange import ExchangeSession, OutcomeUnknown, new_client_order_id
from toolkit.exchange.errors import (
    InsufficientFundsRejected,
    OrderNotFoundRejected,
    RateLimited,
    TimestampRejected,
)
from toolkit.exchange.orders import CLIENT_ORDER_ID

Connect = Callable[..., ExchangeSession]
ORDER = "/api/v3/order"


def _posts(emu: Emulator) -> int:
    return len(requests_seen(emu, "POST", ORDER))


def test_place_and_cancel_round_trip_with_exact_numbers(emu: Emulator, connect: Connect) -> None:
    session = connect()
    last = Decimal(str(session.fetch_ticker("BTC/USDT")["last"]))
    price = last * Decimal("0.97123456")  # more digits than the tick allows
    placed = session.place_order("BTC/USDT", "buy", "limit", Decimal("0.0012345"), price, client_order_id="rt-1")
    assert placed.client_order_id == "rt-1" and placed.status == "open"
    assert placed.amount == Decimal("0.00123")  # truncated to the 0.00001 step
    assert placed.price == price.quantize(Decimal("0.01"))  # rounded to the 0.01 tick
    assert [o.client_order_id for o in session.fetch_open_orders("BTC/USDT")] == ["rt-1"]
    assert session.fetch_order("BTC/USDT", str(placed.id)).price == placed.price
    cancelled = session.cancel_order("BTC/USDT", client_order_id="rt-1")
    assert cancelled.status == "canceled" and session.fetch_open_orders("BTC/USDT") == []
    with pytest.raises(OrderNotFoundRejected) as info:  # already gone: a typed answer, not a failure to retry
        session.cancel_order("BTC/USDT", order_id=str(placed.id))
    assert info.value.code == -2011
    assert len(requests_seen(emu, "DELETE", ORDER)) == 2 and _posts(emu) == 1


def test_a_market_order_fills_and_shows_in_my_trades(emu: Emulator, connect: Connect) -> None:
    session = connect()
    order = session.place_order("BTC/USDT", "buy", "market", "0.002", client_order_id=new_client_order_id("mk"))
    assert order.status == "closed" and order.filled == Decimal("0.002") and order.average is not None
    trades = session.fetch_my_trades("BTC/USDT")
    assert sum(Decimal(str(t["amount"])) for t in trades) == Decimal("0.002")
    fee = sum(Decimal(str(t["fee"]["cost"])) for t in trades)
    assert {t["fee"]["currency"] for t in trades} == {"BTC"} and fee > 0  # a buyer pays in what it receives
    assert Decimal(str(session.fetch_balance()["BTC"]["total"])) == Decimal("0.002") - fee


def test_dropped_after_acceptance_is_outcome_unknown_then_found_once(emu: Emulator, connect: Connect) -> None:
    session = connect()
    session.load_markets()
    faults(emu, {"kind": "drop_after_order", "path": ORDER, "times": 1})
    with pytest.raises(OutcomeUnknown) as info:
        session.place_order("BTC/USDT", "buy", "market", "0.002", client_order_id="lost-ack-1")
    lost = info.value
    assert lost.client_order_id == "lost-ack-1" and lost.symbol == "BTC/USDT" and lost.exit_code == 10
    assert lost.ccxt_class == "NetworkError" and _posts(emu) == 1  # sent once, never again
    found = session.find_order("BTC/USDT", lost.client_order_id)
    assert found is not None and found.client_order_id == "lost-ack-1"
    assert found.status == "closed" and found.filled == Decimal("0.002")
    orders = session.fetch_orders("BTC/USDT")
    assert [o.client_order_id for o in orders] == ["lost-ack-1"]  # exactly one order on the exchange
    fee = sum(Decimal(str(t["fee"]["cost"])) for t in session.fetch_my_trades("BTC/USDT"))
    assert Decimal(str(session.fetch_balance()["BTC"]["total"])) == Decimal("0.002") - fee
    assert fault_counts(emu) == {"drop_after_order": 1}


def test_a_5xx_on_placement_is_outcome_unknown_and_resolves_to_not_placed(emu: Emulator, connect: Connect) -> None:
    session = connect()
    session.load_markets()
    faults(emu, {"kind": "http_5xx", "path": ORDER, "method": "POST", "times": 1})
    with pytest.raises(OutcomeUnknown) as info:
        session.place_order("BTC/USDT", "buy", "market", "0.001", client_order_id="five-1")
    assert info.value.ccxt_class == "ExchangeNotAvailable"
    assert session.find_order("BTC/USDT", "five-1") is None  # the emulator refused before executing
    assert _posts(emu) == 1 and session.fetch_orders("BTC/USDT") == []


def test_a_timeout_on_placement_is_outcome_unknown_and_not_resent(emu: Emulator, connect: Connect) -> None:
    session = connect(timeout_ms=200)
    session.load_markets()
    faults(emu, {"kind": "timeout", "path": ORDER, "method": "POST", "times": 1, "seconds": 0.6})
    with pytest.raises(OutcomeUnknown) as info:
        session.place_order("BTC/USDT", "buy", "market", "0.001", client_order_id="slow-1")
    assert info.value.ccxt_class == "RequestTimeout"
    assert fault_counts(emu) == {"timeout": 1}
    assert session.find_order("BTC/USDT", "slow-1") is None
    assert len(requests_seen(emu, "POST", ORDER)) <= 1  # the held request is logged once it ends, never twice


@pytest.mark.parametrize(("kind", "status"), [("rate_limit", 429), ("ban", 418)])
def test_a_rate_limit_on_placement_is_not_resent(emu: Emulator, connect: Connect, kind: str, status: int) -> None:
    session = connect()
    session.load_markets()
    faults(emu, {"kind": kind, "path": ORDER, "method": "POST", "times": 1, "retry_after": 1})
    with pytest.raises(RateLimited) as info:
        session.place_order("BTC/USDT", "buy", "market", "0.001", client_order_id="busy-1")
    assert info.value.status == status and info.value.retry_after == 1.0
    assert [r["status"] for r in requests_seen(emu, "POST", ORDER)] == [status]
    assert session.fetch_orders("BTC/USDT") == []  # refused: nothing exists


def test_a_timestamp_refusal_on_placement_resyncs_and_is_not_resent(emu: Emulator, connect: Connect) -> None:
    session = connect()
    session.load_markets()
    faults(emu, {"kind": "clock_skew", "skew_ms": -30_000})
    forget_requests(emu)
    with pytest.raises(TimestampRejected) as info:
        session.place_order("BTC/USDT", "buy", "market", "0.001", client_order_id="skew-1")
    assert info.value.code == -1021 and info.value.exit_code == 8
    assert [(r["method"], r["path"]) for r in requests_seen(emu)] == [("POST", ORDER), ("GET", "/api/v3/time")]
    # the clock is resynced: a new request (the caller's decision) now passes
    again = session.place_order("BTC/USDT", "buy", "market", "0.001", client_order_id="skew-2")
    assert again.status == "closed" and [o.client_order_id for o in session.fetch_orders("BTC/USDT")] == ["skew-2"]


def test_a_rejection_is_definite_and_sent_once(emu: Emulator, connect: Connect) -> None:
    session = connect()
    with pytest.raises(InsufficientFundsRejected) as info:
        session.place_order("BTC/USDT", "sell", "market", "1", client_order_id="poor-1")
    assert info.value.exit_code == 8 and _posts(emu) == 1


def test_a_5xx_on_cancel_is_outcome_unknown_and_resolved_by_query(emu: Emulator, connect: Connect) -> None:
    session = connect()
    price = round(float(session.fetch_ticker("BTC/USDT")["last"]) * 0.97, 2)
    session.place_order("BTC/USDT", "buy", "limit", "0.001", price, client_order_id="keep-1")
    faults(emu, {"kind": "http_5xx", "path": ORDER, "method": "DELETE", "times": 1})
    with pytest.raises(OutcomeUnknown) as info:
        session.cancel_order("BTC/USDT", client_order_id="keep-1")
    assert info.value.client_order_id == "keep-1"
    assert len(requests_seen(emu, "DELETE", ORDER)) == 1
    still = session.find_order("BTC/USDT", "keep-1")
    assert still is not None and still.status == "open"  # the cancel did not happen: the caller decides


def test_bad_order_arguments_send_nothing(emu: Emulator, connect: Connect) -> None:
    session = connect()
    session.load_markets()
    forget_requests(emu)
    bad = [
        ({"client_order_id": "has space"}, "client_order_id"),
        ({"client_order_id": "x" * 37}, "client_order_id"),
        ({"client_order_id": "ok-1", "side": "hold"}, "side"),
        ({"client_order_id": "ok-2", "type": "stop"}, "type"),
        ({"client_order_id": "ok-3", "price": "100"}, "price"),  # a price on a market order
        ({"client_order_id": "ok-4", "params": {"clientOrderId": "other"}}, "params.clientOrderId"),
    ]
    for overrides, field in bad:
        args = {"symbol": "BTC/USDT", "side": "buy", "type": "market", "amount": "0.001", "price": None,
                **overrides}
        with pytest.raises(ConfigurationError) as info:
            session.place_order(**args)  # type: ignore[arg-type]
        assert info.value.field == field
    with pytest.raises(ConfigurationError):
        session.cancel_order("BTC/USDT")  # neither id
    assert requests_seen(emu) == []


def test_new_client_order_ids_are_valid_and_distinct() -> None:
    ids = {new_client_order_id("bot-7") for _ in range(100)}
    assert len(ids) == 100 and all(CLIENT_ORDER_ID.match(i) and i.startswith("bot-7-") for i in ids)
