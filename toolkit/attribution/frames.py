"""A runner journal as checked columns: what the vectorised shortfall (:mod:`toolkit.attribution.fast`) reads.

:func:`read_journal_frames` reads the journal's tables with one query each (three quarters of the fills
in a process of its own, :mod:`~toolkit.attribution.fill_reader`, while this one reads the rest) and
checks them with vectorised masks; :func:`journal_frames` turns a
:class:`~toolkit.attribution.journal.JournalData` already read exactly into the same columns.

Precision: amounts, prices and fees are converted from their decimal text to float64 by SQLite
(about 16 significant digits, within an ulp or so of the correctly rounded value). A value whose
decimal text is finite but beyond float64's range is refused as a ``JournalError`` rather than rounded.

Errors are those of the exact path, for the same first bad row: a malformed value names the
table, the row key, the field, what was expected and what was found
(``fills[trade_id=17].price: expected a finite decimal number > 0, found 'abc'``); masks find
the suspect rows, the exact parser words the error of the first.
"""

from __future__ import annotations

import gc
import math
import pickle
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.attribution.errors import JournalError
from toolkit.attribution.fill_reader import read as read_fills
from toolkit.attribution.journal import (
    JournalData,
    connect_journal,
    file_sha256,
    parse_decimal,
    period_bounds,
    resolve_deployment,
    stray_order_expected,
)

__all__ = ["JournalFrames", "journal_frames", "read_journal_frames"]

_TERMINAL_NOT = ("intent", "unknown", "open")
#: one fill as read: its rowid, its order's rowid (-1: none in the period), the values, time and flags
_FILL_ROW = np.dtype([("rowid", np.int64), ("order", np.int64), ("price", np.float64), ("amount", np.float64),
                      ("fee", np.float64), ("at", np.int64), ("code", np.int64)])
#: one decision as read: its rowid, bar, price (-1: NULL) and two flags (price plain, order delta plain or NULL)
_DECISION_ROW = np.dtype([("rowid", np.int64), ("bar_time", np.int64), ("price", np.float64), ("plain", np.int64),
                          ("delta_ok", np.int64)])
_BAR_ROW = np.dtype([("open_time", np.int64), ("close", np.float64)])
#: the script that reads the fills in a process of its own
_FILL_READER = Path(__file__).with_name("fill_reader.py")
#: the share of the fills (the last rowids) read in this process, after the other tables: the rest is read by
#: the fill reader meanwhile (the two take about as long on two cores)
_FILL_SHARE_HERE = (1, 4)
#: the fill reader starts (about 0.3 s) for this many fills' rowids or more; fewer are read here
_FILL_READER_FROM = 100_000


@dataclass(frozen=True)
class JournalFrames:
    """One deployment's journal as columns: what the vectorised shortfall reads.

    ``orders`` (sorted by bar and leg): ``client_order_id``, ``bar_time``, ``leg``, ``symbol``,
    ``side``, ``amount``, ``arrival_price``, ``state``, ``ended_at`` (ms; NaN while open),
    ``version``. ``fills`` (the fills of ``orders``, by time): ``order`` (row of ``orders``),
    ``side``, ``price``, ``amount``, ``fee``, ``fee_asset``, ``at``; ``trade_ids`` returns the
    trade ids of some of them (by position), for messages. ``decisions``: ``bar_time``, ``decision_price``. ``bars``:
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
    trade_ids: Callable[[np.ndarray], list[str]]


def _plain(col: str) -> str:
    """SQL: 1 when ``col`` is a well-formed number that is not stored as a float, else 0.

    Comparing the TEXT column with its own ``CAST(… AS REAL)`` applies numeric affinity to the
    text, which SQLite does only for a well-formed integer or real literal (``'12abc'``, ``'1.2.3'``,
    ``''`` and ``'NaN'`` stay text and compare unequal), so a 0 marks a value to re-check exactly.
    """
    return f"coalesce(typeof({col}) != 'real' AND {col} = CAST({col} AS REAL), 0)"


def _side(col: str) -> str:
    return f"(CASE {col} WHEN 'buy' THEN 1 WHEN 'sell' THEN -1 ELSE 0 END)"


def _checked(d: Decimal, where: str, value: Any, positive: bool = False) -> float:
    """Return ``d`` as float64, refusing a value float64 cannot hold (the exact parser accepted it)."""
    x = float(d)
    if not math.isfinite(x) or (positive and x <= 0):
        raise JournalError(where, "a decimal number within float64's range (attribution's vectorised path)", value)
    return x


def _cols(rows: list[tuple[Any, ...]], n: int) -> list[tuple[Any, ...]]:
    return list(zip(*rows, strict=True)) if rows else [()] * n


def _obj(values: Any) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


def read_journal_frames(path: str | Path, deployment: str | None = None, model: str | None = None,
                        start_ms: int | None = None, end_ms: int | None = None) -> JournalFrames:
    """Read one deployment's decisions, orders, fills and bars as checked columns (one query per table or range).

    The arguments are those of :func:`~toolkit.attribution.journal.read_journal`, and so are the
    errors: the same bad value is reported with the same field, expected and found. SQLite
    converts the plain decimal text the runner writes (digits and one point) to float64 and
    flags every other value; each flagged row is re-read and parsed by the exact parser, in
    journal order, so the first bad row raises and a valid unusual spelling (``1e-3``, `` 2``)
    is still read.

    Raises
    ------
    JournalError
        The file is not a journal, lacks a column, holds a malformed amount, price or side, or
        the deployment is ambiguous or absent.
    """
    p = Path(path)
    con = connect_journal(p)
    con.row_factory = None
    hashing = ThreadPoolExecutor(1, thread_name_prefix="journal-sha256")
    sha = hashing.submit(file_sha256, p)  # on another core while SQLite reads (hashlib releases the GIL)
    tmp = tempfile.TemporaryDirectory(prefix="journal-fills-")
    reader: subprocess.Popen[bytes] | None = None
    collect = gc.isenabled()
    gc.disable()  # millions of row tuples, none cyclic: the collector would walk them again and again
    try:
        deployment = resolve_deployment(con, deployment, model)
        lo, hi = period_bounds(start_ms, end_ms)
        period = (deployment, lo, hi)
        first, last = con.execute("SELECT IFNULL(MIN(rowid), 0), IFNULL(MAX(rowid), -1) FROM fills").fetchone()
        span = last - first + 1
        cut = first + span * (_FILL_SHARE_HERE[1] - _FILL_SHARE_HERE[0]) // _FILL_SHARE_HERE[1] \
            if span >= _FILL_READER_FROM else first
        out = Path(tmp.name) / "fills.pickle"
        if cut > first:  # most fills, in a process of its own
            reader = _start_fills(_fills_job(p, period, first, cut - 1), out)
        d_rows = np.fromiter(con.execute(
            f"SELECT rowid, bar_time, IFNULL(CAST(decision_price AS REAL), -1.0), {_plain('decision_price')}, "
            f"order_delta IS NULL OR {_plain('order_delta')} "
            "FROM decisions WHERE deployment = ? AND bar_time >= ? AND bar_time < ? ORDER BY bar_time",
            period), dtype=_DECISION_ROW)
        o_rows = con.execute(
            f"SELECT o.rowid, o.client_order_id, o.bar_time, o.leg, o.symbol, {_side('o.side')}, "
            f"CAST(o.amount AS REAL), CAST(o.arrival_price AS REAL), "
            f"{_plain('o.amount')} + 2 * {_plain('o.arrival_price')}, o.state, o.updated_at, o.version, e.m "
            "FROM orders o LEFT JOIN (SELECT client_order_id, MAX(at) AS m FROM order_events "
            "GROUP BY client_order_id) e ON e.client_order_id = o.client_order_id "
            "WHERE o.deployment = ? AND o.bar_time >= ? AND o.bar_time < ? ORDER BY o.bar_time, o.leg",
            period).fetchall()
        outside = {str(r[0]) for r in con.execute(
            "SELECT client_order_id FROM orders WHERE deployment = ? AND (bar_time < ? OR bar_time >= ?)", period)}
        b = np.fromiter(con.execute("SELECT open_time, close FROM bars WHERE deployment = ? ORDER BY open_time",
                                    (deployment,)), dtype=_BAR_ROW)
        here = read_fills(con, _fills_job(p, period, cut, last))
        f_rows, assets = _merge_fills([_finish_fills(reader, out), here] if reader is not None else [here])
        decisions, orders, fills, foreign, rowids = _check(con, deployment, d_rows, f_rows, o_rows, assets, outside)
    except sqlite3.DatabaseError as exc:
        raise JournalError("journal", "a readable runner journal", f"{p}: {exc}") from None
    finally:
        if reader is not None and reader.poll() is None:  # an error here: the fills are not waited for
            reader.kill()
            reader.wait()
        if reader is not None and reader.stderr is not None:
            reader.stderr.close()
        tmp.cleanup()
        con.close()
        hashing.shutdown(wait=True)
        if collect:
            gc.enable()
    bars = pd.DataFrame({"open_time": b["open_time"], "close": b["close"]})

    def trade_ids(rows: np.ndarray) -> list[str]:
        con = connect_journal(p)
        try:
            return [str(con.execute("SELECT trade_id FROM fills WHERE rowid = ?", (int(rowids[i]),)).fetchone()[0])
                    for i in rows]
        finally:
            con.close()

    return JournalFrames(path=p, sha256=sha.result(), deployment=deployment, decisions=decisions, orders=orders,
                         fills=fills, bars=bars, foreign_fills=foreign, trade_ids=trade_ids)


def _fills_job(p: Path, period: tuple[str, int, int], first: int, last: int) -> dict[str, Any]:
    """The query of the fills of ``deployment`` and those of none with ``first <= rowid <= last`` (``fill_reader``)."""
    # one small integer per fill: side + 3 × plain flags + 24 × (no order id + 2 × of the deployment) +
    # 96 × fee asset; the rows come in storage order (sorted by time in _check, ties by trade id when it matters)
    sql = ("SELECT f.rowid, IFNULL(o.rowid, -1), IFNULL(CAST(f.price AS REAL), -1.0), "
           "IFNULL(CAST(f.amount AS REAL), -1.0), IFNULL(CAST(f.fee AS REAL), -1.0), f.at, "
           f"({_side('f.side')} + 1) + 3 * ({_plain('f.price')} + 2 * {_plain('f.amount')} + 4 * {_plain('f.fee')})"
           " + 24 * ((f.client_order_id IS NULL) + 2 * (f.deployment IS :dep)) + 96 * /*ASSETS*/ "
           "FROM fills f LEFT JOIN orders o ON o.client_order_id = f.client_order_id AND o.deployment = :dep "
           "AND o.bar_time >= :lo AND o.bar_time < :hi WHERE f.rowid BETWEEN :first AND :last "
           "AND (f.deployment = :dep OR f.deployment IS NULL)")
    return {"path": str(p), "sql": sql, "dtype": _FILL_ROW,
            "params": {"dep": period[0], "lo": period[1], "hi": period[2], "first": first, "last": last}}


def _start_fills(job: dict[str, Any], out: Path) -> subprocess.Popen[bytes]:
    """Start reading the fills of ``job`` in a process of its own (``fill_reader``), its result to ``out``."""
    # -P: the script's folder (this package: errors.py, journal.py …) is not put first on its sys.path
    proc = subprocess.Popen([sys.executable, "-P", str(_FILL_READER), str(out)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(pickle.dumps(job))
    proc.stdin.close()
    return proc


def _finish_fills(proc: subprocess.Popen[bytes], out: Path) -> tuple[np.ndarray, list[Any]]:
    """Wait for the fills' reader; return its rows and fee assets, or raise its error."""
    assert proc.stderr is not None
    err = proc.stderr.read()  # until the reader exits (it writes to stderr only when it fails)
    proc.wait()
    proc.stderr.close()
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"the journal's fills reader {_FILL_READER} exited with {proc.returncode}: "
                           f"{err.decode(errors='replace').strip()[-2000:]}")
    with out.open("rb") as fh:
        result = pickle.load(fh)
    if result[0] == "error":
        raise result[1]
    return result[1], result[2]


def _merge_fills(parts: list[tuple[np.ndarray, list[Any]]]) -> tuple[np.ndarray, list[Any]]:
    """Join the ranges of fills read (in rowid order), their fee assets renumbered into one list."""
    number: dict[Any, int] = {}
    joined = np.concatenate([rows for rows, _ in parts])  # a new array (an unpickled one is read-only)
    start = 0
    for rows, local in parts:
        if len(rows):
            renumber = np.asarray([number.setdefault(a, len(number)) for a in local], dtype=np.int64)
            code = joined["code"][start:start + len(rows)]
            code[:] = code % 96 + 96 * renumber[code // 96]
        start += len(rows)
    return joined, list(number)


def _check(con: sqlite3.Connection, deployment: str, d_rows: np.ndarray, f_rows: np.ndarray, o_rows: list[Any],
           assets: list[Any], outside: set[str]
           ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int, np.ndarray]:
    """Check the rows read (decisions, then fills, then orders, each in journal order) and return the frames."""
    # decisions: decision_price > 0, order_delta a decimal or NULL
    d_price = d_rows["price"].copy()
    with np.errstate(invalid="ignore"):
        suspect = (d_rows["plain"] == 0) | (d_rows["delta_ok"] == 0) | ~(d_price > 0)
    for i in np.flatnonzero(suspect):
        bt, price, delta = con.execute("SELECT bar_time, decision_price, order_delta FROM decisions WHERE rowid = ?",
                                       (int(d_rows["rowid"][i]),)).fetchone()
        where = f"decisions[bar_time={bt}]"
        d_price[i] = _checked(parse_decimal(price, f"{where}.decision_price", positive=True),
                              f"{where}.decision_price", price, positive=True)
        if delta is not None:
            parse_decimal(delta, f"{where}.order_delta")

    # fills: side buy|sell, price > 0, amount > 0, fee >= 0 (the suspects re-read in journal order)
    f_rowid = f_rows["rowid"]
    f_price = f_rows["price"].copy()
    f_amount = f_rows["amount"].copy()
    f_fee = f_rows["fee"].copy()
    f_at = f_rows["at"]
    code = f_rows["code"]
    f_side = code % 3 - 1
    with np.errstate(invalid="ignore"):
        suspect = (f_side == 0) | ((code // 3) % 8 != 7) | ~(f_price > 0) | ~(f_amount > 0) | ~(f_fee >= 0)

    def reread(rows: np.ndarray, cols: str) -> list[tuple[Any, ...]]:
        """Rows ``rows`` of ``fills`` (positions) as (position, at, trade_id, *cols), in journal order."""
        got = [(int(i), *con.execute(f"SELECT at, trade_id, {cols} FROM fills WHERE rowid = ?",
                                     (int(f_rowid[i]),)).fetchone()) for i in rows]
        return sorted(got, key=lambda r: (r[1], r[2]))

    for i, _at, tid, side, price, amount, fee in reread(np.flatnonzero(suspect), "side, price, amount, fee"):
        where = f"fills[trade_id={tid}]"
        if side != "buy" and side != "sell":
            raise JournalError(f"{where}.side", "buy or sell", side)
        f_price[i] = _checked(parse_decimal(price, f"{where}.price", positive=True), f"{where}.price", price, True)
        f_amount[i] = _checked(parse_decimal(amount, f"{where}.amount", positive=True), f"{where}.amount", amount,
                               True)
        f_fee[i] = _checked(parse_decimal(fee, f"{where}.fee", nonnegative=True), f"{where}.fee", fee)

    # orders: side buy|sell, its fills on its side, amount > 0, arrival_price > 0
    oc = _cols(o_rows, 13)
    o_rowid = np.asarray(oc[0], dtype=np.int64)
    by_rowid = np.argsort(o_rowid, kind="stable")
    f_orow = f_rows["order"]
    mine = f_orow >= 0
    f_order = np.full(len(f_orow), -1, dtype=np.intp)
    if len(o_rowid):
        f_order[mine] = by_rowid[np.searchsorted(o_rowid[by_rowid], f_orow[mine])]
    o_side = np.asarray(oc[5], dtype=np.int64)
    o_amount = np.asarray(oc[6], dtype=np.float64)
    o_arrival = np.asarray(oc[7], dtype=np.float64)
    wrong = np.zeros(len(f_orow), dtype=bool)
    wrong[mine] = f_side[mine] != o_side[f_order[mine]]
    mismatch = np.zeros(len(o_rowid), dtype=bool)
    mismatch[f_order[wrong]] = True
    with np.errstate(invalid="ignore"):
        suspect = (o_side == 0) | mismatch | (np.asarray(oc[8], dtype=np.int64) != 3) | ~(o_amount > 0) \
            | ~(o_arrival > 0)
    for i in np.flatnonzero(suspect):
        cid, side, amount, arrival = con.execute(
            "SELECT client_order_id, side, amount, arrival_price FROM orders WHERE rowid = ?", (int(o_rowid[i]),)
        ).fetchone()
        where = f"orders[{cid}]"
        if side not in ("buy", "sell"):
            raise JournalError(f"{where}.side", "buy or sell", side)
        if mismatch[i]:
            _j, _at, tid, fside = reread(np.flatnonzero(wrong & (f_order == i)), "side")[0]
            raise JournalError(f"fills[trade_id={tid}].side", f"{side} (the side of {cid})", fside)
        o_amount[i] = _checked(parse_decimal(amount, f"{where}.amount", positive=True), f"{where}.amount", amount,
                               True)
        o_arrival[i] = _checked(parse_decimal(arrival, f"{where}.arrival_price", positive=True),
                                f"{where}.arrival_price", arrival, True)
    if not len(d_price):
        raise JournalError("decisions", f"at least one decision of deployment {deployment!r} in the period", "none")

    # foreign fills: of the deployment without an order id, or naming no order of this deployment
    no_cid = (code // 24) % 2 == 1
    ours_dep = (code // 48) % 2 == 1
    foreign = int(np.sum(no_cid & ours_dep))
    prefix = f"{deployment}-"
    stray = []
    for k in np.flatnonzero(~mine & ~no_cid):
        cid = str(con.execute("SELECT client_order_id FROM fills WHERE rowid = ?", (int(f_rowid[k]),)).fetchone()[0])
        if not cid.startswith(prefix):
            foreign += 1
        elif ours_dep[k] and cid not in outside:
            stray.append(k)
    if stray:
        _k, _at, tid, cid = reread(np.asarray(stray), "client_order_id")[0]
        raise JournalError(f"fills[trade_id={tid}].client_order_id", stray_order_expected(deployment), cid)

    ended = np.asarray([np.nan if m is None else m for m in oc[12]], dtype=np.float64)
    ended = np.where(np.isnan(ended), np.asarray(oc[10], dtype=np.float64), ended)
    state = np.asarray(oc[9], dtype=object)
    ended[np.isin(state, _TERMINAL_NOT)] = np.nan
    sides = np.array(["sell", "", "buy"], dtype=object)
    orders = pd.DataFrame({
        "client_order_id": _obj(oc[1]), "bar_time": np.asarray(oc[2], dtype=np.int64),
        "leg": np.asarray(oc[3], dtype=np.int64), "symbol": _obj(oc[4]), "side": _obj(sides[o_side + 1]),
        "amount": o_amount, "arrival_price": o_arrival, "state": _obj(state), "ended_at": ended,
        "version": _obj([str(v) for v in oc[11]])})
    asset_of = np.asarray(assets, dtype=object)
    keep = np.flatnonzero(mine)
    keep = keep[np.argsort(f_at[keep], kind="stable")]
    fills = pd.DataFrame({
        "order": f_order[keep], "side": _obj(sides[f_side[keep] + 1]), "price": f_price[keep],
        "amount": f_amount[keep], "fee": f_fee[keep], "fee_asset": _obj(asset_of[code[keep] // 96]),
        "at": f_at[keep]})
    decisions = pd.DataFrame({"bar_time": d_rows["bar_time"], "decision_price": d_price})
    return decisions, orders, fills, foreign, f_rowid[keep]


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
    tids = [f.trade_id for _, f in rows]
    fills = pd.DataFrame({
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
                         orders=orders, fills=fills, bars=bars, foreign_fills=jd.foreign_fills,
                         trade_ids=lambda rows: [tids[int(i)] for i in rows])
