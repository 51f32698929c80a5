"""The vectorised shortfall equals the exact one, and refuses a malformed journal with the same error.

Equality is checked on randomised hand-built journals (partial fills, several legs, cancellations,
orders still open, fees in the base and in the quote asset, quotes for some fills only) and on
the real runner's paper journals; per order, components to 1e-9 relative or 1e-6 quote, bps to 1e-9.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from journal_support import HOUR, T0, HandDecision, HandFill, HandLeg, write_journal

import toolkit.attribution.frames as frames
from toolkit.attribution import JournalError, read_journal, shortfalls
from toolkit.attribution.fast import fast_shortfall_frame, journal_frames, read_journal_frames
from toolkit.attribution.shortfall import COMPONENTS, QuoteBook, aggregate, shortfall_frame

QUOTE_COLS = ("size", "filled", "decision_price", "arrival_price", "end_price", "average_price", "notional",
              *COMPONENTS, "total", "half_spread", "impact")
BPS_COLS = (*(f"{c}_bps" for c in (*COMPONENTS, "total", "half_spread", "impact")), "fill_ratio")
EXACT_COLS = ("bar_time", "side", "legs", "state", "version", "hour", "weekday", "weekend", "size_bucket", "regime")


def _d(x: float, places: int) -> str:
    return str(Decimal(repr(x)).quantize(Decimal(1).scaleb(-places)))


def random_journal(path: Path, seed: int, n: int = 40) -> tuple[Path, pd.DataFrame]:
    """Write a journal of ``n`` random decisions; return it with quotes covering about half of the fills."""
    rng = np.random.default_rng(seed)
    decisions, quote_at = [], []
    price, bar = 40_000.0, 0
    for _ in range(n):
        bar += int(rng.integers(1, 3))
        price *= float(np.exp(rng.normal(0.0, 0.01)))
        side = str(rng.choice(["buy", "sell"]))
        size = Decimal(int(rng.integers(1, 5_000))) / 10_000
        left = size
        legs = []
        n_legs = int(rng.choice([1, 1, 2, 3]))
        for leg in range(n_legs):
            arrival = price * (1 + rng.normal(0.0, 0.001))
            lastleg = leg == n_legs - 1
            kind = str(rng.choice(["full", "partial", "none"], p=[0.45, 0.35, 0.2])) if left > 0 else "none"
            fills = []
            if kind != "none":
                want = left if kind == "full" else (left * Decimal(int(rng.integers(1, 9))) / 10).quantize(
                    Decimal("0.0001"))
                parts = int(rng.integers(1, 4))
                amounts = [(want / parts).quantize(Decimal("0.0001"))] * (parts - 1)
                amounts.append(want - sum(amounts, Decimal(0)))
                for a in (a for a in amounts if a > 0):
                    p = arrival * (1 + (1 if side == "buy" else -1) * abs(rng.normal(0.0, 0.0005)))
                    asset = str(rng.choice(["BTC", "USDT", "BNB"], p=[0.45, 0.45, 0.1]))
                    fee = ("0" if asset == "BNB" else _d(float(a) * 0.001, 8) if asset == "BTC"
                           else _d(float(a) * p * 0.001, 6))
                    fills.append(HandFill(_d(p, 2), str(a), fee, asset))
                left -= sum((Decimal(f.amount) for f in fills), Decimal(0))
                if rng.random() < 0.5:
                    quote_at.append(T0 + bar * HOUR + HOUR + 2_000 + leg * 10_000 + 500 - int(rng.integers(0, 4_000)))
            if lastleg:
                state = "closed" if left == 0 else str(rng.choice(["canceled", "open", "expired"]))
            else:
                state = "canceled" if fills else str(rng.choice(["not_placed", "rejected"]))
            ended = int(rng.integers(1, 7_200_000))
            legs.append(HandLeg(str(size), _d(arrival, 2), state, fills, ended_after_ms=ended))
        decisions.append(HandDecision(bar=bar, price=_d(price, 2), side=side, legs=legs,
                                      version=str(1 + int(bar > 40))))
    closes = {b: round(40_000.0 * float(np.exp(rng.normal(0.0, 0.02))), 2) for b in range(0, bar + 3)}
    closes.update({d.bar: float(d.price) for d in decisions})
    qt = pd.to_datetime(np.array(sorted(quote_at), dtype=np.int64), unit="ms", utc=True)
    mid = 40_000.0 + rng.normal(0.0, 100.0, len(qt))
    half = rng.uniform(0.01, 5.0, len(qt))
    return write_journal(path, decisions, closes=closes), pd.DataFrame({"timestamp": qt, "bid": mid - half,
                                                                         "ask": mid + half})


def exact_frame(path: Path, book: QuoteBook | None, regime: pd.Series | None = None) -> pd.DataFrame:
    jd = read_journal(path)
    return shortfall_frame(shortfalls(jd.orders, jd.decisions, jd.bars, HOUR, book), regime)


def assert_same(fast: pd.DataFrame, exact: pd.DataFrame) -> None:
    assert list(fast.columns) == list(exact.columns) and len(fast) == len(exact) > 0
    for c in EXACT_COLS:
        assert fast[c].tolist() == exact[c].tolist(), c
    for cols, atol in ((QUOTE_COLS, 1e-6), (BPS_COLS, 1e-9)):
        for c in cols:
            f, e = fast[c].to_numpy(dtype=np.float64), exact[c].to_numpy(dtype=np.float64)
            assert (np.isnan(f) == np.isnan(e)).all(), c  # unsplit where the exact path is unsplit, never guessed
            ok = ~np.isnan(e)
            assert np.all(np.abs(f[ok] - e[ok]) <= np.maximum(1e-9 * np.abs(e[ok]), atol)), c


@pytest.mark.parametrize("seed", range(8))
def test_fast_equals_exact_on_random_journals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    if seed % 2:  # the fill reader process on these small journals too (it starts on large ones only)
        monkeypatch.setattr(frames, "_FILL_READER_FROM", 0)
    path, quotes = random_journal(tmp_path / "j.sqlite", seed)
    book = QuoteBook(quotes)
    regime = pd.Series(["thin", "busy"] * 100, index=pd.date_range(pd.Timestamp(T0, unit="ms", tz="UTC"),
                                                                    periods=200, freq="h"))
    exact = exact_frame(path, book, regime)
    for jf in (read_journal_frames(path), journal_frames(read_journal(path))):
        fast = fast_shortfall_frame(jf, HOUR, book, regime)
        assert_same(fast, exact)
        for key in ("hour", "side", "regime", "size_bucket"):
            pd.testing.assert_frame_equal(aggregate(fast, key), aggregate(exact, key), rtol=1e-9, atol=1e-6)
    assert_same(fast_shortfall_frame(read_journal_frames(path), HOUR), exact_frame(path, None))
    # the cases the comparison is about are all there
    assert (exact["legs"] > 1).any() and (exact["fill_ratio"] < 1).any() and (exact["opportunity"] != 0).any()
    assert exact["half_spread"].isna().any() and exact["half_spread"].notna().any()
    assert (exact["state"] == "open").any() or (exact["state"] == "canceled").any()


def test_fast_equals_exact_within_a_period(tmp_path: Path) -> None:
    path, _ = random_journal(tmp_path / "j.sqlite", 99)
    lo, hi = T0 + 10 * HOUR, T0 + 50 * HOUR
    jd = read_journal(path, start_ms=lo, end_ms=hi)
    exact = shortfall_frame(shortfalls(jd.orders, jd.decisions, jd.bars, HOUR))
    assert_same(fast_shortfall_frame(read_journal_frames(path, start_ms=lo, end_ms=hi), HOUR), exact)
    assert_same(fast_shortfall_frame(read_journal_frames(path), HOUR, start_ms=lo, end_ms=hi), exact)
    assert len(exact) < len(exact_frame(path, None))


def test_fast_equals_exact_on_the_runners_paper_journals(paper_journals: dict[str, Path]) -> None:
    for path in paper_journals.values():
        jd = read_journal(path)
        fills = [f for o in jd.orders for f in o.fills]
        quotes = pd.DataFrame({"timestamp": pd.to_datetime([f.at - 1_000 for f in fills[::2]], unit="ms", utc=True),
                               "bid": [float(f.price) - 0.5 for f in fills[::2]],
                               "ask": [float(f.price) + 0.5 for f in fills[::2]]})
        for book in (None, QuoteBook(quotes)):
            exact = shortfall_frame(shortfalls(jd.orders, jd.decisions, jd.bars, HOUR, book))
            assert_same(fast_shortfall_frame(read_journal_frames(path), HOUR, book), exact)
        assert read_journal_frames(path).foreign_fills == jd.foreign_fills


@pytest.mark.parametrize("reader_from", [0, 2**65])  # on; off (more than the span of any rowids)
def test_fast_reads_every_fill_whatever_its_rowid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  reader_from: int) -> None:
    """The fills are read in two ranges of rowids (the first by a process of its own on a large journal, here
    forced on or off): the extreme rowids are read too."""
    monkeypatch.setattr(frames, "_FILL_READER_FROM", reader_from)
    started: list[object] = []  # the real reader process, counted
    start = frames._start_fills
    monkeypatch.setattr(frames, "_start_fills", lambda job, out: started.append(job) or start(job, out))
    path, _ = random_journal(tmp_path / "j.sqlite", 5)
    exact = exact_frame(path, None)
    con = sqlite3.connect(path)
    (n,) = con.execute("SELECT COUNT(*) FROM fills").fetchone()
    con.execute("UPDATE fills SET rowid = 9223372036854775807 WHERE rowid = (SELECT MIN(rowid) FROM fills)")
    con.execute("UPDATE fills SET rowid = -9223372036854775808 WHERE rowid = (SELECT MIN(rowid) FROM fills)")
    con.execute("UPDATE fills SET rowid = rowid + 1000 WHERE rowid = (SELECT MAX(rowid) FROM fills WHERE rowid < 9999)")
    con.commit()
    con.close()
    jf = read_journal_frames(path)
    assert len(started) == (1 if reader_from == 0 else 0)  # the process read its range, or none was started
    assert len(jf.fills) == n > 3
    assert_same(fast_shortfall_frame(jf, HOUR), exact)


def test_hand_checked_orders_through_the_fast_path(tmp_path: Path) -> None:
    path = write_journal(tmp_path / "j.sqlite", [
        HandDecision(bar=0, price="100", legs=[HandLeg("1.0", "101", "closed", [
            HandFill("101.5", "0.4", "0.0004", "BTC"), HandFill("102", "0.6", "0.0006", "BTC")])]),
        HandDecision(bar=1, price="110", side="sell", legs=[
            HandLeg("0.5", "109", "canceled", [HandFill("108.5", "0.2", "0.0217", "USDT")])]),
    ], closes={2: 107.0})
    frame = fast_shortfall_frame(read_journal_frames(path), HOUR)
    assert frame["total"].tolist() == pytest.approx([1.9018, 1.2217], abs=1e-12)   # worked by hand in test_shortfall
    assert frame["opportunity"].tolist() == pytest.approx([0.0, 0.9], abs=1e-12)


# --- a malformed journal is refused by both paths with the same error --------------------------------------


def _journal(tmp_path: Path) -> Path:
    return write_journal(tmp_path / "j.sqlite", [
        HandDecision(bar=0, price="100", legs=[HandLeg("1.0", "101", "closed", [
            HandFill("101.5", "0.4", "0.0004", "BTC"), HandFill("102", "0.6", "0.0006", "BTC")])]),
        HandDecision(bar=1, price="110", side="sell", legs=[
            HandLeg("0.5", "109", "canceled", [HandFill("108.5", "0.2", "0.0217", "USDT")])]),
        HandDecision(bar=3, price="119.5", legs=[HandLeg("0.3", "120", "not_placed"),
                                                 HandLeg("0.3", "121", "closed", [HandFill("121.2", "0.3", "0.0003",
                                                                                           "BTC")])]),
    ], closes={2: 107.0, 4: 125.0})


def _edit(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path)
    for s in sql:
        con.execute(s)
    con.commit()
    con.close()


READERS = {"exact": lambda p: read_journal(p), "fast": lambda p: read_journal_frames(p)}
T1 = T0 + HOUR
MALFORMED = [
    # (edit, field, found)
    ("UPDATE fills SET price = 'abc' WHERE trade_id = '2'", "fills[trade_id=2].price", "abc"),
    ("UPDATE fills SET price = '-1' WHERE trade_id = '2'", "fills[trade_id=2].price", "-1"),
    ("UPDATE fills SET amount = 'NaN' WHERE trade_id = '2'", "fills[trade_id=2].amount", "NaN"),
    ("UPDATE fills SET amount = '0' WHERE trade_id = '3'", "fills[trade_id=3].amount", "0"),
    ("UPDATE fills SET fee = '-0.1' WHERE trade_id = '2'", "fills[trade_id=2].fee", "-0.1"),
    ("UPDATE fills SET fee = x'00ff' WHERE trade_id = '1'", "fills[trade_id=1].fee", b"\x00\xff"),
    ("UPDATE fills SET side = 'hold' WHERE trade_id = '3'", "fills[trade_id=3].side", "hold"),
    ("UPDATE fills SET price = 'x', side = 'hold' WHERE trade_id = '3'", "fills[trade_id=3].side", "hold"),
    ("UPDATE fills SET side = 'sell' WHERE trade_id = '1'", "fills[trade_id=1].side", "sell"),
    (f"UPDATE decisions SET decision_price = 'Infinity' WHERE bar_time = {T1}", f"decisions[bar_time={T1}]"
     ".decision_price", "Infinity"),
    (f"UPDATE decisions SET order_delta = '1.2.3' WHERE bar_time = {T0}", f"decisions[bar_time={T0}].order_delta",
     "1.2.3"),
    (f"UPDATE orders SET amount = '-0.5' WHERE client_order_id = 'btc-{T1}-0'", f"orders[btc-{T1}-0].amount",
     "-0.5"),
    (f"UPDATE orders SET arrival_price = '' WHERE client_order_id = 'btc-{T1}-0'",
     f"orders[btc-{T1}-0].arrival_price", ""),
    (f"UPDATE orders SET side = 'short' WHERE client_order_id = 'btc-{T1}-0'", f"orders[btc-{T1}-0].side", "short"),
    # a fill of the deployment's order that the orders table does not hold
    ("UPDATE fills SET client_order_id = 'btc-1-0' WHERE trade_id = '3'", "fills[trade_id=3].client_order_id",
     "btc-1-0"),
]


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("edit, field, found", MALFORMED)
def test_malformed_values_are_named_by_both_paths(tmp_path: Path, reader: str, edit: str, field: str,
                                                  found: object) -> None:
    path = _journal(tmp_path)
    READERS[reader](path)  # reads before the edit
    _edit(path, edit)
    with pytest.raises(JournalError) as err:
        READERS[reader](path)
    assert err.value.field == field and err.value.found == found


@pytest.mark.parametrize("reader", sorted(READERS))
def test_the_first_bad_row_is_reported(tmp_path: Path, reader: str) -> None:
    path = _journal(tmp_path)
    _edit(path, "UPDATE fills SET fee = 'bad' WHERE trade_id = '3'", "UPDATE fills SET price = 'bad' WHERE trade_id "
          "= '2'", f"UPDATE orders SET amount = 'bad' WHERE client_order_id = 'btc-{T0}-0'")
    with pytest.raises(JournalError) as err:
        READERS[reader](path)
    assert err.value.field == "fills[trade_id=2].price"  # fills before orders, and in journal order


DECOMPOSE = {
    "exact": lambda p: shortfalls((jd := read_journal(p)).orders, jd.decisions, jd.bars, HOUR),
    "fast": lambda p: fast_shortfall_frame(read_journal_frames(p), HOUR),
}


@pytest.mark.parametrize("path_kind", sorted(DECOMPOSE))
@pytest.mark.parametrize("edits, field, found", [
    ((f"DELETE FROM decisions WHERE bar_time = {T1}",), f"orders[btc-{T1}-0].bar_time", T1),
    (("UPDATE fills SET fee_asset = 'ETH' WHERE trade_id = '3'",), "fills[trade_id=3].fee_asset", "ETH"),
    ((f"UPDATE orders SET side = 'sell' WHERE client_order_id = 'btc-{T0 + 3 * HOUR}-1'",
      "UPDATE fills SET side = 'sell' WHERE trade_id = '4'"), f"orders[btc-{T0 + 3 * HOUR}-1].side", "sell"),
])
def test_inconsistent_orders_are_named_by_both_paths(tmp_path: Path, path_kind: str, edits: tuple[str, ...],
                                                     field: str, found: object) -> None:
    path = _journal(tmp_path)
    _edit(path, *edits)
    with pytest.raises(JournalError) as err:
        DECOMPOSE[path_kind](path)
    assert err.value.field == field and err.value.found == found


def test_a_zero_fee_in_any_asset_is_no_error(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    _edit(path, "UPDATE fills SET fee = '0', fee_asset = 'BNB' WHERE trade_id = '1'")
    fast = fast_shortfall_frame(read_journal_frames(path), HOUR)
    assert_same(fast, exact_frame(path, None))
    assert fast["fees"].iloc[0] == pytest.approx(0.0006 * 102)


def test_valid_unusual_spellings_read_the_same_on_both_paths(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    before = fast_shortfall_frame(read_journal_frames(path), HOUR)
    _edit(path, "UPDATE fills SET price = '1.015E2', fee = ' 0.0004' WHERE trade_id = '1'",
          f"UPDATE decisions SET decision_price = 110, order_delta = '-5e-1' WHERE bar_time = {T1}")
    assert read_journal(path).orders[0].fills[0].price == Decimal("101.5")
    after = fast_shortfall_frame(read_journal_frames(path), HOUR)
    assert_same(after, exact_frame(path, None))
    pd.testing.assert_frame_equal(after, before)
