"""Implementation shortfall of a whole journal at once: the vectorised path attribution runs.

The same decomposition as :mod:`toolkit.attribution.shortfall` (Perold per decision: delay,
trading, opportunity, fees, half-spread/impact where quotes exist), computed on columns
instead of one ``Decimal`` order at a time. That module stays the definition (exact); the
tests hold this one equal to it. :func:`read_journal_frames` reads the journal's tables with
one query each and checks them with vectorised masks; :func:`journal_frames` turns a
:class:`~toolkit.attribution.journal.JournalData` already read exactly into the same columns;
:func:`fast_shortfall_frame` returns the frame of :func:`~toolkit.attribution.shortfall.shortfall_frame`.

Precision: amounts, prices and fees are parsed from their decimal text to float64 (correctly
rounded, 53 bits: about 16 significant digits); components are float64 sums over an order's
fills (trading as Σ x_j · (p_j − P_0), which keeps the cancellation small), so they agree with
the exact path to about 1e-12 relative on desk-sized orders. A value whose decimal text is
finite but beyond float64's range (|x| > 1.8e308, or so small it rounds to 0 where > 0 is
required) is refused as a ``JournalError`` rather than silently rounded.

Errors are those of the exact path, for the same first bad row: a malformed value names the
table, the row key, the field, what was expected and what was found
(``fills[trade_id=17].price: expected a finite decimal number > 0, found 'abc'``); masks find
the suspect rows, the exact parser words the error of the first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.attribution.errors import JournalError
from toolkit.attribution.journal import (
    JournalData,
    connect_journal,
    file_sha256,
    parse_decimal,
    period_bounds,
    resolve_deployment,
    stray_order_expected,
)
from toolkit.attribution.shortfall import QuoteBook, frame_from_columns

__all__ = ["JournalFrames", "fast_shortfall_frame", "journal_frames", "read_journal_frames"]

_TERMINAL_NOT = ("intent", "unknown", "open")
_TEXT = "IN ('text', 'integer')"  # what the exact parser accepts (a float or NULL is refused: "stored as text")


@dataclass(frozen=True)
class JournalFrames:
    """One deployment's journal as columns: what the vectorised shortfall reads.

    ``orders`` (sorted by bar and leg): ``client_order_id``, ``bar_time``, ``leg``, ``symbol``,
    ``side``, ``amount``, ``arrival_price``, ``state``, ``ended_at`` (ms; NaN while open),
    ``version``. ``fills`` (the fills of ``orders``, in journal order ``(at, trade_id)``):
    ``trade_id``, ``order`` (row of ``orders``), ``side``, ``price``, ``amount``, ``fee``,
    ``fee_asset``, ``at``. ``decisions``: ``bar_time``, ``decision_price``. ``bars``:
    ``open_time``, ``close`` (every bar of the deployment).
    """

    path: Path | None
    sha256: str
    deployment: str
    decisions: pd.DataFrame
    orders: pd.DataFrame
    fills: pd.DataFrame
    bars: pd.DataFrame
    foreign_fills: int


def _floats(values: Sequence[Any]) -> np.ndarray:
    """Return ``values`` as float64 (NaN where one does not parse); vectorised unless one is malformed."""
    arr = np.asarray(values, dtype=object) if len(values) else np.zeros(0, dtype=object)
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        def one(v: Any) -> float:
            try:
                return float(v)
            except (TypeError, ValueError):
                return float("nan")
        return np.fromiter((one(v) for v in values), dtype=np.float64, count=len(values))


def _numeric(values: Sequence[Any], typed: np.ndarray, *, positive: bool = False, nonnegative: bool = False,
             nullable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(floats, bad)``: the column as float64 and the mask of rows the exact parser may refuse."""
    x = _floats(values)
    bad = ~np.isfinite(x) | ~typed.astype(bool)
    if positive:
        bad |= x <= 0
    if nonnegative:
        bad |= x < 0
    if nullable:
        null = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
        bad &= ~null
    return x, bad


def _raise_numeric(value: Any, where: str, positive: bool = False, nonnegative: bool = False) -> None:
    """Raise the exact parser's error for ``value``; if it accepts it, raise that float64 cannot hold it."""
    parse_decimal(value, where, positive=positive, nonnegative=nonnegative)
    raise JournalError(where, "a decimal number within float64's range (attribution's vectorised path)", value)


def _first_error(checks: Sequence[tuple[np.ndarray, Callable[[int], None]]]) -> None:
    """Raise the error of the first row any mask flags, checking that row's fields in order."""
    n = len(checks[0][0]) if checks else 0
    if not n:
        return
    any_bad = np.zeros(n, dtype=bool)
    for mask, _ in checks:
        any_bad |= mask
    rows = np.flatnonzero(any_bad)
    if len(rows):
        i = int(rows[0])
        for mask, fail in checks:
            if mask[i]:
                fail(i)


def read_journal_frames(path: str | Path, deployment: str | None = None, model: str | None = None,
                        start_ms: int | None = None, end_ms: int | None = None) -> JournalFrames:
    """Read one deployment's decisions, orders, fills and bars as checked columns (one query per table).

    The arguments are those of :func:`~toolkit.attribution.journal.read_journal`, and so are the
    errors: the same bad value is reported with the same field, expected and found.

    Raises
    ------
    JournalError
        The file is not a journal, lacks a column, holds a malformed amount, price or side, or
        the deployment is ambiguous or absent.
    """
    p = Path(path)
    con = connect_journal(p)
    con.row_factory = None
    try:
        deployment = resolve_deployment(con, deployment, model)
        lo, hi = period_bounds(start_ms, end_ms)
        d = con.execute(f"SELECT bar_time, decision_price, order_delta, typeof(decision_price) {_TEXT}, "
                        f"typeof(order_delta) {_TEXT} FROM decisions WHERE deployment = ? AND bar_time >= ? "
                        "AND bar_time < ? ORDER BY bar_time", (deployment, lo, hi)).fetchall()
        f = con.execute(f"SELECT trade_id, side, price, amount, fee, fee_asset, at, client_order_id, deployment, "
                        f"typeof(price) {_TEXT}, typeof(amount) {_TEXT}, typeof(fee) {_TEXT} FROM fills "
                        "WHERE deployment = ? OR deployment IS NULL ORDER BY at, trade_id", (deployment,)).fetchall()
        o = con.execute(f"SELECT client_order_id, bar_time, leg, symbol, side, amount, arrival_price, state, "
                        f"updated_at, version, typeof(amount) {_TEXT}, typeof(arrival_price) {_TEXT} FROM orders "
                        "WHERE deployment = ? AND bar_time >= ? AND bar_time < ? ORDER BY bar_time, leg",
                        (deployment, lo, hi)).fetchall()
        outside = {str(r[0]) for r in con.execute(
            "SELECT client_order_id FROM orders WHERE deployment = ? AND (bar_time < ? OR bar_time >= ?)",
            (deployment, lo, hi))}
        ev = con.execute("SELECT client_order_id, MAX(at) FROM order_events GROUP BY client_order_id").fetchall()
        b = con.execute("SELECT open_time, close FROM bars WHERE deployment = ? ORDER BY open_time",
                        (deployment,)).fetchall()
    except sqlite3.DatabaseError as exc:
        raise JournalError("journal", "a readable runner journal", f"{p}: {exc}") from None
    finally:
        con.close()

    # decisions: decision_price > 0, order_delta a decimal or NULL
    dc = list(zip(*d, strict=True)) if d else [()] * 5
    d_bt = np.asarray(dc[0], dtype=np.int64)
    d_price, bad_price = _numeric(dc[1], np.asarray(dc[3], dtype=bool), positive=True)
    _, bad_delta = _numeric(dc[2], np.asarray(dc[4], dtype=bool) | np.fromiter((v is None for v in dc[2]), bool,
                                                                               len(dc[2])), nullable=True)
    _first_error([
        (bad_price, lambda i: _raise_numeric(dc[1][i], f"decisions[bar_time={dc[0][i]}].decision_price",
                                             positive=True)),
        (bad_delta, lambda i: _raise_numeric(dc[2][i], f"decisions[bar_time={dc[0][i]}].order_delta")),
    ])

    # fills: side buy|sell, price > 0, amount > 0, fee >= 0
    fc = list(zip(*f, strict=True)) if f else [()] * 12
    f_side = np.asarray(fc[1], dtype=object)
    bad_side = ~np.isin(f_side, ("buy", "sell")) if len(f_side) else np.zeros(0, dtype=bool)
    f_price, bad_fp = _numeric(fc[2], np.asarray(fc[9], dtype=bool), positive=True)
    f_amount, bad_fa = _numeric(fc[3], np.asarray(fc[10], dtype=bool), positive=True)
    f_fee, bad_ff = _numeric(fc[4], np.asarray(fc[11], dtype=bool), nonnegative=True)

    def fill_side(i: int) -> None:
        raise JournalError(f"fills[trade_id={fc[0][i]}].side", "buy or sell", fc[1][i])

    _first_error([
        (bad_side, fill_side),
        (bad_fp, lambda i: _raise_numeric(fc[2][i], f"fills[trade_id={fc[0][i]}].price", positive=True)),
        (bad_fa, lambda i: _raise_numeric(fc[3][i], f"fills[trade_id={fc[0][i]}].amount", positive=True)),
        (bad_ff, lambda i: _raise_numeric(fc[4][i], f"fills[trade_id={fc[0][i]}].fee", nonnegative=True)),
    ])

    # orders: side buy|sell, its fills on its side, amount > 0, arrival_price > 0
    oc = list(zip(*o, strict=True)) if o else [()] * 12
    cids = pd.Index(np.asarray(oc[0], dtype=object))
    o_side = np.asarray(oc[4], dtype=object)
    f_cid = np.asarray(fc[7], dtype=object)
    f_order = cids.get_indexer(f_cid) if len(f_cid) and len(cids) else np.full(len(f_cid), -1, dtype=np.intp)
    mine = f_order >= 0
    mismatch = np.zeros(len(cids), dtype=bool)
    wrong = mine.copy()
    wrong[mine] = f_side[mine] != o_side[f_order[mine]]
    mismatch[f_order[wrong]] = True
    bad_os = ~np.isin(o_side, ("buy", "sell")) if len(o_side) else np.zeros(0, dtype=bool)
    o_amount, bad_oa = _numeric(oc[5], np.asarray(oc[10], dtype=bool), positive=True)
    o_arrival, bad_op = _numeric(oc[6], np.asarray(oc[11], dtype=bool), positive=True)

    def order_side(i: int) -> None:
        raise JournalError(f"orders[{oc[0][i]}].side", "buy or sell", oc[4][i])

    def fill_mismatch(i: int) -> None:
        j = int(np.flatnonzero(wrong & (f_order == i))[0])
        raise JournalError(f"fills[trade_id={fc[0][j]}].side", f"{oc[4][i]} (the side of {oc[0][i]})", fc[1][j])

    _first_error([
        (bad_os, order_side), (mismatch, fill_mismatch),
        (bad_oa, lambda i: _raise_numeric(oc[5][i], f"orders[{oc[0][i]}].amount", positive=True)),
        (bad_op, lambda i: _raise_numeric(oc[6][i], f"orders[{oc[0][i]}].arrival_price", positive=True)),
    ])
    if not len(d_bt):
        raise JournalError("decisions", f"at least one decision of deployment {deployment!r} in the period", "none")

    # foreign fills: of the deployment without an order id, or naming no order of this deployment
    f_dep = np.asarray(fc[8], dtype=object)
    no_cid = pd.isna(f_cid)
    foreign = int(np.sum(no_cid & (f_dep == deployment)))
    unknown = np.flatnonzero(~mine & ~no_cid)
    prefix = f"{deployment}-"
    ours = np.array([str(f_cid[k]).startswith(prefix) for k in unknown], dtype=bool)
    foreign += int(np.sum(~ours))
    for k in unknown[ours]:
        if f_dep[k] == deployment and str(f_cid[k]) not in outside:
            raise JournalError(f"fills[trade_id={fc[0][k]}].client_order_id", stray_order_expected(deployment),
                               f_cid[k])

    ended = pd.Series([float(r[1]) for r in ev], index=pd.Index([str(r[0]) for r in ev], dtype=object),
                      dtype=np.float64)
    state = np.asarray(oc[7], dtype=object)
    end_at = ended.reindex(cids).to_numpy(dtype=np.float64) if len(ended) else np.full(len(cids), np.nan)
    end_at = np.where(np.isnan(end_at), np.asarray(oc[8], dtype=np.float64), end_at)
    end_at[np.isin(state, _TERMINAL_NOT)] = np.nan
    orders = pd.DataFrame({
        "client_order_id": np.asarray(oc[0], dtype=object), "bar_time": np.asarray(oc[1], dtype=np.int64),
        "leg": np.asarray(oc[2], dtype=np.int64), "symbol": np.asarray(oc[3], dtype=object), "side": o_side,
        "amount": o_amount, "arrival_price": o_arrival, "state": state, "ended_at": end_at,
        "version": np.asarray([str(v) for v in oc[9]], dtype=object)})
    fills = pd.DataFrame({
        "trade_id": np.asarray(fc[0], dtype=object)[mine], "order": f_order[mine], "side": f_side[mine],
        "price": f_price[mine], "amount": f_amount[mine], "fee": f_fee[mine],
        "fee_asset": np.asarray(fc[5], dtype=object)[mine], "at": np.asarray(fc[6], dtype=np.int64)[mine]})
    bc = list(zip(*b, strict=True)) if b else [(), ()]
    bars = pd.DataFrame({"open_time": np.asarray(bc[0], dtype=np.int64), "close": np.asarray(bc[1], dtype=np.float64)})
    return JournalFrames(path=p, sha256=file_sha256(p), deployment=deployment,
                         decisions=pd.DataFrame({"bar_time": d_bt, "decision_price": d_price}), orders=orders,
                         fills=fills, bars=bars, foreign_fills=foreign)


def journal_frames(jd: JournalData) -> JournalFrames:
    """Return the columns of a journal already read exactly (each ``Decimal`` rounded once to float64)."""
    os_ = jd.orders
    orders = pd.DataFrame({
        "client_order_id": np.array([o.client_order_id for o in os_], dtype=object),
        "bar_time": np.array([o.bar_time for o in os_], dtype=np.int64),
        "leg": np.array([o.leg for o in os_], dtype=np.int64),
        "symbol": np.array([o.symbol for o in os_], dtype=object),
        "side": np.array([o.side for o in os_], dtype=object),
        "amount": np.array([float(o.amount) for o in os_], dtype=np.float64),
        "arrival_price": np.array([float(o.arrival_price) for o in os_], dtype=np.float64),
        "state": np.array([o.state for o in os_], dtype=object),
        "ended_at": np.array([np.nan if o.ended_at is None else float(o.ended_at) for o in os_], dtype=np.float64),
        "version": np.array([o.version for o in os_], dtype=object)})
    rows = [(k, f) for k, o in enumerate(os_) for f in o.fills]
    fills = pd.DataFrame({
        "trade_id": np.array([f.trade_id for _, f in rows], dtype=object),
        "order": np.array([k for k, _ in rows], dtype=np.intp),
        "side": np.array([f.side for _, f in rows], dtype=object),
        "price": np.array([float(f.price) for _, f in rows], dtype=np.float64),
        "amount": np.array([float(f.amount) for _, f in rows], dtype=np.float64),
        "fee": np.array([float(f.fee) for _, f in rows], dtype=np.float64),
        "fee_asset": np.array([f.fee_asset for _, f in rows], dtype=object),
        "at": np.array([f.at for _, f in rows], dtype=np.int64)})
    decisions = pd.DataFrame({"bar_time": np.array([int(d["bar_time"]) for d in jd.decisions], dtype=np.int64),
                              "decision_price": np.array([float(d["decision_price"]) for d in jd.decisions],
                                                         dtype=np.float64)})
    bars = pd.DataFrame({"open_time": np.array([int(b["open_time"]) for b in jd.bars], dtype=np.int64),
                         "close": np.array([float(b["close"]) for b in jd.bars], dtype=np.float64)})
    return JournalFrames(path=jd.path, sha256=jd.sha256, deployment=jd.deployment, decisions=decisions,
                         orders=orders, fills=fills, bars=bars, foreign_fills=jd.foreign_fills)


def fast_shortfall_frame(jf: JournalFrames, bar_ms: int, quotes: QuoteBook | None = None,
                         regime: pd.Series | None = None, start_ms: int | None = None,
                         end_ms: int | None = None) -> pd.DataFrame:
    """Return :func:`~toolkit.attribution.shortfall.shortfall_frame` of every decision that sent an order.

    Orders whose bar opened in ``[start_ms, end_ms)`` are decomposed, one row per bar (all its legs).

    Raises
    ------
    JournalError
        As the exact path: an order whose bar has no journaled decision, a leg on the other side
        than leg 0, a fee in an asset that is neither the symbol's base nor its quote.
    """
    lo, hi = period_bounds(start_ms, end_ms)
    o = jf.orders
    keep = np.flatnonzero((o["bar_time"].to_numpy() >= lo) & (o["bar_time"].to_numpy() < hi))
    o = o.iloc[keep]
    order = np.lexsort((o["leg"].to_numpy(), o["bar_time"].to_numpy()))
    o = o.iloc[order]
    if o.empty:
        return pd.DataFrame()
    n = len(o)
    remap = np.full(len(jf.orders), -1, dtype=np.intp)
    remap[keep[order]] = np.arange(n)
    f = jf.fills
    f_o = remap[f["order"].to_numpy()]
    f = f.iloc[np.flatnonzero(f_o >= 0)]
    f_o = f_o[f_o >= 0]

    bt = o["bar_time"].to_numpy()
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = bt[1:] != bt[:-1]
    gid = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, n - 1)
    g = len(first)
    cid = o["client_order_id"].to_numpy()
    g_bt = bt[first]

    d_bt = jf.decisions["bar_time"].to_numpy()
    d_order = np.argsort(d_bt, kind="stable")
    pos = np.searchsorted(d_bt[d_order], g_bt)
    found = pos < len(d_bt)
    found[found] = d_bt[d_order][pos[found]] == g_bt[found]
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        raise JournalError(f"orders[{cid[first[k]]}].bar_time", "the bar of a journaled decision", int(g_bt[k]))
    p_d = jf.decisions["decision_price"].to_numpy()[d_order][pos]

    side = o["side"].to_numpy()
    sign_o = np.where(side == "buy", 1.0, -1.0)
    s = sign_o[first]
    leg_wrong = sign_o != s[gid]
    symbol = o["symbol"].to_numpy()
    uniq, inv = np.unique(symbol.astype(str), return_inverse=True)
    parts = [str(u).partition("/") for u in uniq]
    base_u = np.array([pt[0] for pt in parts], dtype=object)
    quote_u = np.array([pt[2] for pt in parts], dtype=object)
    f_g = gid[f_o]
    f_sym = inv[first[f_g]]  # the symbol of the order's first leg
    price = f["price"].to_numpy()
    amount = f["amount"].to_numpy()
    fee = f["fee"].to_numpy()
    asset = f["fee_asset"].to_numpy()
    in_quote = asset == quote_u[f_sym]
    in_base = asset == base_u[f_sym]
    fee_q = np.where(fee == 0, 0.0, np.where(in_quote, fee, fee * price))
    bad_asset = (fee != 0) & ~in_quote & ~in_base
    if leg_wrong.any() or bad_asset.any():
        bad_g = min(int(gid[np.flatnonzero(leg_wrong)[0]]) if leg_wrong.any() else g,
                    int(f_g[bad_asset].min()) if bad_asset.any() else g)
        legs_bad = np.flatnonzero(leg_wrong & (gid == bad_g))
        if len(legs_bad):
            i = int(legs_bad[0])
            raise JournalError(f"orders[{cid[i]}].side", f"{side[first[bad_g]]} (as leg 0 of its bar)", side[i])
        cand = np.flatnonzero(bad_asset & (f_g == bad_g))
        j = int(cand[np.lexsort((cand, f_o[cand]))][0])  # legs in order, fills in journal order
        sym = symbol[first[bad_g]]
        raise JournalError(f"fills[trade_id={f['trade_id'].to_numpy()[j]}].fee_asset",
                           f"{base_u[f_sym[j]]} or {quote_u[f_sym[j]]} (of {sym})", asset[j])

    size = o["amount"].to_numpy()[first]
    p0 = o["arrival_price"].to_numpy()[first]
    x = np.bincount(f_g, weights=amount, minlength=g)
    dev = np.bincount(f_g, weights=amount * (price - p0[f_g]), minlength=g)  # Σ x_j (p_j − P_0)
    fees = np.bincount(f_g, weights=fee_q, minlength=g)
    n_fills = np.bincount(f_g, minlength=g)

    bars = jf.bars
    closes_at = bars["open_time"].to_numpy() + int(bar_ms)
    closes = bars["close"].to_numpy()
    fallback = np.full(g, closes[-1]) if len(closes) else p0
    ended = o["ended_at"].to_numpy()[last]
    open_ = np.isnan(ended)
    kb = np.searchsorted(closes_at, np.where(open_, 0, ended).astype(np.int64), side="left")
    kb[open_] = len(closes)
    p_n = np.where(kb < len(closes), closes[np.minimum(kb, len(closes) - 1)], fallback) if len(closes) else fallback

    delay = s * x * (p0 - p_d)
    trading = s * dev
    opportunity = s * (size - x) * (p_n - p_d)
    half = np.full(g, np.nan)
    if quotes is not None and len(f):
        hs = quotes.half_spread_array(f["at"].to_numpy())
        missing = np.bincount(f_g, weights=np.isnan(hs).astype(np.float64), minlength=g)
        split = np.bincount(f_g, weights=amount * np.nan_to_num(hs), minlength=g)
        half = np.where((missing == 0) & (n_fills > 0), split, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        average = np.where(x > 0, p0 + dev / np.where(x > 0, x, 1.0), np.nan)
    return frame_from_columns({
        "bar_time": g_bt, "side": s, "size": size, "filled": x, "decision_price": p_d, "arrival_price": p0,
        "end_price": p_n, "average_price": average, "notional": size * p_d, "delay": delay, "trading": trading,
        "opportunity": opportunity, "fees": fees, "half_spread": half, "impact": trading - half,
        "legs": last - first + 1, "state": o["state"].to_numpy()[last], "version": o["version"].to_numpy()[first],
        "total": delay + trading + opportunity + fees,
    }, regime)
