"""Stop-limit and take-profit-limit orders and OCO order lists through real ccxt, on the replayed price path."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from toolkit.data.store import BarStore
from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.emulator.testing import step_clock
from toolkit.exchange import exchange_client

D = Decimal
MINUTE = 60_000


@pytest.fixture
def trader(make_emulator: Any) -> tuple[Emulator, Any]:
    """An emulator at 2024-03-01 00:00 with 100000 USDT and 1 BTC, and a client signing with its clock."""
    emu = make_emulator(balances={"USDT": D(100_000), "BTC": D(1)})
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False)
    ex.load_markets()
    return emu, ex


def _bars(store: Path, since_ms: int, minutes: int) -> list[tuple[int, float, float, float, float, float]]:
    frame = BarStore(roots=[store]).load("BTC/USDT", "1m", pd.Timestamp(since_ms, unit="ms", tz="UTC"),
                                         pd.Timestamp(since_ms + minutes * MINUTE, unit="ms", tz="UTC"))
    return [(int(ts.value // 1_000_000), r.open, r.high, r.low, r.close, r.volume) for ts, r in frame.iterrows()]


def _trigger_time(bars: list[Any], placed: int, stop: float, falling: bool) -> int:
    """When the documented path rule triggers a stop: at an open past it, else at the close of a bar reaching it."""
    for t, o, h, lo, _c, v in bars:
        if v <= 0:
            continue
        if t > placed and (o <= stop if falling else o >= stop):
            return t
        if t >= placed and (lo <= stop if falling else h >= stop):
            return t + MINUTE - 1
    raise AssertionError("the replayed bars never reach the stop: pick another one")


def _locked(ex: Any, asset: str) -> Decimal:
    row = next(b for b in ex.fetch_balance()["info"]["balances"] if b["asset"] == asset)
    return D(row["locked"])


def test_a_stop_loss_limit_sell_waits_for_its_stop_then_works(trader: Any, small_store: Path) -> None:
    emu, ex = trader
    last = ex.fetch_ticker("BTC/USDT")["last"]
    stop, limit = round(last * 0.995, 2), round(last * 0.99, 2)
    placed = ex.fetch_time()
    order = ex.create_order("BTC/USDT", "limit", "sell", 0.1, limit, {"stopLossPrice": stop})
    assert order["info"]["transactTime"] == placed  # (ccxt reads its timestamp from workingTime: -1 here)
    assert order["info"]["type"] == "STOP_LOSS_LIMIT" and order["info"]["workingTime"] == -1
    assert order["status"] == "open" and order["triggerPrice"] == stop and D(order["info"]["stopPrice"]) == D(str(stop))
    assert _locked(ex, "BTC") == D("0.1")  # a stop order locks from the moment it is placed
    waiting = ex.fetch_order(order["id"], "BTC/USDT")["info"]
    assert waiting["isWorking"] is False and waiting["status"] == "NEW"
    assert [o["id"] for o in ex.fetch_open_orders("BTC/USDT")] == [order["id"]]
    step_clock(emu.url, 12 * 60)
    triggered = _trigger_time(_bars(small_store, placed, 12 * 60), placed, stop, True)
    done = ex.fetch_order(order["id"], "BTC/USDT")
    assert done["info"]["workingTime"] == triggered and done["info"]["isWorking"] is True
    trades = ex.fetch_my_trades("BTC/USDT", params={"orderId": order["id"]})
    assert trades and all(t["price"] >= limit and t["timestamp"] > triggered for t in trades)
    # triggered inside a bar, it goes on the book at the next minute's open and takes there (limit far below)
    assert trades[0]["timestamp"] == triggered + 1 and trades[0]["takerOrMaker"] == "taker"
    assert done["status"] == "closed" and _locked(ex, "BTC") == 0


def test_a_take_profit_limit_sell_triggers_on_a_rise(trader: Any, small_store: Path) -> None:
    emu, ex = trader
    last = ex.fetch_ticker("BTC/USDT")["last"]
    stop = round(last * 1.004, 2)
    placed = ex.fetch_time()
    order = ex.create_order("BTC/USDT", "limit", "sell", 0.05, stop, {"takeProfitPrice": stop})
    assert order["info"]["type"] == "TAKE_PROFIT_LIMIT"
    step_clock(emu.url, 12 * 60)
    triggered = _trigger_time(_bars(small_store, placed, 12 * 60), placed, stop, False)
    done = ex.fetch_order(order["id"], "BTC/USDT")
    assert done["info"]["workingTime"] == triggered
    assert all(t["price"] >= stop for t in ex.fetch_my_trades("BTC/USDT", params={"orderId": order["id"]}))


@pytest.mark.parametrize(("side", "kind", "factor"), [("sell", "stopLossPrice", 1.001), ("buy", "stopLossPrice", 0.999),
                                                      ("sell", "takeProfitPrice", 0.999)])
def test_a_stop_that_would_trigger_immediately_is_rejected(trader: Any, side: str, kind: str, factor: float) -> None:
    _, ex = trader
    last = ex.fetch_ticker("BTC/USDT")["last"]
    with pytest.raises(ccxt.OrderImmediatelyFillable, match="Order would trigger immediately"):
        ex.create_order("BTC/USDT", "limit", side, 0.01, round(last * factor, 2), {kind: round(last * factor, 2)})


def test_stop_orders_obey_the_price_filter_and_max_num_algo_orders(trader: Any) -> None:
    _, ex = trader
    last = D(str(ex.fetch_ticker("BTC/USDT")["last"]))
    with pytest.raises(ccxt.InvalidOrder, match="PRICE_FILTER"):  # a stopPrice off the 0.01 tick
        ex.privatePostOrder({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "quantity": "0.01",
                             "price": str(last - 100), "stopPrice": str(last - 50 + D("0.005")),
                             "timeInForce": "GTC"})
    with pytest.raises(ccxt.BadRequest, match="stopPrice"):  # -1102: mandatory for a stop order
        ex.privatePostOrder({"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "quantity": "0.01",
                             "price": str(last - 100), "timeInForce": "GTC"})
    for i in range(5):  # the bundled BTCUSDT filters allow 5 open stop orders (MAX_NUM_ALGO_ORDERS)
        ex.create_order("BTC/USDT", "limit", "sell", 0.01, float(last - 100 - i), {"stopLossPrice": float(last - 50)})
    with pytest.raises(ccxt.InvalidOrder, match="MAX_NUM_ALGO_ORDERS"):
        ex.create_order("BTC/USDT", "limit", "sell", 0.01, float(last - 100), {"stopLossPrice": float(last - 50)})
    assert ex.create_order("BTC/USDT", "limit", "sell", 0.01, float(last + 500))["status"] == "open"  # not a stop


def _oco(ex: Any, side: str, qty: str, above: dict[str, Any], below: dict[str, Any]) -> Any:
    params = {"symbol": "BTCUSDT", "side": side, "quantity": qty}
    params |= {f"above{k}": v for k, v in above.items()} | {f"below{k}": v for k, v in below.items()}
    return ex.privatePostOrderListOco(params)


@pytest.mark.parametrize(("up_by", "down_by", "expected"), [("1.003", "0.997", "maker"), ("1.05", "0.998", "stop")])
def test_an_oco_sell_locks_once_and_the_first_leg_to_work_expires_the_other(
        trader: Any, small_store: Path, up_by: str, down_by: str, expected: str) -> None:
    emu, ex = trader
    last = D(str(ex.fetch_ticker("BTC/USDT")["last"]))
    up, stop = (last * D(up_by)).quantize(D("0.01")), (last * D(down_by)).quantize(D("0.01"))
    floor = (stop * D("0.998")).quantize(D("0.01"))
    placed = ex.fetch_time()
    res = _oco(ex, "SELL", "0.2", {"Type": "LIMIT_MAKER", "Price": str(up)},
               {"Type": "STOP_LOSS_LIMIT", "StopPrice": str(stop), "Price": str(floor), "TimeInForce": "GTC"})
    assert (res["contingencyType"], res["listStatusType"], res["listOrderStatus"]) == ("OCO", "EXEC_STARTED",
                                                                                     "EXECUTING")
    assert [r["type"] for r in res["orderReports"]] == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"]
    assert res["orderReports"][1]["stopPrice"] == f"{stop:.8f}" and res["orderReports"][1]["workingTime"] == -1
    assert _locked(ex, "BTC") == D("0.2")  # one lock for both legs
    legs = {int(o["id"]): o for o in ex.fetch_open_orders("BTC/USDT")}
    assert {o["info"]["orderListId"] for o in legs.values()} == {res["orderListId"]}
    step_clock(emu.url, 12 * 60)
    # which leg works first, on the documented path (open, then low/high in the bar's direction)
    first = None
    for t, o, h, lo, c, _v in _bars(small_store, placed, 12 * 60):
        events = [("stop", lo <= float(stop)), ("maker", h > float(up))]
        if c < o:
            events.reverse()  # a falling bar meets its high first
        if t > placed and o <= float(stop):
            first = "stop"
        first = first or next((name for name, hit in events if hit), None)
        if first:
            break
    assert first == expected  # 2024-03-01: up 0.3 % before down 0.3 %; down 0.2 % long before up 5 %
    maker_id, stop_id = (r["orderId"] for r in res["orderReports"])
    maker, stop_leg = ex.fetch_order(maker_id, "BTC/USDT"), ex.fetch_order(stop_id, "BTC/USDT")
    listed = ex.privateGetOrderList({"orderListId": res["orderListId"]})
    assert (listed["listStatusType"], listed["listOrderStatus"]) == ("ALL_DONE", "ALL_DONE")
    if expected == "maker":
        assert maker["status"] == "closed" and maker["filled"] == 0.2 and maker["average"] == float(up)
        assert stop_leg["status"] == "expired" and stop_leg["filled"] == 0 and stop_leg["info"]["isWorking"] is False
        assert ex.fetch_my_trades("BTC/USDT")[-1]["takerOrMaker"] == "maker"
    else:
        assert maker["status"] == "expired" and maker["filled"] == 0
        assert stop_leg["info"]["isWorking"] is True and stop_leg["status"] == "closed"  # the lock moved to it
        assert all(t["price"] >= float(floor) for t in ex.fetch_my_trades("BTC/USDT"))
    assert _locked(ex, "BTC") == 0 and ex.fetch_balance()["BTC"]["total"] == 0.8


def test_cancelling_an_oco_leg_or_the_list_cancels_both(trader: Any) -> None:
    _, ex = trader
    last = D(str(ex.fetch_ticker("BTC/USDT")["last"]))
    legs = ({"Type": "LIMIT_MAKER", "Price": str((last * D("1.01")).quantize(D("0.01")))},
            {"Type": "STOP_LOSS_LIMIT", "StopPrice": str((last * D("0.99")).quantize(D("0.01"))),
             "Price": str((last * D("0.98")).quantize(D("0.01"))), "TimeInForce": "GTC"})
    first = _oco(ex, "SELL", "0.1", *legs)
    canceled = ex.cancel_order(str(first["orders"][1]["orderId"]), "BTC/USDT")  # one leg
    assert canceled["status"] == "canceled"
    assert {ex.fetch_order(str(o["orderId"]), "BTC/USDT")["status"] for o in first["orders"]} == {"canceled"}
    second = _oco(ex, "SELL", "0.1", *legs)
    done = ex.privateDeleteOrderList({"symbol": "BTCUSDT", "orderListId": second["orderListId"]})
    assert done["listOrderStatus"] == "ALL_DONE" and {r["status"] for r in done["orderReports"]} == {"CANCELED"}
    assert ex.privateGetOpenOrderList() == [] and _locked(ex, "BTC") == 0
    assert [row["orderListId"] for row in ex.privateGetAllOrderList()] == [first["orderListId"], second["orderListId"]]
    with pytest.raises(ccxt.OrderNotFound):
        ex.privateDeleteOrderList({"symbol": "BTCUSDT", "orderListId": second["orderListId"]})


def test_an_oco_buy_locks_the_dearer_leg_and_prices_must_bracket_the_market(trader: Any) -> None:
    _, ex = trader
    last = D(str(ex.fetch_ticker("BTC/USDT")["last"]))
    below, stop, limit = (last * f for f in (D("0.99"), D("1.01"), D("1.02")))
    below, stop, limit = (x.quantize(D("0.01")) for x in (below, stop, limit))
    with pytest.raises(ccxt.InvalidOrder, match="relationship of the prices"):
        _oco(ex, "BUY", "0.1", {"Type": "STOP_LOSS_LIMIT", "StopPrice": str(below), "Price": str(limit),
                                "TimeInForce": "GTC"}, {"Type": "LIMIT_MAKER", "Price": str(below)})
    res = _oco(ex, "BUY", "0.1", {"Type": "STOP_LOSS_LIMIT", "StopPrice": str(stop), "Price": str(limit),
                                  "TimeInForce": "GTC"}, {"Type": "LIMIT_MAKER", "Price": str(below)})
    assert [r["side"] for r in res["orderReports"]] == ["BUY", "BUY"]
    assert _locked(ex, "USDT") == limit * D("0.1")  # the larger of the two legs' price x qty, once


def test_the_legacy_oco_endpoint_places_a_limit_maker_and_a_stop_leg(trader: Any) -> None:
    _, ex = trader
    last = D(str(ex.fetch_ticker("BTC/USDT")["last"]))
    res = ex.privatePostOrderOco({"symbol": "BTCUSDT", "side": "SELL", "quantity": "0.1",
                                  "price": str((last * D("1.01")).quantize(D("0.01"))),
                                  "stopPrice": str((last * D("0.99")).quantize(D("0.01"))),
                                  "stopLimitPrice": str((last * D("0.98")).quantize(D("0.01"))),
                                  "stopLimitTimeInForce": "GTC"})
    assert sorted(r["type"] for r in res["orderReports"]) == ["LIMIT_MAKER", "STOP_LOSS_LIMIT"]
    assert len(ex.fetch_open_orders("BTC/USDT")) == 2 and _locked(ex, "BTC") == D("0.1")


def test_a_stop_loss_market_sell_fills_at_the_book_when_triggered(trader: Any, small_store: Path) -> None:
    emu, ex = trader
    last = ex.fetch_ticker("BTC/USDT")["last"]
    stop = round(last * 0.995, 2)
    placed = ex.fetch_time()
    order = ex.create_order("BTC/USDT", "market", "sell", 0.1, None, {"stopLossPrice": stop})
    assert order["info"]["type"] == "STOP_LOSS" and order["status"] == "open" and _locked(ex, "BTC") == D("0.1")
    step_clock(emu.url, 12 * 60)
    triggered = _trigger_time(_bars(small_store, placed, 12 * 60), placed, stop, True)
    done = ex.fetch_order(order["id"], "BTC/USDT")
    trades = ex.fetch_my_trades("BTC/USDT", params={"orderId": order["id"]})
    assert done["info"]["workingTime"] == triggered and done["status"] == "closed" and done["filled"] == 0.1
    assert trades[0]["timestamp"] == triggered + 1 and {t["takerOrMaker"] for t in trades} == {"taker"}
    assert _locked(ex, "BTC") == 0
