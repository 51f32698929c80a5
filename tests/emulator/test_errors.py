"""Binance error codes from the emulator become ccxt's real exceptions."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import ccxt
import pytest

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.exchange import exchange_client


def _client(emu: Emulator, key: str = DEFAULT_API_KEY, secret: str = DEFAULT_API_SECRET, **kw: Any) -> Any:
    ex = exchange_client(url=emu.url, api_key=key, secret=secret, clock=emu.clock, enableRateLimit=False, **kw)
    ex.load_markets()
    return ex


def _raw(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_wrong_api_key_is_authentication_error(emu: Emulator) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        _client(emu, key="not-the-key").fetch_balance()


def test_wrong_secret_is_authentication_error(emu: Emulator) -> None:
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        _client(emu, secret="not-the-secret").fetch_balance()


def test_missing_api_key_header_is_2014(emu: Emulator) -> None:
    status, body = _raw(emu.url + "/api/v3/account?timestamp=1&signature=00")
    assert (status, body["code"]) == (401, -2014)


class _Offset:
    """A signing clock ``offset_ms`` away from the emulator's replay clock."""

    def __init__(self, clock: Any, offset_ms: int) -> None:
        self.clock, self.offset_ms = clock, offset_ms

    def now_ms(self) -> int:
        return int(self.clock.now_ms()) + self.offset_ms

    def now(self) -> Any:
        return self.clock.now()


@pytest.mark.parametrize(("offset_ms", "ok"), [(-20_000, False), (20_000, False), (-4_000, True), (900, True),
                                               (1_000, False)])
def test_timestamp_outside_the_window_is_invalid_nonce(emu: Emulator, offset_ms: int, ok: bool) -> None:
    # Binance: accept when timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow (5000)
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET,
                         clock=_Offset(emu.clock, offset_ms), enableRateLimit=False)
    if ok:
        assert ex.fetch_balance()["USDT"]["free"] == 100000
    else:
        with pytest.raises(ccxt.InvalidNonce, match="-1021"):
            ex.fetch_balance()


def test_insufficient_funds(client: Any) -> None:
    with pytest.raises(ccxt.InsufficientFunds, match="insufficient balance"):
        client.create_order("BTC/USDT", "market", "sell", 0.01)
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "limit", "buy", 2, 60_000)  # 120k USDT > 100k


@pytest.mark.parametrize(("amount", "price", "filter_name"), [
    (10_000, 60_000, "LOT_SIZE"),               # above maxQty 9000
    (0.01, 2_000_000, "PRICE_FILTER"),          # above maxPrice 1,000,000
    (0.01, 400_000, "PERCENT_PRICE_BY_SIDE"),   # more than 5 × the reference price
])
def test_filter_failures_are_invalid_order(client: Any, amount: float, price: float,
                                           filter_name: str) -> None:
    with pytest.raises(ccxt.InvalidOrder, match=filter_name):
        client.create_order("BTC/USDT", "limit", "buy", amount, price)


def test_market_lot_size_and_notional(client: Any) -> None:
    with pytest.raises(ccxt.InvalidOrder, match="MARKET_LOT_SIZE"):
        client.create_order("BTC/USDT", "market", "sell", 100)
    # Binance answers -1013 "Filter failure: NOTIONAL"; ccxt maps that code to BadRequest
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):
        client.create_order("BTC/USDT", "limit", "buy", 0.00001, 50_000)


def test_unknown_order_is_order_not_found(client: Any) -> None:
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        client.cancel_order("42", "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        client.fetch_order("42", "BTC/USDT")
    filled = client.create_order("BTC/USDT", "market", "buy", 0.001)
    with pytest.raises(ccxt.OrderNotFound):
        client.cancel_order(filled["id"], "BTC/USDT")  # a filled order cannot be canceled


def test_limit_maker_that_would_take_is_rejected(client: Any) -> None:
    last = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][4]
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        client.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 1.01, 2), {"postOnly": True})
    ok = client.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 0.99, 2), {"postOnly": True})
    assert ok["status"] == "open" and ok["info"]["type"] == "LIMIT_MAKER"


def test_recv_window_above_the_limit_is_rejected(client: Any) -> None:
    with pytest.raises(ccxt.ExchangeError, match="recvWindow must be less than 60000") as info:
        client.fetch_balance({"recvWindow": 60_001})
    assert '"code":-1131' in str(info.value)  # ccxt 4.5.90 maps -1131 on spot to plain ExchangeError
