"""Implementation shortfall, exact, on hand-checkable orders: partial fills, a cancellation, a sell, two legs.

Every expected figure is Perold's formula worked by hand on the orders' numbers (written out below).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from journal_support import HOUR, T0, HandDecision, HandFill, HandLeg, write_journal

from toolkit.attribution import JournalError, read_journal, shortfalls
from toolkit.attribution.shortfall import QuoteBook, aggregate, shortfall_frame


@pytest.fixture
def three_orders(tmp_path: Path) -> Path:
    return write_journal(tmp_path / "j.sqlite", [
        # 1: buy 1.0, decided at 100, arrives at 101, two partial fills complete it; fees in BTC
        HandDecision(bar=0, price="100", legs=[HandLeg("1.0", "101", "closed", [
            HandFill("101.5", "0.4", "0.0004", "BTC"), HandFill("102", "0.6", "0.0006", "BTC")])]),
        # 2: sell 0.5, decided at 110, arrives at 109, 0.2 filled at 108.5 then canceled; fee in USDT
        HandDecision(bar=1, price="110", side="sell", target=0.2, exec_state="incomplete", legs=[
            HandLeg("0.5", "109", "canceled", [HandFill("108.5", "0.2", "0.0217", "USDT")])]),
        # 3: buy 0.3 decided at 119.5: leg 0 never placed (arrival 120), leg 1 fills at 121.2
        HandDecision(bar=3, price="119.5", legs=[HandLeg("0.3", "120", "not_placed"),
                                                 HandLeg("0.3", "121", "closed", [HandFill("121.2", "0.3", "0.0003",
                                                                                           "BTC")])]),
    ], closes={2: 107.0, 4: 125.0})


def test_shortfall_by_hand(three_orders: Path) -> None:
    jd = read_journal(three_orders)
    got = shortfalls(jd.orders, jd.decisions, jd.bars, HOUR)
    assert [o.bar_time for o in got] == [T0, T0 + HOUR, T0 + 3 * HOUR]
    buy, sell, legs = got
    # 1: s=+1, X=x=1.0, P_d=100, P_0=101
    assert buy.delay == Decimal("1.0") * (Decimal(101) - Decimal(100))                                   # 1.0
    # 0.8
    assert buy.trading == (Decimal("0.4") * Decimal("101.5") + Decimal("0.6") * Decimal(102)
                           - Decimal("1.0") * Decimal(101))
    assert buy.opportunity == 0
    # fees in BTC, valued at their fills' prices
    assert buy.fees == Decimal("0.0004") * Decimal("101.5") + Decimal("0.0006") * Decimal(102)
    assert buy.total == Decimal("1.9018")
    assert buy.bps(buy.total) == pytest.approx(190.18)                                  # of X·P_d = 100
    # 2: s=-1, X=0.5, x=0.2, P_d=110, P_0=109, canceled: P_n = close of the bar closing after it ended (107)
    assert sell.end_price == Decimal(107)
    assert sell.delay == -1 * Decimal("0.2") * (Decimal(109) - Decimal(110))                              # +0.2
    assert sell.trading == -1 * (Decimal("0.2") * Decimal("108.5") - Decimal("0.2") * Decimal(109))             # +0.1
    assert sell.opportunity == -1 * (Decimal("0.5") - Decimal("0.2")) * (Decimal(107) - Decimal(110))          # +0.9
    assert sell.fees == Decimal("0.0217")
    assert sell.total == Decimal("1.2217") and sell.filled == Decimal("0.2") and sell.size == Decimal("0.5")
    assert sell.bps(sell.total) == pytest.approx(1.2217 / 55 * 1e4)
    # 3: one order over two legs: X = leg 0's 0.3, P_0 = leg 0's arrival 120, nothing left over
    assert legs.legs == 2 and legs.size == Decimal("0.3") and legs.arrival_price == Decimal(120)
    assert legs.delay == Decimal("0.3") * (Decimal(120) - Decimal("119.5"))                               # 0.15
    assert legs.trading == Decimal("0.3") * Decimal("121.2") - Decimal("0.3") * Decimal(120)                    # 0.36
    assert legs.opportunity == 0 and legs.fees == Decimal("0.0003") * Decimal("121.2")
    assert legs.total == Decimal("0.54636")


def test_aggregates_weight_by_notional(three_orders: Path) -> None:
    jd = read_journal(three_orders)
    frame = shortfall_frame(shortfalls(jd.orders, jd.decisions, jd.bars, HOUR))
    by_side = aggregate(frame, "side")
    assert by_side.loc["buy", "orders"] == 2
    # (1.9018 + 0.54636) / (100 + 0.3·119.5) in bps
    assert by_side.loc["buy", "total_bps"] == pytest.approx((1.9018 + 0.54636) / (100 + 35.85) * 1e4)
    assert set(frame["size_bucket"]) == {"< 1k"} and set(frame["weekend"]) == {"weekday"}  # 2024-03-01 is a Friday


def test_half_spread_and_impact_from_quotes(three_orders: Path) -> None:
    jd = read_journal(three_orders)
    at = [f.at for o in jd.orders for f in o.fills]
    quotes = pd.DataFrame({"timestamp": pd.to_datetime(sorted(at), unit="ms", utc=True) - pd.Timedelta("1s"),
                           "bid": [100.9, 100.9, 108.4, 121.0], "ask": [101.1, 101.1, 108.6, 121.4]})
    buy, _sell, legs = shortfalls(jd.orders, jd.decisions, jd.bars, HOUR, QuoteBook(quotes))
    # half of 101.1 − 100.9 per unit filled
    assert buy.half_spread == Decimal("0.4") * Decimal("0.1") + Decimal("0.6") * Decimal("0.1")
    assert buy.impact == buy.trading - buy.half_spread
    assert legs.half_spread == Decimal("0.3") * Decimal("0.2")
    late = QuoteBook(quotes.assign(timestamp=quotes["timestamp"] + pd.Timedelta("30min")))
    assert all(o.half_spread is None for o in shortfalls(jd.orders, jd.decisions, jd.bars, HOUR, late))  # no guess


@pytest.mark.parametrize("column, value, field", [
    ("price", "abc", "price"), ("price", "-1", "price"), ("amount", "NaN", "amount"), ("fee", "-0.1", "fee")])
def test_malformed_amounts_are_named(three_orders: Path, column: str, value: str, field: str) -> None:
    import sqlite3

    con = sqlite3.connect(three_orders)
    con.execute(f"UPDATE fills SET {column} = ? WHERE trade_id = '2'", (value,))
    con.commit()
    con.close()
    with pytest.raises(JournalError) as err:
        read_journal(three_orders)
    assert err.value.field == f"fills[trade_id=2].{field}" and err.value.found == value


def test_not_a_journal(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="journal"):
        read_journal(tmp_path / "missing.sqlite")
    (tmp_path / "x.sqlite").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(JournalError) as err:
        read_journal(tmp_path / "x.sqlite")
    assert err.value.field == "journal"
