"""Read the runner's journal (SQLite) for attribution: read-only, exact, checked.

The journal stores amounts, prices and fees as decimal text; they are read as
``Decimal`` (never through ``float``) and checked: a value that is not a finite decimal
number, a negative amount or a non-positive price is a :class:`JournalError` naming the
table, the row and the column (``fills[trade_id=17].price: expected a finite decimal
number > 0, found 'abc'``). Times are epoch milliseconds of the exchange's clock (UTC).

The file is opened read-only (``mode=ro``): attribution never writes into a journal a
runner may be appending to. Columns are checked by name, so a journal that a later
runner migrated (more tables or columns) still reads; one missing a column attribution
needs is refused naming it.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NamedTuple

from toolkit.attribution.errors import JournalError

__all__ = ["REQUIRED_COLUMNS", "JournalData", "Order", "parse_decimal", "read_journal"]

#: table -> the columns attribution reads
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "decisions": ("deployment", "bar_time", "decided_at", "decision_price", "direction", "raw_target", "target",
                  "held_before", "position_qty", "model", "version", "late", "exec_state", "order_delta", "note"),
    "orders": ("client_order_id", "deployment", "bar_time", "leg", "symbol", "side", "type", "amount",
               "arrival_price", "intent_at", "state", "filled", "updated_at", "version"),
    "order_events": ("client_order_id", "at", "state", "detail"),
    "fills": ("symbol", "trade_id", "client_order_id", "deployment", "side", "price", "amount", "cost", "fee",
              "fee_asset", "at"),
    "bars": ("deployment", "open_time", "open", "high", "low", "close", "volume"),
    "incidents": ("id", "at", "deployment", "kind", "severity", "message", "resolved_at"),
    "version_switches": ("at", "deployment", "model", "alias", "from_version", "to_version", "reason"),
}


def _dec(value: Any, table: str, key: object, column: str, positive: bool = False,
         nonnegative: bool = False) -> Decimal:
    """Fast path of :func:`parse_decimal`: the field's name is built only when the value is bad."""
    if type(value) is str:
        try:
            d = Decimal(value)
        except InvalidOperation:
            d = None
        if d is not None and d.is_finite() and not (positive and d <= 0) and not (nonnegative and d < 0) \
                and value == value.strip():
            return d
    return parse_decimal(value, f"{table}[{key}].{column}", positive=positive, nonnegative=nonnegative)


def parse_decimal(value: Any, where: str, *, positive: bool = False, nonnegative: bool = False) -> Decimal:
    """Return ``value`` (decimal text) as an exact ``Decimal``; raise ``JournalError`` naming ``where`` otherwise."""
    want = "a finite decimal number" + (" > 0" if positive else " >= 0" if nonnegative else "")
    if isinstance(value, float | bool) or value is None:
        raise JournalError(where, want + " stored as text", value)
    try:
        d = Decimal(str(value).strip())
    except InvalidOperation:
        raise JournalError(where, want, value) from None
    if not d.is_finite() or (positive and d <= 0) or (nonnegative and d < 0):
        raise JournalError(where, want, value)
    return d


class Fill(NamedTuple):
    """One fill of an order (exact)."""

    trade_id: str
    side: str
    price: Decimal
    amount: Decimal
    fee: Decimal
    fee_asset: str
    at: int


@dataclass(frozen=True)
class Order:
    """One journaled order (a leg of a decision's execution) with its fills and its terminal time."""

    client_order_id: str
    deployment: str
    bar_time: int
    leg: int
    symbol: str
    side: str
    amount: Decimal
    arrival_price: Decimal
    intent_at: int
    state: str
    ended_at: int | None      # time of the last state change once terminal (None while open)
    version: str
    fills: tuple[Fill, ...] = field(default_factory=tuple)

    @property
    def sign(self) -> int:
        return 1 if self.side == "buy" else -1

    @property
    def filled(self) -> Decimal:
        return sum((f.amount for f in self.fills), Decimal(0))


@dataclass(frozen=True)
class JournalData:
    """Everything attribution reads from one journal, for one deployment."""

    path: Path
    sha256: str
    deployment: str
    decisions: list[dict[str, Any]]
    orders: list[Order]
    bars: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    switches: list[dict[str, Any]]
    foreign_fills: int          # fills of the deployment attributed to no journaled order

    @property
    def versions(self) -> list[str]:
        return sorted({str(d["version"]) for d in self.decisions}, key=lambda v: (len(v), v))

    @property
    def model(self) -> str:
        models = {str(d["model"]) for d in self.decisions}
        return next(iter(models)) if len(models) == 1 else ",".join(sorted(models))


def connect_journal(path: Path, extra: Mapping[str, tuple[str, ...]] | None = None,
                    schema: int | None = None) -> sqlite3.Connection:
    """Open the runner's journal at ``path`` read-only; raise ``JournalError`` unless it has the columns read.

    ``REQUIRED_COLUMNS`` (attribution's) are always checked; ``extra`` adds the tables and columns
    (table -> columns) another reader needs beyond them, and ``schema`` the journal schema those
    came with, named in the error. Tables are checked in name order.
    """
    if not path.is_file():
        raise JournalError("journal", "a runner journal (an existing SQLite file)", str(path))
    more = extra or {}
    need = {t: (*REQUIRED_COLUMNS.get(t, ()), *more.get(t, ())) for t in {*REQUIRED_COLUMNS, *more}}
    written = "a journal written by the runner" + ("" if schema is None else f", schema {schema}")
    column = "a column of the runner's journal " + ("schema" if schema is None else f"(schema {schema})")
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        con.row_factory = sqlite3.Row
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for table, cols in sorted(need.items()):
            if table not in tables:
                raise JournalError(f"journal table {table}", f"present ({written})", f"{path}: tables {sorted(tables)}")
            have = {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}
            missing = [c for c in cols if c not in have]
            if missing:
                raise JournalError(f"{table}.{missing[0]}", column, f"{path}: columns {sorted(have)}")
    except sqlite3.DatabaseError as exc:
        raise JournalError("journal", "a runner journal (SQLite file)", f"{path}: {exc}") from None
    return con


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_deployment(con: sqlite3.Connection, deployment: str | None, model: str | None) -> str:
    """Return the deployment to read: ``deployment`` if it decided something, else the only one (trading ``model``)."""
    deps = [(str(r[0]), str(r[1])) for r in
            con.execute("SELECT DISTINCT deployment, model FROM decisions ORDER BY deployment")]
    if model is not None:
        deps = [d for d in deps if d[1] == model]
    names = sorted({d[0] for d in deps})
    if deployment is None:
        if len(names) != 1:
            raise JournalError("deployment", f"one deployment{' trading ' + model if model else ''} in the journal",
                               names or "none")
        return names[0]
    if deployment not in names:
        raise JournalError("deployment", f"one of {names}", deployment)
    return deployment


def stray_order_expected(deployment: str) -> str:
    """What a fill naming one of ``deployment``'s orders needs: that order in the journal."""
    return f"an order of deployment {deployment!r} journaled in orders (the runner journals it before sending)"


def period_bounds(start_ms: int | None, end_ms: int | None) -> tuple[int, int]:
    """Return ``[lo, hi)`` in epoch ms for an optional period (None: unbounded)."""
    return (-(2**62) if start_ms is None else int(start_ms)), (2**62 if end_ms is None else int(end_ms))


def journal_deployments(path: str | Path) -> list[tuple[str, str]]:
    """Return ``(deployment, model)`` for every deployment that decided something in the journal, sorted."""
    con = connect_journal(Path(path))
    try:
        return [(str(r[0]), str(r[1])) for r in
                con.execute("SELECT DISTINCT deployment, model FROM decisions ORDER BY deployment, model")]
    finally:
        con.close()


def read_journal(path: str | Path, deployment: str | None = None, model: str | None = None,
                 start_ms: int | None = None, end_ms: int | None = None) -> JournalData:
    """Read one deployment's decisions, orders with their fills, bars, incidents and version switches.

    Parameters
    ----------
    path
        The runner's journal.
    deployment
        The deployment to read; None: the only one trading ``model`` (or the only one at all).
    model
        Keep the deployment that trades this registered model.
    start_ms, end_ms
        Keep decisions (and their orders) whose bar opened in ``[start_ms, end_ms)``.

    Raises
    ------
    JournalError
        The file is not a journal, lacks a column, holds a malformed amount or price, or the
        deployment is ambiguous or absent.
    """
    p = Path(path)
    con = connect_journal(p)
    try:
        deployment = resolve_deployment(con, deployment, model)
        lo, hi = period_bounds(start_ms, end_ms)
        decisions = [dict(r) for r in con.execute(
            "SELECT * FROM decisions WHERE deployment = ? AND bar_time >= ? AND bar_time < ? ORDER BY bar_time",
            (deployment, lo, hi))]
        for d in decisions:
            d["decision_price"] = parse_decimal(d["decision_price"], f"decisions[bar_time={d['bar_time']}]"
                                                ".decision_price", positive=True)
            if d["order_delta"] is not None:
                d["order_delta"] = parse_decimal(d["order_delta"], f"decisions[bar_time={d['bar_time']}].order_delta")
        fills_by_order: dict[str, list[Fill]] = {}
        foreign = 0
        con.row_factory = None
        rows = con.execute("SELECT trade_id, side, price, amount, fee, fee_asset, at, client_order_id, deployment "
                           "FROM fills WHERE deployment = ? OR deployment IS NULL ORDER BY at, trade_id",
                           (deployment,)).fetchall()
        con.row_factory = sqlite3.Row
        for tid, side, price, amount, fee, fee_asset, at, cid, dep in rows:
            if side != "buy" and side != "sell":
                raise JournalError(f"fills[trade_id={tid}].side", "buy or sell", side)
            key = f"trade_id={tid}"
            f = Fill(str(tid), side, _dec(price, "fills", key, "price", positive=True),
                     _dec(amount, "fills", key, "amount", positive=True),
                     _dec(fee, "fills", key, "fee", nonnegative=True), fee_asset, at)
            if cid is None:
                foreign += dep == deployment
                continue
            fills_by_order.setdefault(cid, []).append(f)
        ended = {str(r[0]): int(r[1]) for r in con.execute(
            "SELECT client_order_id, MAX(at) FROM order_events GROUP BY client_order_id")}
        orders = []
        for r in con.execute("SELECT * FROM orders WHERE deployment = ? AND bar_time >= ? AND bar_time < ? "
                             "ORDER BY bar_time, leg", (deployment, lo, hi)):
            where = f"orders[{r['client_order_id']}]"
            if r["side"] not in ("buy", "sell"):
                raise JournalError(f"{where}.side", "buy or sell", r["side"])
            cid = str(r["client_order_id"])
            fills = tuple(fills_by_order.get(cid, ()))
            for f in fills:
                if f.side != r["side"]:
                    raise JournalError(f"fills[trade_id={f.trade_id}].side", f"{r['side']} (the side of {cid})",
                                       f.side)
            terminal = r["state"] not in ("intent", "unknown", "open")
            orders.append(Order(
                client_order_id=cid, deployment=deployment, bar_time=int(r["bar_time"]), leg=int(r["leg"]),
                symbol=str(r["symbol"]), side=str(r["side"]),
                amount=parse_decimal(r["amount"], f"{where}.amount", positive=True),
                arrival_price=parse_decimal(r["arrival_price"], f"{where}.arrival_price", positive=True),
                intent_at=int(r["intent_at"]), state=str(r["state"]),
                ended_at=ended.get(cid, int(r["updated_at"])) if terminal else None, version=str(r["version"]),
                fills=fills))
        known = {o.client_order_id for o in orders}
        foreign += sum(len(v) for k, v in fills_by_order.items()
                       if k not in known and not k.startswith(f"{deployment}-"))
        if any(k not in known and k.startswith(f"{deployment}-") for k in fills_by_order):
            outside = {str(r[0]) for r in con.execute(
                "SELECT client_order_id FROM orders WHERE deployment = ? AND (bar_time < ? OR bar_time >= ?)",
                (deployment, lo, hi))}
            for tid, _s, _p, _a, _f, _fa, _at, cid, dep in rows:
                if dep == deployment and cid is not None and cid not in known and cid not in outside \
                        and cid.startswith(f"{deployment}-"):
                    raise JournalError(f"fills[trade_id={tid}].client_order_id", stray_order_expected(deployment),
                                       cid)
        bars = [dict(r) for r in con.execute(
            "SELECT * FROM bars WHERE deployment = ? ORDER BY open_time", (deployment,))]
        incidents = [dict(r) for r in con.execute(
            "SELECT * FROM incidents WHERE deployment IS NULL OR deployment = ? ORDER BY id", (deployment,))]
        switches = [dict(r) for r in con.execute(
            "SELECT * FROM version_switches WHERE deployment = ? ORDER BY seq", (deployment,))]
    except sqlite3.DatabaseError as exc:
        raise JournalError("journal", "a readable runner journal", f"{p}: {exc}") from None
    finally:
        con.close()
    if not decisions:
        raise JournalError("decisions", f"at least one decision of deployment {deployment!r} in the period",
                           "none")
    return JournalData(path=p, sha256=file_sha256(p), deployment=deployment, decisions=decisions, orders=orders,
                       bars=bars, incidents=incidents, switches=switches, foreign_fills=foreign)
