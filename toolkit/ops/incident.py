"""One incident of the runner, for the on-call engineer woken at 3am and the desk reading it next morning.

:func:`incident_report` reads the runner's journal (read-only, ``mode=ro``: never a write into a journal a
runner may be appending to) and builds, for one incident id:

* the incident row and its state (open, acknowledged, resolved);
* a **timeline** of everything the journal holds from ``hours`` before the incident opened to ``hours``
  after it was resolved (or after it opened, while it is open): closed bars, decisions, order state
  changes, fills, other incidents with their acknowledgements and resolutions, version switches and
  reconciliations, in UTC;
* the **market context** (:class:`MarketContext`): the hour-of-week bucket of the incident, its regime in
  the regime map measured on the ``regime_days`` of 1-minute bars before the incident's hour (the bar
  store: bundled data and the user cache), and the hour's median spread estimate, volume and volatility
  against the bucket's quantiles (:mod:`toolkit.ops.regimes`); unavailable, with the reason, when the
  store lacks those bars;
* **what the runner did** (:class:`RunnerActions`): decisions held back while this incident blocked new
  orders, orders cancelled, refused by the exchange or never placed, flatten orders, rollbacks, halts;
* the **PnL impact** (:class:`PnLImpact`): the deployment's position marked to market over the window
  against holding flat (whose PnL is zero), from the journal's fills (exact, ``Decimal``) and the closes of
  its bars; split into the move of the position held at the start (``carry``) and the window's trading
  (fees included); fees in quote; in bps of the deployment's capital (given, or inferred from its first
  order from flat as attribution does).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.attribution.errors import JournalError
from toolkit.attribution.journal import connect_journal, parse_decimal
from toolkit.errors import ConfigurationError
from toolkit.ops.market_context import CONTEXT_METRICS, DAYS, MarketContext, market_context

__all__ = ["CONTEXT_METRICS", "Event", "IncidentReport", "MarketContext", "PnLImpact", "RunnerActions",
           "check_incident", "incident_report"]

#: the journal columns this report reads beyond attribution's (the incident's acknowledgement, order purpose),
#: from the journal's schema 3
_MORE_COLUMNS = {"incidents": ("acknowledged_at", "acknowledged_by", "resolution"), "orders": ("purpose",),
                 "balances": ("at", "kind", "asset", "total", "expected")}


@dataclass(frozen=True)
class Event:
    """One line of the timeline: when (UTC), from which table, what happened, and whether it is this incident's."""

    at: pd.Timestamp
    source: str
    what: str
    detail: str = ""
    this: bool = False


@dataclass(frozen=True)
class RunnerActions:
    """What the runner did in the window."""

    held_back: list[pd.Timestamp]   # bars whose decision sent no order while this incident blocked orders
    cancelled: list[str]            # client order ids cancelled
    refused: list[str]              # rejected by the exchange, or never placed
    flatten: list[str]              # flatten orders
    rollbacks: list[str]            # version switches and auto-rollback incidents, as sentences
    halts: list[str]                # halt incidents, as sentences

    def sentence(self) -> str:
        parts = []
        for items, one, many in ((self.held_back, "held back 1 decision", "held back {n} decisions"),
                                 (self.cancelled, "cancelled 1 order", "cancelled {n} orders"),
                                 (self.refused, "had 1 order refused or not placed",
                                  "had {n} orders refused or not placed"),
                                 (self.flatten, "sent 1 flatten order", "sent {n} flatten orders"),
                                 (self.rollbacks, "rolled back once", "rolled back {n} times"),
                                 (self.halts, "halted", "halted ({n} halt incidents)")):
            if items:
                parts.append(one if len(items) == 1 else many.format(n=len(items)))
        return "the runner " + (", ".join(parts) if parts else "took no protective action")


@dataclass(frozen=True)
class PnLImpact:
    """The position's mark-to-market PnL over the window against holding flat (exact, quote currency)."""

    start: pd.Timestamp
    end: pd.Timestamp
    mark_start: Decimal | None     # None: no bar had closed by the start (and nothing was held)
    mark_end: Decimal | None
    marked_at: pd.Timestamp | None  # the close of the bar marking the end (the journal may end before the window)
    position_start: Decimal        # base held at the start (fills at or before it, base fees deducted)
    position_end: Decimal
    carry: Decimal                 # position_start × (mark_end − mark_start)
    trading: Decimal               # the window's fills marked at mark_end, fees included
    fees: Decimal                  # fees of the window's fills, in quote (base fees at their fill's price)
    fills: int
    capital: float | None
    quote: str
    path: pd.DataFrame             # the window's start, then each journaled bar close in it: position, PnL

    @property
    def total(self) -> Decimal:
        return self.carry + self.trading

    @property
    def total_bps(self) -> float | None:
        return None if not self.capital else float(self.total) / self.capital * 1e4

    def sentence(self) -> str:
        bps = "" if self.total_bps is None else f" ({self.total_bps:+.1f} bps of {self.capital:,.0f} capital)"
        marked = "" if self.marked_at is None else f", marked at the {self.marked_at:%Y-%m-%d %H:%M} close"
        return (f"PnL over the window {float(self.total):+,.2f} {self.quote}{bps}{marked} against holding flat: "
                f"{float(self.carry):+,.2f} from the position held at the start, {float(self.trading):+,.2f} "
                f"from {self.fills} fill{'' if self.fills == 1 else 's'} in the window (fees {float(self.fees):,.2f})")


@dataclass(frozen=True)
class IncidentReport:
    """Everything the incident report shows (see the module docstring)."""

    journal: Path
    incident: dict[str, Any]
    state: str
    deployment: str | None
    symbol: str
    window: tuple[pd.Timestamp, pd.Timestamp]
    timeline: list[Event]
    context: MarketContext
    actions: RunnerActions
    pnl: PnLImpact | None   # None: an account-wide incident in a journal of several deployments

    @property
    def id(self) -> int:
        return int(self.incident["id"])

    @property
    def opened(self) -> pd.Timestamp:
        return _ts(self.incident["at"])

    def summary(self) -> str:
        """Return the one sentence the report opens with."""
        inc = self.incident
        who = f"deployment {self.deployment}" if inc["deployment"] else "the whole account"
        head = (f"Incident #{self.id} {inc['kind']} ({inc['severity']}) on {who} opened "
                f"{DAYS[self.opened.dayofweek]} {self.opened:%Y-%m-%d %H:%M} UTC")
        if inc["acknowledged_at"] is not None:
            head += (f", acknowledged by {inc['acknowledged_by']} after "
                     f"{_duration(int(inc['acknowledged_at']) - int(inc['at']))}")
        if inc["resolved_at"] is not None:
            head += f", resolved after {_duration(int(inc['resolved_at']) - int(inc['at']))} ({inc['resolution']})"
        else:
            head += ", still open"
        tail = [self.context.sentence(), self.actions.sentence()]
        if self.pnl is not None:
            tail.append(self.pnl.sentence())
        return head + ". " + "; ".join(tail) + "."

    def timeline_frame(self) -> pd.DataFrame:
        """Return the timeline as a table (time UTC, source, what, detail, this incident)."""
        return pd.DataFrame([{"time (UTC)": e.at.strftime("%Y-%m-%d %H:%M:%S"), "source": e.source, "what": e.what,
                              "detail": e.detail, "this": e.this} for e in self.timeline],
                            columns=["time (UTC)", "source", "what", "detail", "this"])

    def to_dict(self) -> dict[str, Any]:
        c, a, p = self.context, self.actions, self.pnl
        return {
            "journal": str(self.journal), "incident": {**self.incident, "at": _iso(self.incident["at"]),
                                                      "acknowledged_at": _iso(self.incident["acknowledged_at"]),
                                                      "resolved_at": _iso(self.incident["resolved_at"])},
            "state": self.state, "deployment": self.deployment, "symbol": self.symbol, "summary": self.summary(),
            "window": [self.window[0].isoformat(), self.window[1].isoformat()],
            "timeline": [{"at": e.at.isoformat(), "source": e.source, "what": e.what, "detail": e.detail,
                          "this": e.this} for e in self.timeline],
            "context": {"bucket": c.bucket, "bucket_label": c.bucket_label, "regime": c.regime,
                        "hour": c.hour.isoformat(), "figures": c.figures, "quantiles": c.quantiles,
                        "bands": c.bands, "map_sha256": c.map_sha256, "map_source": c.map_source,
                        "unavailable": c.unavailable},
            "actions": {"held_back": [t.isoformat() for t in a.held_back], "cancelled": a.cancelled,
                        "refused": a.refused, "flatten": a.flatten, "rollbacks": a.rollbacks, "halts": a.halts},
            "pnl": None if p is None else {
                "start": p.start.isoformat(), "end": p.end.isoformat(), "total": float(p.total),
                "carry": float(p.carry), "trading": float(p.trading), "fees": float(p.fees),
                "total_bps": p.total_bps, "capital": p.capital, "quote": p.quote, "fills": p.fills,
                "position_start": str(p.position_start), "position_end": str(p.position_end),
                "mark_start": None if p.mark_start is None else str(p.mark_start),
                "mark_end": None if p.mark_end is None else str(p.mark_end),
                "marked_at": None if p.marked_at is None else p.marked_at.isoformat()},
        }


def _ts(ms: int) -> pd.Timestamp:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


def _iso(ms: int | None) -> str | None:
    return None if ms is None else _ts(ms).isoformat()


def _duration(ms: int) -> str:
    minutes = ms / 60_000
    return f"{minutes:.0f} min" if minutes < 120 else f"{minutes / 60:.1f} h"


def _rows(con: sqlite3.Connection, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    return [dict(r) for r in con.execute(sql, args)]


def _symbol_of(con: sqlite3.Connection, deployment: str | None) -> str | None:
    rows = _rows(con, "SELECT DISTINCT symbol FROM orders WHERE deployment IS ? OR ? IS NULL", (deployment,
                                                                                                 deployment))
    if len(rows) == 1:
        return str(rows[0]["symbol"])
    models = _rows(con, "SELECT DISTINCT model FROM decisions WHERE deployment IS ? OR ? IS NULL",
                   (deployment, deployment))
    parts = str(models[0]["model"]).split(".") if len(models) == 1 else []
    if len(parts) == 3 and parts[1].count("-") == 1:  # <strategy>.<BASE-QUOTE>.<timeframe>
        return parts[1].replace("-", "/")
    return None


def _bar_ms(bars: list[dict[str, Any]]) -> int | None:
    times = np.array([int(b["open_time"]) for b in bars], dtype=np.int64)
    steps = np.diff(times)
    steps = steps[steps > 0]
    return int(steps.min()) if len(steps) else None


def _timeline(con: sqlite3.Connection, inc: dict[str, Any], dep: str | None, lo: int, hi: int,
              bars: list[dict[str, Any]], bar_ms: int | None) -> list[Event]:
    """Return every journaled event of ``dep`` (and account-wide ones) in ``[lo, hi]``, ordered by time."""
    ev: list[tuple[int, int, Event]] = []  # (ms, order among simultaneous events, event)

    def add(ms: int, rank: int, source: str, what: str, detail: str = "", this: bool = False) -> None:
        if lo <= ms <= hi:
            ev.append((ms, rank, Event(_ts(ms), source, what, detail, this)))

    for b in bars:
        closed = int(b["open_time"]) + (bar_ms or 0)
        add(closed, 0, "bar", f"bar {_ts(int(b['open_time'])):%H:%M} closed" if bar_ms else
            f"bar {_ts(int(b['open_time'])):%H:%M}",
            f"O {b['open']:,.2f} H {b['high']:,.2f} L {b['low']:,.2f} C {b['close']:,.2f}, volume {b['volume']:,.4g}")
    where_dep = "(deployment IS ? OR ? IS NULL)"
    for d in _rows(con, f"SELECT * FROM decisions WHERE {where_dep} AND decided_at BETWEEN ? AND ?",
                   (dep, dep, lo, hi)):
        note = f"; {d['note']}" if d["note"] else ""
        add(int(d["decided_at"]), 1, "decision", f"bar {_ts(int(d['bar_time'])):%H:%M} → target {d['target']:+.3f}",
            f"held {d['held_before']:+.3f}, v{d['version']}, {d['exec_state']}{note}"
            + (" (late)" if d["late"] else ""))
    for o in _rows(con, "SELECT e.at, e.state AS event, e.detail, o.* FROM order_events e JOIN orders o "
                        f"USING (client_order_id) WHERE {where_dep.replace('deployment', 'o.deployment')} "
                        "AND e.at BETWEEN ? AND ? ORDER BY e.seq", (dep, dep, lo, hi)):
        add(int(o["at"]), 2, "order", f"{o['purpose']} {o['side']} {o['amount']} {o['type']}: {o['event']}",
            f"{o['client_order_id']}" + (f"; {o['detail']}" if o["detail"] else ""))
    for f in _rows(con, f"SELECT * FROM fills WHERE {where_dep} AND at BETWEEN ? AND ? ORDER BY at, trade_id",
                   (dep, dep, lo, hi)):
        add(int(f["at"]), 3, "fill", f"{f['side']} {f['amount']} @ {f['price']}",
            f"fee {f['fee']} {f['fee_asset']}; trade {f['trade_id']}, order {f['client_order_id']}")
    for i in _rows(con, f"SELECT * FROM incidents WHERE {where_dep} OR deployment IS NULL ORDER BY id", (dep, dep)):
        this = int(i["id"]) == int(inc["id"])
        label = f"#{i['id']} {i['kind']}"
        add(int(i["at"]), 4, "incident", f"{label} opened ({i['severity']})", str(i["message"]), this)
        if i["acknowledged_at"] is not None:
            add(int(i["acknowledged_at"]), 5, "incident", f"{label} acknowledged", f"by {i['acknowledged_by']}", this)
        if i["resolved_at"] is not None:
            add(int(i["resolved_at"]), 6, "incident", f"{label} resolved", str(i["resolution"] or ""), this)
    for s in _rows(con, f"SELECT * FROM version_switches WHERE {where_dep} AND at BETWEEN ? AND ? ORDER BY seq",
                   (dep, dep, lo, hi)):
        add(int(s["at"]), 7, "switch", f"{s['model']}@{s['alias']}: v{s['from_version'] or '-'} → v{s['to_version']}",
            str(s["reason"]))
    by_time: dict[int, list[dict[str, Any]]] = {}
    for r in _rows(con, "SELECT * FROM balances WHERE kind = 'reconcile' AND at BETWEEN ? AND ? ORDER BY seq",
                   (lo, hi)):
        by_time.setdefault(int(r["at"]), []).append(r)
    for at, rows in by_time.items():
        rows = list({r["asset"]: r for r in rows}.values())  # several snapshots at one time: the last one
        diff = [r for r in rows if r["expected"] is not None and Decimal(r["total"]) != Decimal(r["expected"])]
        add(at, 8, "reconciliation", "balances differ from the journal" if diff else "balances match the journal",
            "; ".join(f"{r['asset']} {r['total']}" + (f" (journal {r['expected']})" if r in diff else "")
                      for r in rows))
    ev.sort(key=lambda x: (x[0], x[1]))
    return [e for _, _, e in ev]


def _actions(con: sqlite3.Connection, inc: dict[str, Any], dep: str | None, lo: int, hi: int) -> RunnerActions:
    where_dep = "(deployment IS ? OR ? IS NULL)"
    held: list[pd.Timestamp] = []
    if inc["severity"] in ("blocking", "halt"):
        until = hi + 1 if inc["resolved_at"] is None else int(inc["resolved_at"])  # decided while it was open
        for d in _rows(con, f"SELECT * FROM decisions WHERE {where_dep} AND decided_at >= ? AND decided_at < ? "
                            "AND exec_state NOT IN ('done', 'unchanged') ORDER BY bar_time",
                       (dep, dep, int(inc["at"]), until)):
            sent = con.execute("SELECT COUNT(*) FROM orders WHERE deployment = ? AND bar_time = ? AND purpose = "
                               "'trade'", (d["deployment"], d["bar_time"])).fetchone()[0]
            if not sent:
                held.append(_ts(int(d["bar_time"])))
    orders = _rows(con, "SELECT DISTINCT o.client_order_id, o.purpose, e.state FROM order_events e JOIN orders o "
                        f"USING (client_order_id) WHERE {where_dep.replace('deployment', 'o.deployment')} "
                        "AND e.at BETWEEN ? AND ?", (dep, dep, lo, hi))
    cancelled = sorted({o["client_order_id"] for o in orders if o["state"] == "canceled"})
    refused = sorted({o["client_order_id"] for o in orders if o["state"] in ("rejected", "not_placed")})
    flatten = sorted({o["client_order_id"] for o in orders if o["purpose"] == "flatten"})
    rollbacks = [f"v{s['from_version'] or '-'} → v{s['to_version']}: {s['reason']}" for s in _rows(
        con, f"SELECT * FROM version_switches WHERE {where_dep} AND at BETWEEN ? AND ? AND reason LIKE '%rollback%' "
             "ORDER BY seq", (dep, dep, lo, hi))]
    incidents = _rows(con, f"SELECT * FROM incidents WHERE ({where_dep} OR deployment IS NULL) AND at BETWEEN ? AND ? "
                           "ORDER BY id", (dep, dep, lo, hi))
    if not rollbacks:
        rollbacks = [f"#{i['id']} {i['message']}" for i in incidents if i["kind"] == "auto_rollback"]
    halts = [f"#{i['id']} {i['kind']}: {i['message']}" for i in incidents if i["severity"] == "halt"]
    return RunnerActions(held, cancelled, refused, flatten, rollbacks, halts)


def _mark(bars: list[dict[str, Any]], bar_ms: int | None, at: int) -> tuple[Decimal | None, int | None]:
    """Return the close of the last bar closed at or before ``at`` and its close time (None when none had)."""
    closed = [b for b in bars if int(b["open_time"]) + (bar_ms or 0) <= at]
    if not closed:
        return None, None
    return Decimal(repr(float(closed[-1]["close"]))), int(closed[-1]["open_time"]) + (bar_ms or 0)


def _pnl(con: sqlite3.Connection, dep: str, symbol: str, lo: int, hi: int, bars: list[dict[str, Any]],
         bar_ms: int | None, capital: float | None) -> PnLImpact:
    base, quote = symbol.split("/")
    q0 = Decimal(0)
    window: list[tuple[int, Decimal, Decimal, Decimal]] = []  # (at, Δbase, Δquote, fee in quote)
    for f in _rows(con, "SELECT * FROM fills WHERE deployment = ? AND at <= ? ORDER BY at, trade_id", (dep, hi)):
        key = f"fills[trade_id={f['trade_id']}]"
        sign = 1 if f["side"] == "buy" else -1
        amount = parse_decimal(f["amount"], f"{key}.amount", positive=True)
        cost = parse_decimal(f["cost"], f"{key}.cost", nonnegative=True)
        fee = parse_decimal(f["fee"], f"{key}.fee", nonnegative=True)
        price = parse_decimal(f["price"], f"{key}.price", positive=True)
        if fee and f["fee_asset"] not in (base, quote):
            raise JournalError(f"{key}.fee_asset", f"{base} or {quote}", f["fee_asset"])
        d_base = sign * amount - (fee if f["fee_asset"] == base else 0)
        d_quote = -sign * cost - (fee if f["fee_asset"] == quote else 0)
        if int(f["at"]) <= lo:
            q0 += d_base
        else:
            window.append((int(f["at"]), d_base, d_quote, fee * price if f["fee_asset"] == base else fee))
    p0, _ = _mark(bars, bar_ms, lo)
    p1, marked_at = _mark(bars, bar_ms, hi)
    if p1 is None and (q0 or window):
        raise JournalError("bars", f"a closed bar of deployment {dep} by {_ts(hi)} to mark its position",
                           "none")
    start_price = p0 if p0 is not None else (p1 or Decimal(0))  # nothing had closed: nothing was held either
    carry = q0 * ((p1 or Decimal(0)) - start_price)
    trading = sum((db * (p1 or Decimal(0)) + dq for _, db, dq, _ in window), Decimal(0))
    fees = sum((fq for *_, fq in window), Decimal(0))
    path = [{"at": _ts(lo), "position": float(q0), "pnl": 0.0}]
    for b in bars:  # the same PnL at each bar close inside the window
        t = int(b["open_time"]) + (bar_ms or 0)
        if lo < t <= hi:
            mark = Decimal(repr(float(b["close"])))
            held = q0 + sum((db for at, db, _, _ in window if at <= t), Decimal(0))
            cash = sum((dq for at, _, dq, _ in window if at <= t), Decimal(0))
            path.append({"at": _ts(t), "position": float(held), "pnl": float(held * mark + cash - q0 * start_price)})
    return PnLImpact(start=_ts(lo), end=_ts(hi), mark_start=p0, mark_end=p1,
                     marked_at=None if marked_at is None else _ts(marked_at), position_start=q0,
                     position_end=q0 + sum((db for _, db, _, _ in window), Decimal(0)), carry=carry, trading=trading,
                     fees=fees, fills=len(window), capital=capital, quote=quote,
                     path=pd.DataFrame(path, columns=["at", "position", "pnl"]))


def _capital(path: Path, dep: str) -> float | None:
    from toolkit.attribution.journal import read_journal
    from toolkit.attribution.pnl import infer_capital

    try:
        return infer_capital(read_journal(path, deployment=dep))
    except JournalError:
        return None


def _check_hours(hours: object) -> None:
    if isinstance(hours, bool) or not (isinstance(hours, int | float) and 0 < float(hours) <= 24 * 14):
        raise ConfigurationError("hours", "a window of more than 0 and at most 336 hours", hours)


def _incident_row(con: sqlite3.Connection, path: Path, incident_id: object) -> dict[str, Any]:
    if isinstance(incident_id, bool) or not isinstance(incident_id, int):
        raise ConfigurationError("incident", "an incident id (an integer)", incident_id)
    rows = _rows(con, "SELECT * FROM incidents WHERE id = ?", (incident_id,))
    if not rows:
        ids = [int(r["id"]) for r in _rows(con, "SELECT id FROM incidents ORDER BY id")]
        shown = (f"ids {ids[0]}…{ids[-1]}" if len(ids) > 10 else f"ids {ids}") if ids else "it has no incidents"
        raise ConfigurationError("incident", f"the id of an incident in {path} ({shown})", incident_id)
    return rows[0]


def check_incident(journal: str | Path, incident_id: int, hours: float = 6.0) -> dict[str, Any]:
    """Return the incident's row; raise as :func:`incident_report` does for a bad journal, id or window."""
    path = Path(journal)
    _check_hours(hours)
    con = connect_journal(path, _MORE_COLUMNS, schema=3)
    try:
        return _incident_row(con, path, incident_id)
    except sqlite3.DatabaseError as exc:
        raise JournalError("journal", "a readable runner journal", f"{path}: {exc}") from None
    finally:
        con.close()


def incident_report(journal: str | Path, incident_id: int, hours: float = 6.0, deployment: str | None = None,
                    symbol: str | None = None, capital: float | None = None, regime_days: int = 28,
                    store: Any = None) -> IncidentReport:
    """Build the report of incident ``incident_id`` from the runner's ``journal`` (read-only).

    Parameters
    ----------
    journal
        The runner's journal (SQLite).
    incident_id
        The incident (``runner incidents`` lists the ids).
    hours
        The window: this many hours before the incident opened to this many after it was resolved
        (or after it opened, while it is open).
    deployment
        For an account-wide incident in a journal of several deployments: whose orders and PnL to show.
    symbol
        The market (default: the deployment's orders' symbol, else its model's name).
    capital
        The deployment's capital for the PnL in bps (default: inferred from its first order from flat).
    regime_days
        Days of 1-minute bars before the incident's hour the regime map is measured on.

    Raises
    ------
    ConfigurationError
        No incident ``incident_id`` in the journal; a window that is not positive; no deployment or symbol
        to be found.
    JournalError
        The file is not a runner journal, or holds a malformed amount.
    """
    path = Path(journal)
    _check_hours(hours)
    con = connect_journal(path, _MORE_COLUMNS, schema=3)
    try:
        inc = _incident_row(con, path, incident_id)
        deps = [str(r["deployment"]) for r in _rows(con, "SELECT DISTINCT deployment FROM decisions ORDER BY 1")]
        dep = inc["deployment"] or deployment or (deps[0] if len(deps) == 1 else None)
        if deployment is not None and inc["deployment"] and deployment != inc["deployment"]:
            raise ConfigurationError("deployment", f"the incident's own deployment {inc['deployment']!r}", deployment)
        if deployment is not None and dep not in deps:
            raise ConfigurationError("deployment", f"a deployment of the journal {deps}", deployment)
        sym = symbol or _symbol_of(con, dep)
        if sym is None or sym.count("/") != 1:
            raise ConfigurationError("symbol", "a market such as BTC/USDT (the journal's orders do not say which)",
                                     sym)
        step = pd.Timedelta(hours=float(hours))
        lo = int(inc["at"]) - int(step / pd.Timedelta(milliseconds=1))
        hi = int(inc["resolved_at"] if inc["resolved_at"] is not None else inc["at"]) + int(
            step / pd.Timedelta(milliseconds=1))
        bars = _rows(con, "SELECT * FROM bars WHERE deployment IS ? ORDER BY open_time", (dep,))
        bar_ms = _bar_ms(bars)
        timeline = _timeline(con, inc, dep, lo, hi, bars, bar_ms)
        actions = _actions(con, inc, dep, lo, hi)
        pnl = None
        if dep is not None:
            cap = capital if capital is not None else _capital(path, dep)
            pnl = _pnl(con, dep, sym, lo, hi, bars, bar_ms, cap)
    except sqlite3.DatabaseError as exc:
        raise JournalError("journal", "a readable runner journal", f"{path}: {exc}") from None
    finally:
        con.close()
    state = "resolved" if inc["resolved_at"] is not None else "acknowledged" if inc["acknowledged_at"] else "open"
    context = market_context(sym, _ts(int(inc["at"])), _ts(lo), _ts(hi), regime_days, store)
    return IncidentReport(journal=path, incident=inc, state=state, deployment=dep, symbol=sym,
                          window=(_ts(lo), _ts(hi)), timeline=timeline, context=context, actions=actions, pnl=pnl)
