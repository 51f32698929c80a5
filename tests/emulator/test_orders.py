"""Orders, fills, fees and balances through real ccxt against the emulator."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.emulator.testing import step_clock
from toolkit.exchange import exchange_client

D = Decimal


def _total(client: Any, asset: str) -> Decimal:
    bal = client.fetch_balance()["info"]["balances"]
    row = next(b for b in bal if b["asset"] == asset)
    return D(row["free"]) + D(row["locked"])


def test_market_buy_fills_with_fee_in_quote_and_moves_balances(client: Any) -> None:
    usdt0 = _total(client, "USDT")
    order = client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert order["status"] == "closed" and order["filled"] == 0.01
    cost, fee = D(order["info"]["cummulativeQuoteQty"]), D(order["info"]["fills"][0]["commission"])
    assert fee == (cost * D("0.001")).quantize(D("0.00000001"))
    assert order["fee"]["currency"] == "USDT"
    assert _total(client, "USDT") == usdt0 - cost - fee
    assert _total(client, "BTC") == D("0.01")
    # the fill is above the last closed price (half-spread + impact) but within a few basis points
    last = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][4]
    assert last < order["average"] < last * 1.002


def test_market_sell_after_buy_loses_spread_and_fees(client: Any) -> None:
    usdt0 = _total(client, "USDT")
    client.create_order("BTC/USDT", "market", "buy", 0.5)
    sell = client.create_order("BTC/USDT", "market", "sell", 0.5)
    assert sell["status"] == "closed"
    assert _total(client, "BTC") == 0
    assert _total(client, "USDT") < usdt0


def test_impact_grows_with_order_size(client: Any) -> None:
    small = client.create_order("BTC/USDT", "market", "buy", 0.001)
    big = client.create_order("BTC/USDT", "market", "buy", 1.2)
    assert big["average"] > small["average"]


def test_limit_order_rests_fetch_and_cancel_by_client_order_id(client: Any) -> None:
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, {"clientOrderId": "my-limit-1"})
    assert order["status"] == "open" and order["clientOrderId"] == "my-limit-1"
    assert _total(client, "USDT") == D(100000)  # locked, not spent
    locked = D(next(b for b in client.fetch_balance()["info"]["balances"] if b["asset"] == "USDT")["locked"])
    assert locked == D("500.5")  # price × qty × (1 + 0.1 % fee)
    found = client.fetch_order(None, "BTC/USDT", {"clientOrderId": "my-limit-1"})
    assert found["id"] == order["id"] and found["status"] == "open"
    assert [o["id"] for o in client.fetch_open_orders("BTC/USDT")] == [order["id"]]
    canceled = client.cancel_order(None, "BTC/USDT", {"clientOrderId": "my-limit-1"})
    assert canceled["status"] == "canceled"
    assert client.fetch_open_orders("BTC/USDT") == []
    assert client.fetch_order(order["id"], "BTC/USDT")["status"] == "canceled"
    assert client.fetch_balance()["USDT"]["free"] == 100000


def test_duplicate_client_order_id_is_rejected_while_open(client: Any) -> None:
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, {"clientOrderId": "dup"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, {"clientOrderId": "dup"})
    client.cancel_order(None, "BTC/USDT", {"clientOrderId": "dup"})
    again = client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, {"clientOrderId": "dup"})
    assert again["status"] == "open"


def test_resting_limit_fills_as_maker_when_price_crosses(emu: Emulator, client: Any) -> None:
    bars = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)
    price = round(bars[0][4] * 0.997, 2)  # 0.3 % below: rests
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, price)
    assert order["status"] == "open"
    step_clock(emu.url, 24 * 60)
    later = client.fetch_ohlcv("BTC/USDT", "1m", since=bars[0][0] + 120_000, limit=1000)
    crossed = [b for b in later if b[3] < price]
    done = client.fetch_order(order["id"], "BTC/USDT")
    assert crossed, "the replayed day must cross the limit price for this test to mean anything"
    assert done["status"] == "closed" and done["average"] == price
    trade = client.fetch_my_trades("BTC/USDT")[-1]
    assert trade["takerOrMaker"] == "maker" and trade["order"] == order["id"]
    assert trade["timestamp"] == crossed[0][0] + 59_999  # filled on the first crossing bar, at its close


def test_large_market_order_fills_partially_across_bars(make_emulator: Any) -> None:
    emu = make_emulator(balances={"USDT": D(10_000_000)})
    client = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                             enableRateLimit=False)
    vol = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][5]
    qty = round(vol * 0.4, 3)  # more than the 25 % participation cap of one bar, under MARKET_LOT_SIZE
    assert qty <= 88
    order = client.create_order("BTC/USDT", "market", "buy", qty)
    assert order["status"] == "open" and 0 < order["filled"] < qty
    assert order["filled"] == pytest.approx(vol * 0.25, abs=1e-5)
    step_clock(emu.url, 120)
    done = client.fetch_order(order["id"], "BTC/USDT")
    assert done["status"] == "closed" and done["filled"] == qty
    trades = client.fetch_my_trades("BTC/USDT", params={"orderId": order["id"]})
    assert len(trades) >= 2 and len({t["timestamp"] for t in trades}) == len(trades)
    assert sum(D(t["info"]["qty"]) for t in trades) == D(str(qty))
    assert client.fetch_balance()["USDT"]["used"] == 0  # the unused lock was released


def test_ioc_limit_expires_unfilled_remainder(client: Any) -> None:
    price = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][4]
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, round(price * 0.99, 2),
                                {"timeInForce": "IOC"})
    assert order["status"] == "expired" and order["filled"] == 0
    assert client.fetch_balance()["USDT"]["used"] == 0


def test_fetch_orders_and_trades_history(client: Any) -> None:
    ids = [client.create_order("BTC/USDT", "market", "buy", 0.001)["id"] for _ in range(3)]
    history = client.fetch_orders("BTC/USDT")
    assert [o["id"] for o in history] == ids
    trades = client.fetch_my_trades("BTC/USDT")
    assert [t["order"] for t in trades] == ids
    assert all(t["fee"]["currency"] == "USDT" for t in trades)


def test_async_create_fetch_cancel(emu: Emulator) -> None:
    async def run() -> tuple[str, str, str]:
        ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, async_=True,
                             clock=emu.clock,
                             enableRateLimit=False)
        try:
            await ex.load_markets()
            market = await ex.create_order("BTC/USDT", "market", "buy", 0.002)
            limit = await ex.create_order("BTC/USDT", "limit", "sell", 0.001, 90_000,
                                          {"clientOrderId": "async-1"})
            got = await ex.fetch_order(limit["id"], "BTC/USDT")
            canceled = await ex.cancel_order(limit["id"], "BTC/USDT")
            balance = await ex.fetch_balance()
            assert balance["BTC"]["total"] == 0.002
            return market["status"], got["clientOrderId"], canceled["status"]
        finally:
            await ex.close()

    assert asyncio.run(run()) == ("closed", "async-1", "canceled")


def test_quote_order_qty_buy_can_spend_the_whole_free_balance(client: Any) -> None:
    usdt0 = _total(client, "USDT")
    order = client.create_market_buy_order_with_cost("BTC/USDT", float(usdt0))
    assert order["status"] == "closed" and order["info"]["origQuoteOrderQty"] == "100000.00000000"
    cost = D(order["info"]["cummulativeQuoteQty"])
    fee = sum(D(f["commission"]) for f in order["info"]["fills"])
    assert cost + fee <= usdt0  # cost and fee stay within quoteOrderQty
    assert cost + fee > usdt0 * D("0.999")  # and use nearly all of it
    balances = {b["asset"]: b for b in client.fetch_balance()["info"]["balances"]}
    assert D(balances["USDT"]["free"]) == usdt0 - cost - fee and D(balances["USDT"]["locked"]) == 0
    assert D(balances["BTC"]["free"]) == D(order["info"]["executedQty"])
    # through create_order's params too
    sold = client.create_order("BTC/USDT", "market", "sell", order["filled"])
    again = client.create_order("BTC/USDT", "market", "buy", None, None,
                                {"quoteOrderQty": float(D(sold["info"]["cummulativeQuoteQty"]) * D("0.999"))})
    assert again["status"] == "closed"
    assert D(client.fetch_balance()["info"]["balances"][0]["free"]) >= 0
