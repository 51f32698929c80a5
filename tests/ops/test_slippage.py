"""Live slippage by hour-of-week bucket beside the version's modelled slippage: orders built through the
attribution's own shortfall code, figures checked by hand, the regime map of the bundled minute bars."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from toolkit.attribution.journal import Fill, Order
from toolkit.attribution.shortfall import order_shortfall, shortfall_frame
from toolkit.data import load_bars
from toolkit.errors import ConfigurationError
from toolkit.ops.regimes import RegimeMap, regime_map
from toolkit.ops.slippage import COLUMNS, slippage_by_bucket, slippage_by_regime, slippage_document, slippage_table

HOUR = 3_600_000
TUESDAY_13 = int(pd.Timestamp("2024-05-07 13:00", tz="UTC").value // 1_000_000)   # closes 14:00: bucket 38
SATURDAY_02 = int(pd.Timestamp("2024-05-11 02:00", tz="UTC").value // 1_000_000)  # closes 03:00: bucket 123


@pytest.fixture(scope="module")
def regimes() -> RegimeMap:
    return regime_map(load_bars("BTC/USDT", "1m", "2024-01-01", "2024-04-30"), "BTC/USDT")


def order(bar_time: int, side: str, arrival: str, fills: list[tuple[str, str]], amount: str = "0.1000") -> Order:
    return Order(client_order_id=f"btc-{bar_time}-0", deployment="btc", bar_time=bar_time, leg=0,
                 symbol="BTC/USDT", side=side, amount=Decimal(amount), arrival_price=Decimal(arrival),
                 intent_at=bar_time + HOUR, state="closed" if fills else "canceled", ended_at=bar_time + HOUR + 50,
                 version="1",
                 fills=tuple(Fill(f"t{bar_time}{i}", side, Decimal(p), Decimal(a), Decimal("0"), "USDT",
                                  bar_time + HOUR + 10) for i, (p, a) in enumerate(fills)))


def frame() -> pd.DataFrame:
    orders = [
        # Tuesday 14:00: a buy 2 above its arrival price of 60,000 on 0.1 (cost 0.2 of 6,000: 0.333 bps),
        order(TUESDAY_13, "buy", "60000", [("60002", "0.1000")]),
        # a sell 6 below 60,000 over two fills (0.6 of 6,000: 1 bps)
        order(TUESDAY_13 + 7 * 24 * HOUR, "sell", "60000", [("59994", "0.0500"), ("59994", "0.0500")]),
        # Saturday 03:00: a buy 30 above 50,000 (3 of 5,000: 6 bps) and one that filled nothing
        order(SATURDAY_02, "buy", "50000", [("50030", "0.1000")]),
        order(SATURDAY_02 + HOUR, "buy", "50000", []),
    ]
    items = [order_shortfall([o], o.arrival_price, o.arrival_price) for o in orders]
    return shortfall_frame(items)


def test_live_slippage_per_bucket_by_hand_and_beside_the_model(regimes: RegimeMap) -> None:
    table = slippage_by_bucket(frame(), 60.0, regimes)
    assert list(table.columns) == list(COLUMNS)
    assert table["bucket"].tolist() == [38, 123]  # the unfilled order carries no slippage
    tue, sat = table.iloc[0], table.iloc[1]
    assert (tue["weekday"], tue["hour"], tue["orders"], sat["weekday"], sat["hour"], sat["orders"]) == (
        "Tue", 14, 2, "Sat", 3, 1)
    assert tue["notional"] == pytest.approx(12_000.0)
    assert tue["live_bps"] == pytest.approx((0.2 + 0.6) / 12_000 * 1e4)
    assert tue["live_p50_bps"] == pytest.approx((0.2 / 6_000 + 0.6 / 6_000) / 2 * 1e4)
    assert sat["live_bps"] == pytest.approx(6.0) and sat["live_p90_bps"] == pytest.approx(6.0)
    assert (tue["regime"], sat["regime"]) == (regimes.regime(38), regimes.regime(123)) == ("high", "low")
    assert tue["model_p50_bps"] == regimes.quantile("slippage_bps", 38, 0.5)
    assert sat["model_p90_bps"] == regimes.quantile("slippage_bps", 123, 0.9)
    assert sat["excess_p50_bps"] == pytest.approx(6.0 - regimes.quantile("slippage_bps", 123, 0.5))

    by_regime = slippage_by_regime(table)
    assert by_regime.loc["high", "orders"] == 2 and by_regime.loc["low", "live_bps"] == pytest.approx(6.0)
    assert by_regime.loc["high", "live_bps"] == pytest.approx(tue["live_bps"])

    shown = slippage_table(table)
    assert list(shown.index) == [("Tue", 14), ("Sat", 3)] and "bucket" not in shown.columns
    assert slippage_table(table, by_regime=True).loc["low", "live_bps"] == pytest.approx(6.0)

    doc = slippage_document(table, model="m", version="1", bar_minutes=60.0, regimes=regimes)
    assert doc["regime_map_sha256"] == regimes.sha256 and len(doc["rows"]) == 2 and len(doc["sha256"]) == 64
    assert doc["rows"][1]["live_bps"] == pytest.approx(6.0, rel=1e-5)


def test_without_a_regime_map_the_model_is_unknown_and_bad_input_is_named() -> None:
    table = slippage_by_bucket(frame(), 60.0)
    assert set(table["regime"]) == {"unknown"} and table["model_p50_bps"].isna().all()
    assert slippage_by_bucket(pd.DataFrame(), 60.0).empty
    with pytest.raises(ConfigurationError, match="trading_bps"):
        slippage_by_bucket(frame().drop(columns=["trading_bps"]), 60.0)
    with pytest.raises(ConfigurationError, match="bar_minutes"):
        slippage_by_bucket(frame(), float(np.nan))
    # an hour later bar: the same orders close an hour later
    later = slippage_by_bucket(frame(), 120.0)
    assert later["bucket"].tolist() == [39, 124]
