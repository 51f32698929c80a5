"""The runner's journal: one SQLite file (WAL, synchronous FULL), schema-versioned by ``PRAGMA user_version``.

Every write is one transaction (``BEGIN IMMEDIATE`` … ``COMMIT``): a process killed in the
middle of a write leaves the journal as it was before it. A commit survives the process being
killed once ``COMMIT`` returns, whatever its durability; a **durable** one (the default:
``synchronous=FULL``) also survives the machine losing power, its WAL ``fsync``ed before ``COMMIT``
returns. What can be derived again after a power loss is written without that ``fsync``
(``durable=False``, ``synchronous=NORMAL`` for that transaction): the heartbeat, a decision and its
bar (decided again from the same closed bars), the day's first equity mark. Its WAL frames reach the
disk with the next durable commit, which in the runner always precedes an order: an order's intent
is durable, and so is everything journaled before it. Amounts, prices and fees are
stored as decimal text (exact); times are epoch milliseconds of the exchange's clock.

Tables: ``decisions`` (one per deployment and closed bar), ``orders`` (one per client
order id, its current state) and ``order_events`` (every state transition with its time),
``fills`` (unique per symbol and trade id), ``balances`` (snapshots; ``baseline`` rows are
the account before the runner's first order), ``incidents``, ``version_switches``,
``bars`` (the closed bars decided on), ``alerts`` (every alert the loop raised) and ``meta`` (watermarks,
heartbeat, de-risk actions in force).

The migrations are an ordered list; a journal at ``user_version`` k gets migrations k+1…
applied in one transaction each. A journal newer than this code is refused.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from runner import failpoints
from toolkit.errors import ConfigurationError

__all__ = ["MIGRATIONS", "OPEN_STATES", "TERMINAL_STATES", "Journal", "Position"]

MIGRATIONS: list[str] = [
    # 1: the first schema
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE bars (
        deployment TEXT NOT NULL, open_time INTEGER NOT NULL,
        open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL, volume REAL NOT NULL,
        PRIMARY KEY (deployment, open_time));
    CREATE TABLE decisions (
        deployment TEXT NOT NULL, bar_time INTEGER NOT NULL, decided_at INTEGER NOT NULL,
        decision_price TEXT NOT NULL, direction REAL NOT NULL, raw_target REAL NOT NULL, target REAL NOT NULL,
        held_before REAL NOT NULL, position_qty TEXT NOT NULL, model TEXT NOT NULL, version TEXT NOT NULL,
        late INTEGER NOT NULL DEFAULT 0, exec_state TEXT NOT NULL, order_delta TEXT, note TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (deployment, bar_time));
    CREATE TABLE orders (
        client_order_id TEXT PRIMARY KEY, deployment TEXT NOT NULL, bar_time INTEGER NOT NULL, leg INTEGER NOT NULL,
        symbol TEXT NOT NULL, side TEXT NOT NULL, type TEXT NOT NULL, amount TEXT NOT NULL,
        arrival_price TEXT NOT NULL, intent_at INTEGER NOT NULL, state TEXT NOT NULL, exchange_id TEXT,
        filled TEXT NOT NULL DEFAULT '0', average TEXT, updated_at INTEGER NOT NULL, version TEXT NOT NULL,
        UNIQUE (deployment, bar_time, leg));
    CREATE TABLE order_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, client_order_id TEXT NOT NULL, at INTEGER NOT NULL,
        state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '');
    CREATE TABLE fills (
        symbol TEXT NOT NULL, trade_id TEXT NOT NULL, exchange_order_id TEXT, client_order_id TEXT,
        deployment TEXT, side TEXT NOT NULL, price TEXT NOT NULL, amount TEXT NOT NULL, cost TEXT NOT NULL,
        fee TEXT NOT NULL, fee_asset TEXT NOT NULL, at INTEGER NOT NULL, recorded_at INTEGER NOT NULL,
        PRIMARY KEY (symbol, trade_id));
    CREATE TABLE balances (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, kind TEXT NOT NULL, asset TEXT NOT NULL,
        free TEXT NOT NULL, used TEXT NOT NULL, total TEXT NOT NULL, expected TEXT);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, deployment TEXT, kind TEXT NOT NULL,
        severity TEXT NOT NULL, message TEXT NOT NULL, resolved_at INTEGER, resolution TEXT);
    CREATE TABLE version_switches (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, deployment TEXT NOT NULL, model TEXT NOT NULL,
        alias TEXT NOT NULL, from_version TEXT, to_version TEXT NOT NULL, reason TEXT NOT NULL);
    CREATE INDEX orders_by_bar ON orders (deployment, bar_time);
    CREATE INDEX fills_by_order ON fills (exchange_order_id);
    """,
    # 2: what an order is for (a decision's ``trade``, a ``flatten``, a protective ``stop``); the bar boundary
    # of a version switch (the first bar the new version decides)
    """
    ALTER TABLE orders ADD COLUMN purpose TEXT NOT NULL DEFAULT 'trade';
    ALTER TABLE version_switches ADD COLUMN boundary INTEGER;
    """,
    # 3: an incident's acknowledgement (open -> acknowledged -> resolved): who took it and when
    """
    ALTER TABLE incidents ADD COLUMN acknowledged_at INTEGER;
    ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
    """,
    # 4: the alerts the loop raised (runner.alerting): every field of the alert, the incident it opened and
    # whether each sink took it
    """
    CREATE TABLE alerts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, deployment TEXT NOT NULL, rule TEXT NOT NULL,
        value REAL NOT NULL, threshold REAL NOT NULL, threshold_source TEXT NOT NULL, bucket INTEGER NOT NULL,
        regime TEXT NOT NULL, severity TEXT NOT NULL, action TEXT NOT NULL, runbook TEXT NOT NULL,
        message TEXT NOT NULL, suppressed INTEGER NOT NULL DEFAULT 0, incident_id INTEGER,
        delivered TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX alerts_by_rule ON alerts (deployment, rule, at);
    """,
]

#: order states: ``intent`` (journaled, maybe sent), ``unknown`` (sent, outcome unknown), the exchange's
#: ``open``/``closed``/``canceled``/``expired``/``rejected`` (ccxt), ``not_placed`` (the exchange never had it)
OPEN_STATES = ("intent", "unknown", "open")
TERMINAL_STATES = ("closed", "canceled", "expired", "rejected", "not_placed")
SEVERITIES = ("info", "warning", "blocking", "halt")


@dataclass(frozen=True)
class Position:
    """A deployment's holdings derived from its journaled fills (net of fees)."""

    base: Decimal
    quote_flow: Decimal  # quote received minus quote spent, fees in quote included


class Journal:
    """The runner's journal (one per runner).

    Parameters
    ----------
    path
        The SQLite file (created with its directory).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.con.row_factory = sqlite3.Row
        self._positions: dict[tuple[str, str, str], tuple[int, Position]] = {}  # as of a fill rowid (position())
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=FULL")
        self._durable = True  # the connection's synchronous setting is FULL (tx)
        self.migrate()

    # --- schema ------------------------------------------------------------------------------------
    @property
    def schema_version(self) -> int:
        return int(self.con.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> int:
        """Apply the migrations this journal has not had, each in its own transaction; return the version."""
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise ConfigurationError("journal", f"a journal of schema version <= {len(MIGRATIONS)}",
                                     f"{self.path} at version {current} (written by newer code)")
        for target in range(current + 1, len(MIGRATIONS) + 1):
            with self.tx() as con:  # the write lock is held: read the version again (another process may migrate)
                if int(con.execute("PRAGMA user_version").fetchone()[0]) >= target:
                    continue
                for stmt in MIGRATIONS[target - 1].split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                con.execute(f"PRAGMA user_version = {target}")
        return self.schema_version

    def close(self) -> None:
        self.con.close()

    @contextmanager
    def tx(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Run the block as one transaction: all of it is committed, or nothing.

        ``durable=False``: committed without the WAL's ``fsync`` (see the module docstring).
        """
        if self._durable != durable:  # SQLite refuses to change it inside a transaction: set it before BEGIN
            self.con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def rows(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.con.execute(sql, args)]

    # --- meta -------------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str, con: sqlite3.Connection | None = None, durable: bool = True) -> None:
        """Set ``key``, in ``con``'s transaction or in one of its own (``durable``: see :meth:`tx`)."""
        sql = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        if con is not None:
            con.execute(sql, (key, value))
        else:
            with self.tx(durable) as c:
                c.execute(sql, (key, value))

    # --- bars and decisions -------------------------------------------------------------------------
    def record_bars(self, deployment: str, bars: list[tuple[int, float, float, float, float, float]],
                    con: sqlite3.Connection | None = None) -> None:
        sql, rows = "INSERT OR IGNORE INTO bars VALUES (?, ?, ?, ?, ?, ?, ?)", [(deployment, *b) for b in bars]
        if con is not None:
            con.executemany(sql, rows)
        else:
            with self.tx() as c:
                c.executemany(sql, rows)

    def last_decision(self, deployment: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM decisions WHERE deployment = ? ORDER BY bar_time DESC LIMIT 1", (deployment,))
        return rows[0] if rows else None

    def decisions(self, deployment: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM decisions WHERE deployment = ? ORDER BY bar_time", (deployment,))

    def record_decision(self, row: dict[str, Any], con: sqlite3.Connection | None = None) -> None:
        """Journal one decision (one per deployment and bar; a second one for the same bar is an error).

        ``con``: inside the caller's transaction (the runner journals the decision, its bar and the
        decision it supersedes in one commit); else in a transaction of its own.
        """
        if con is None:
            with self.tx() as c:
                return self.record_decision(row, c)
        cols = list(row)
        con.execute(f"INSERT INTO decisions ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                    [row[c] for c in cols])
        failpoints.hit("decision_tx")

    def set_exec_state(self, deployment: str, bar_time: int, state: str, note: str = "",
                       con: sqlite3.Connection | None = None) -> None:
        sql = "UPDATE decisions SET exec_state = ?, note = ? WHERE deployment = ? AND bar_time = ?"
        if con is not None:
            con.execute(sql, (state, note, deployment, bar_time))
        else:
            with self.tx() as c:
                c.execute(sql, (state, note, deployment, bar_time))

    # --- orders -----------------------------------------------------------------------------------
    def record_intent(self, order: dict[str, Any], order_delta: Decimal | None = None) -> None:
        """Journal an order before it is sent (state ``intent``), with the decision's delta on its first leg."""
        cols = list(order)
        with self.tx() as con:
            con.execute(f"INSERT INTO orders ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                        [order[c] for c in cols])
            con.execute("INSERT INTO order_events (client_order_id, at, state, detail) VALUES (?, ?, 'intent', ?)",
                        (order["client_order_id"], order["intent_at"], f"arrival {order['arrival_price']}"))
            if order_delta is not None:
                con.execute("UPDATE decisions SET order_delta = ?, exec_state = 'executing' "
                            "WHERE deployment = ? AND bar_time = ?",
                            (str(order_delta), order["deployment"], order["bar_time"]))
            failpoints.hit("intent_tx")

    def update_order(self, client_order_id: str, state: str, at: int, *, exchange_id: str | None = None,
                     filled: Decimal | None = None, average: Decimal | None = None, detail: str = "") -> None:
        """Record an order's new state (and the transition) in one transaction."""
        with self.tx() as con:
            con.execute("UPDATE orders SET state = ?, updated_at = ?, exchange_id = COALESCE(?, exchange_id), "
                        "filled = COALESCE(?, filled), average = COALESCE(?, average) WHERE client_order_id = ?",
                        (state, at, exchange_id, None if filled is None else str(filled),
                         None if average is None else str(average), client_order_id))
            con.execute("INSERT INTO order_events (client_order_id, at, state, detail) VALUES (?, ?, ?, ?)",
                        (client_order_id, at, state, detail[:2000]))
            failpoints.hit("order_update_tx")

    def note_order_event(self, client_order_id: str, state: str, at: int, detail: str = "") -> None:
        """Record an event of an order without changing its state (e.g. ``lookup_miss``)."""
        with self.tx() as con:
            con.execute("INSERT INTO order_events (client_order_id, at, state, detail) VALUES (?, ?, ?, ?)",
                        (client_order_id, at, state, detail[:2000]))

    def order_event_count(self, client_order_id: str, state: str) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM order_events WHERE client_order_id = ? AND state = ?",
                                    (client_order_id, state)).fetchone()[0])

    def orders(self, deployment: str | None = None, states: tuple[str, ...] | None = None,
               bar_time: int | None = None, purpose: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM orders WHERE 1 = 1", list[Any]()
        if purpose is not None:
            sql += " AND purpose = ?"
            args.append(purpose)
        if deployment is not None:
            sql += " AND deployment = ?"
            args.append(deployment)
        if states is not None:
            sql += f" AND state IN ({', '.join('?' * len(states))})"
            args.extend(states)
        if bar_time is not None:
            sql += " AND bar_time = ?"
            args.append(bar_time)
        return self.rows(sql + " ORDER BY intent_at, leg", tuple(args))

    def order_by_exchange_id(self, exchange_id: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT * FROM orders WHERE exchange_id = ?", (exchange_id,))
        return rows[0] if rows else None

    # --- fills ------------------------------------------------------------------------------------
    def record_fills(self, fills: list[dict[str, Any]], watermark: tuple[str, int] | None = None) -> int:
        """Journal fills (a trade id already journaled is skipped); return how many were new.

        ``watermark`` (meta key, time) moves in the same transaction.
        """
        cols = ("symbol", "trade_id", "exchange_order_id", "client_order_id", "deployment", "side", "price",
                "amount", "cost", "fee", "fee_asset", "at", "recorded_at")
        with self.tx() as con:
            before = con.total_changes
            for i, f in enumerate(fills):
                con.execute(f"INSERT OR IGNORE INTO fills ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                            [f[c] for c in cols])
                if i == 0:
                    failpoints.hit("fills_tx")
            new = con.total_changes - before
            if watermark is not None:
                self.set_meta(watermark[0], str(watermark[1]), con)
        return new

    def fills(self, deployment: str | None = None) -> list[dict[str, Any]]:
        if deployment is None:
            return self.rows("SELECT * FROM fills ORDER BY at, trade_id")
        return self.rows("SELECT * FROM fills WHERE deployment = ? ORDER BY at, trade_id", (deployment,))

    def position(self, deployment: str, base: str, quote: str) -> Position:
        """Return the deployment's base holdings and quote flow from its fills (fees deducted in their asset).

        Fills are only ever inserted, and the sums are exact (Decimal), so the position is kept as of the
        last committed fill read and only the fills journaled since (by any process) are added on a call.
        """
        key = (deployment, base, quote)
        seen, pos = self._positions.get(key, (0, Position(Decimal(0), Decimal(0))))
        rows = self.con.execute("SELECT rowid, side, amount, cost, fee, fee_asset FROM fills "
                                "WHERE deployment = ? AND rowid > ? ORDER BY rowid", (deployment, seen)).fetchall()
        if not rows:
            return pos
        qty, flow = pos.base, pos.quote_flow
        for _, side, amount, cost, fee, fee_asset in rows:
            sign = 1 if side == "buy" else -1
            qty += sign * Decimal(amount)
            flow -= sign * Decimal(cost)
            if fee_asset == base:
                qty -= Decimal(fee)
            elif fee_asset == quote:
                flow -= Decimal(fee)
        pos = Position(base=qty, quote_flow=flow)
        if not self.con.in_transaction:  # a fill read inside an open transaction may yet be rolled back
            self._positions[key] = (int(rows[-1][0]), pos)
        return pos

    # --- balances ---------------------------------------------------------------------------------
    def baseline(self) -> dict[str, Decimal]:
        return {r["asset"]: Decimal(r["total"]) for r in self.rows("SELECT * FROM balances WHERE kind = 'baseline'")}

    def record_balances(self, at: int, kind: str, rows: dict[str, tuple[Decimal, Decimal, Decimal]],
                        expected: dict[str, Decimal] | None = None) -> None:
        with self.tx() as con:
            for asset, (free, used, total) in sorted(rows.items()):
                exp = None if expected is None or asset not in expected else str(expected[asset])
                con.execute("INSERT INTO balances (at, kind, asset, free, used, total, expected) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?)", (at, kind, asset, str(free), str(used), str(total), exp))

    # --- incidents and version switches -------------------------------------------------------------
    def open_incident(self, at: int, kind: str, severity: str, message: str, deployment: str | None = None) -> int:
        """Open an incident unless one of the same kind and deployment is still open; return its id."""
        if severity not in SEVERITIES:
            raise ValueError(f"severity: expected one of {SEVERITIES}, found {severity!r}")
        with self.tx() as con:
            row = con.execute("SELECT id FROM incidents WHERE kind = ? AND deployment IS ? AND resolved_at IS NULL",
                              (kind, deployment)).fetchone()
            if row is not None:
                return int(row[0])
            cur = con.execute("INSERT INTO incidents (at, deployment, kind, severity, message) VALUES (?, ?, ?, ?, ?)",
                              (at, deployment, kind, severity, message[:4000]))
            return int(cur.lastrowid or 0)

    def resolve_incidents(self, at: int, kind: str, deployment: str | None, resolution: str) -> int:
        with self.tx() as con:
            cur = con.execute("UPDATE incidents SET resolved_at = ?, resolution = ? "
                              "WHERE kind = ? AND deployment IS ? AND resolved_at IS NULL",
                              (at, resolution, kind, deployment))
            return cur.rowcount

    def resolve_incident(self, incident_id: int, at: int, resolution: str) -> bool:
        with self.tx() as con:
            cur = con.execute("UPDATE incidents SET resolved_at = ?, resolution = ? "
                              "WHERE id = ? AND resolved_at IS NULL",
                              (at, resolution, incident_id))
            return cur.rowcount == 1

    def acknowledge_incident(self, incident_id: int, at: int, by: str) -> bool:
        """Mark an open, not yet acknowledged incident as taken by ``by``; return False when there is none."""
        with self.tx() as con:
            cur = con.execute("UPDATE incidents SET acknowledged_at = ?, acknowledged_by = ? "
                              "WHERE id = ? AND resolved_at IS NULL AND acknowledged_at IS NULL",
                              (at, by[:200], incident_id))
            return cur.rowcount == 1

    def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        where = " WHERE resolved_at IS NULL" if open_only else ""
        return self.rows(f"SELECT * FROM incidents{where} ORDER BY id")

    def blocking(self, deployment: str) -> list[dict[str, Any]]:
        """Return the open incidents that block new orders of ``deployment`` (its own and account-wide ones)."""
        return self.rows("SELECT * FROM incidents WHERE resolved_at IS NULL AND severity IN ('blocking', 'halt') "
                         "AND (deployment IS NULL OR deployment = ?) ORDER BY id", (deployment,))

    def blocking_halt(self, deployment: str) -> list[dict[str, Any]]:
        """Return the open ``halt`` incidents of ``deployment`` itself (it stays flat and decides nothing)."""
        return self.rows("SELECT * FROM incidents WHERE resolved_at IS NULL AND severity = 'halt' "
                         "AND deployment = ? ORDER BY id", (deployment,))

    def record_alert(self, alert: dict[str, Any], at: int, incident_id: int | None, delivered: dict[str, bool]) -> int:
        """Journal one alert (``Alert.to_dict()``), the incident it opened and each sink's answer; return its seq."""
        cols = ("deployment", "rule", "value", "threshold", "threshold_source", "bucket", "regime", "severity",
                "action", "runbook", "message", "suppressed")
        with self.tx() as con:
            cur = con.execute(f"INSERT INTO alerts (at, {', '.join(cols)}, incident_id, delivered) "
                              f"VALUES (?, {', '.join('?' * len(cols))}, ?, ?)",
                              (at, *[alert[c] for c in cols], incident_id, json.dumps(delivered, sort_keys=True)))
            return int(cur.lastrowid or 0)

    def alerts(self, deployment: str | None = None) -> list[dict[str, Any]]:
        if deployment is None:
            return self.rows("SELECT * FROM alerts ORDER BY seq")
        return self.rows("SELECT * FROM alerts WHERE deployment = ? ORDER BY seq", (deployment,))

    def record_switch(self, at: int, deployment: str, model: str, alias: str, from_version: str | None,
                      to_version: str, reason: str, boundary: int | None = None) -> None:
        with self.tx() as con:
            con.execute("INSERT INTO version_switches (at, deployment, model, alias, from_version, to_version, "
                        "reason, boundary) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (at, deployment, model, alias, from_version, to_version, reason, boundary))
            failpoints.hit("switch_tx")

    def switches(self, deployment: str | None = None) -> list[dict[str, Any]]:
        if deployment is None:
            return self.rows("SELECT * FROM version_switches ORDER BY seq")
        return self.rows("SELECT * FROM version_switches WHERE deployment = ? ORDER BY seq", (deployment,))

    def current_version(self, deployment: str) -> str | None:
        rows = self.rows("SELECT to_version FROM version_switches WHERE deployment = ? ORDER BY seq DESC LIMIT 1",
                         (deployment,))
        return str(rows[0]["to_version"]) if rows else None
