"""Orders, fills, fees, locks and balances through real ccxt against the emulator."""

from __future__ import annotations

import asyncio
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import ccxt
import pytest

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.emulator.testing import step_clock
from toolkit.exchange import exchange_client

D = Decimal
STEP, TICK, FEE = D("0.00001"), D("0.01"), D("0.001")


def _balances(client: Any) -> dict[str, tuple[Decimal, Decimal]]:
    return {b["asset"]: (D(b["free"]), D(b["locked"])) for b in client.fetch_balance()["info"]["balances"]}


def _total(client: Any, asset: str) -> Decimal:
    free, locked = _balances(client)[asset]
    return free + locked


def _floor(value: Decimal, unit: Decimal) -> Decimal:
    return (value / unit).to_integral_value(rounding=ROUND_FLOOR) * unit


def _walk(levels: list[list[float]], qty: Decimal) -> list[tuple[Decimal, Decimal]]:
    """The fills a taker of ``qty`` gets from ``levels`` (best first)."""
    out, left = [], qty
    for price, size in levels:
        take = min(left, D(str(size)))
        out.append((D(str(price)), take))
        left -= take
        if left == 0:
            return out
    return out


def test_a_market_buy_pays_its_fee_in_the_base_asset(client: Any) -> None:
    usdt0 = _total(client, "USDT")
    order = client.create_order("BTC/USDT", "market", "buy", 0.01)
    assert order["status"] == "closed" and order["filled"] == 0.01
    fills = order["info"]["fills"]
    assert all(f["commissionAsset"] == "BTC" and D(f["commission"]) == D(f["qty"]) * FEE for f in fills)
    fee = sum(D(f["commission"]) for f in fills)
    cost = D(order["info"]["cummulativeQuoteQty"])
    assert order["fee"] == {"currency": "BTC", "cost": float(fee)}
    assert _total(client, "BTC") == D("0.01") - fee == D("0.00999")  # received qty - fee, as on Binance
    assert _total(client, "USDT") == usdt0 - cost  # the quote pays the cost only
    trade = client.fetch_my_trades("BTC/USDT")[-1]
    assert trade["fee"]["currency"] == "BTC" and trade["info"]["commissionAsset"] == "BTC"


def test_a_market_sell_pays_its_fee_in_the_quote_asset(make_emulator: Any) -> None:
    emu = make_emulator(balances={"USDT": D(1000), "BTC": D("0.5")})
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False)
    order = ex.create_order("BTC/USDT", "market", "sell", 0.2)
    cost = D(order["info"]["cummulativeQuoteQty"])
    fee = sum(D(f["commission"]) for f in order["info"]["fills"])
    assert {f["commissionAsset"] for f in order["info"]["fills"]} == {"USDT"}
    assert fee == sum(_floor(D(f["price"]) * D(f["qty"]) * FEE, D("0.00000001")) for f in order["info"]["fills"])
    assert _balances(ex)["USDT"] == (D(1000) + cost - fee, 0) and _balances(ex)["BTC"] == (D("0.3"), 0)


def test_selling_what_a_buy_filled_is_insufficient_funds_and_leaves_dust(client: Any) -> None:
    buy = client.create_order("BTC/USDT", "market", "buy", 0.01234)
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "sell", buy["filled"])  # the fee came out of the BTC bought
    held = D(str(client.fetch_balance()["BTC"]["free"]))
    assert held == D("0.01234") * (1 - FEE) == D("0.01232766")
    sellable = client.amount_to_precision("BTC/USDT", float(held))  # truncated to the 0.00001 step
    assert client.create_order("BTC/USDT", "market", "sell", sellable)["status"] == "closed"
    assert _total(client, "BTC") == held - D(sellable) == D("0.00000766")  # dust, as on Binance


def test_a_market_order_walks_the_book_it_was_shown(client: Any) -> None:
    book = client.fetch_order_book("BTC/USDT", 100)
    asks = book["asks"]
    half = _floor(D(str(asks[2][1])) / 2, STEP)
    qty = D(str(asks[0][1])) + D(str(asks[1][1])) + half  # into the third level
    order = client.create_order("BTC/USDT", "market", "buy", float(qty))
    got = [(D(f["price"]), D(f["qty"])) for f in order["info"]["fills"]]
    assert got == _walk(asks, qty) and len(got) == 3  # the levels fetch_order_book showed, best first
    assert order["average"] > asks[0][0]  # worse prices for size
    after = client.fetch_order_book("BTC/USDT", 100)["asks"]
    assert after[0] == [asks[2][0], float(D(str(asks[2][1])) - half)]  # taken levels are gone
    assert client.fetch_order_book("BTC/USDT", 100)["bids"] == book["bids"]  # the other side is untouched
    step_clock(client.urls["api"]["public"].rsplit("/api", 1)[0], 1)
    assert client.fetch_order_book("BTC/USDT", 5)["asks"][0][0] != after[0][0]  # a new minute, a new book


def test_impact_grows_with_order_size(client: Any) -> None:
    small = client.create_order("BTC/USDT", "market", "buy", 0.001)
    big = client.create_order("BTC/USDT", "market", "buy", 1.2)
    assert big["average"] > small["average"]


def test_a_market_order_never_rests_what_the_book_cannot_fill_expires(make_emulator: Any) -> None:
    emu = make_emulator(balances={"USDT": D(10_000_000)})
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False)
    depth = sum(D(str(a[1])) for a in ex.fetch_order_book("BTC/USDT", 5000)["asks"])
    qty = depth + 1
    assert qty <= 88  # under MARKET_LOT_SIZE: accepted, then filled as far as the book goes
    order = ex.create_order("BTC/USDT", "market", "buy", float(qty))
    assert order["status"] == "expired" and D(order["info"]["executedQty"]) == depth
    assert ex.fetch_open_orders("BTC/USDT") == [] and _balances(ex)["USDT"][1] == 0  # no lock left behind
    step_clock(emu.url, 30)
    later = ex.fetch_order(order["id"], "BTC/USDT")
    assert later["status"] == "expired" and D(later["info"]["executedQty"]) == depth  # nothing fills later
    assert len(ex.fetch_my_trades("BTC/USDT", params={"orderId": order["id"]})) == len(order["info"]["fills"])


def test_a_crossing_limit_order_takes_the_book_then_rests_the_rest(client: Any, emu: Emulator) -> None:
    asks = client.fetch_order_book("BTC/USDT", 10)["asks"]
    price = D(str(asks[2][0]))
    taken = sum(D(str(a[1])) for a in asks[:3])
    qty = taken + D("0.2")
    order = client.create_order("BTC/USDT", "limit", "buy", float(qty), float(price))
    fills = [(D(f["price"]), D(f["qty"])) for f in order["info"]["fills"]]
    assert fills == _walk(asks[:3], taken) and all(p <= price for p, _ in fills)  # taker at the book's prices
    assert order["status"] == "open" and order["info"]["status"] == "PARTIALLY_FILLED"
    assert _balances(client)["USDT"][1] == price * D("0.2")  # the rest rests: price x remaining locked
    trades = client.fetch_my_trades("BTC/USDT")
    assert {t["takerOrMaker"] for t in trades} == {"taker"}
    assert client.fetch_open_orders("BTC/USDT")[0]["remaining"] == 0.2


@pytest.mark.parametrize(("tif", "extra", "status", "filled_levels"), [
    ("IOC", D("0.5"), "expired", 2), ("FOK", D("0.5"), "expired", 0), ("FOK", D(0), "closed", 2)])
def test_ioc_and_fok_take_what_they_can_or_nothing(client: Any, tif: str, extra: Decimal, status: str,
                                                   filled_levels: int) -> None:
    asks = client.fetch_order_book("BTC/USDT", 10)["asks"]
    qty = D(str(asks[0][1])) + D(str(asks[1][1])) + extra
    order = client.create_order("BTC/USDT", "limit", "buy", float(qty), asks[1][0], {"timeInForce": tif})
    assert order["status"] == status and len(order["info"]["fills"]) == filled_levels
    assert _balances(client)["USDT"][1] == 0


def test_a_limit_buy_of_all_the_free_quote_is_accepted(client: Any) -> None:
    free = _balances(client)["USDT"][0]
    price = D(str(client.fetch_order_book("BTC/USDT", 1)["bids"][0][0])) - 100  # rests below the market
    qty = _floor(free / price, STEP)
    order = client.create_order("BTC/USDT", "limit", "buy", float(qty), float(price))
    assert order["status"] == "open"
    assert _balances(client)["USDT"] == (free - price * qty, price * qty)  # price x qty locked, no fee buffer
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "limit", "buy", 0.0001, float(price))


def test_a_market_buy_of_99_percent_of_the_balance_is_accepted(client: Any) -> None:
    free = _balances(client)["USDT"][0]
    ask = D(str(client.fetch_order_book("BTC/USDT", 1)["asks"][0][0]))
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "buy", float(_floor(free * D("1.01") / ask, STEP)))
    order = client.create_order("BTC/USDT", "market", "buy", float(_floor(free * D("0.99") / ask, STEP)))
    assert order["status"] == "closed"
    cost = D(order["info"]["cummulativeQuoteQty"])
    assert _balances(client)["USDT"] == (free - cost, 0)  # it locked nothing beyond what it spent


def test_a_quote_order_qty_buy_can_spend_the_whole_free_balance(client: Any) -> None:
    usdt0 = _total(client, "USDT")
    order = client.create_market_buy_order_with_cost("BTC/USDT", float(usdt0))
    assert order["status"] == "closed" and order["info"]["origQuoteOrderQty"] == "100000.00000000"
    cost = D(order["info"]["cummulativeQuoteQty"])
    last_price = D(order["info"]["fills"][-1]["price"])
    assert usdt0 - last_price * STEP < cost <= usdt0  # all of it, but for less than one more step
    got = D(order["info"]["executedQty"])
    assert _balances(client) == {"BTC": (got * (1 - FEE), 0), "USDT": (usdt0 - cost, 0)}
    sold = client.create_order("BTC/USDT", "market", "sell", client.amount_to_precision("BTC/USDT",
                                                                                       float(got * (1 - FEE))))
    again = client.create_order("BTC/USDT", "market", "buy", None, None,
                                {"quoteOrderQty": float(D(sold["info"]["cummulativeQuoteQty"]) * D("0.5"))})
    assert again["status"] == "closed"


def test_limit_order_rests_fetch_and_cancel_by_client_order_id(client: Any) -> None:
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, {"clientOrderId": "my-limit-1"})
    assert order["status"] == "open" and order["clientOrderId"] == "my-limit-1"
    assert _total(client, "USDT") == D(100000)  # locked, not spent
    assert _balances(client)["USDT"][1] == D("500")  # price x qty: a buyer's fee is paid in BTC
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
    ref = client.fetch_ticker("BTC/USDT")["last"]
    price = round(ref * 0.997, 2)  # 0.3 % below: rests
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, price)
    assert order["status"] == "open"
    step_clock(emu.url, 24 * 60)
    bars = client.fetch_ohlcv("BTC/USDT", "1m", since=order["timestamp"], limit=1000)
    crossed = [b for b in bars if b[3] < price]
    assert crossed, "the replayed day must cross the limit price for this test to mean anything"
    done = client.fetch_order(order["id"], "BTC/USDT")
    assert done["status"] == "closed" and done["average"] == price
    trade = client.fetch_my_trades("BTC/USDT")[-1]
    assert trade["takerOrMaker"] == "maker" and trade["order"] == order["id"]
    assert trade["fee"] == {"currency": "BTC", "cost": 0.00001}  # the maker fee, in the asset received
    assert trade["timestamp"] == crossed[0][0] + 59_000  # on the first crossing bar, in its last second


def test_fetch_orders_and_trades_history(client: Any) -> None:
    ids = [client.create_order("BTC/USDT", "market", "buy", 0.001)["id"] for _ in range(3)]
    history = client.fetch_orders("BTC/USDT")
    assert [o["id"] for o in history] == ids
    trades = client.fetch_my_trades("BTC/USDT")
    assert [t["order"] for t in trades] == ids
    assert all(t["fee"]["currency"] == "BTC" for t in trades)


def test_async_create_fetch_cancel(emu: Emulator) -> None:
    async def run() -> tuple[str, str, str, float]:
        ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, async_=True,
                             clock=emu.clock, enableRateLimit=False)
        try:
            await ex.load_markets()
            market = await ex.create_order("BTC/USDT", "market", "buy", 0.002)
            with pytest.raises(ccxt.InsufficientFunds):
                await ex.create_order("BTC/USDT", "limit", "sell", 0.002, 90_000)  # 0.002 - fee was received
            limit = await ex.create_order("BTC/USDT", "limit", "sell", 0.001, 90_000, {"clientOrderId": "async-1"})
            got = await ex.fetch_order(limit["id"], "BTC/USDT")
            canceled = await ex.cancel_order(limit["id"], "BTC/USDT")
            balance = await ex.fetch_balance()
            return market["status"], got["clientOrderId"], canceled["status"], balance["BTC"]["total"]
        finally:
            await ex.close()

    assert asyncio.run(run()) == ("closed", "async-1", "canceled", 0.001998)
