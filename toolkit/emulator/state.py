"""Persistent emulator state in SQLite (WAL): balances, orders, trades and the clock.

A restarted emulator opened on the same file continues where it stopped: the
replay time, the order and trade id counters, open orders and their locked
funds all come back. Amounts are stored as decimal strings, never floats.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Any

__all__ = ["OPEN_STATUSES", "STOP_TYPES", "Order", "OrderList", "State", "Trade"]

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
#: Order types that wait for their stopPrice before they work (Binance's "algo" orders).
STOP_TYPES = ("STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS balances (asset TEXT PRIMARY KEY, free TEXT NOT NULL, locked TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orders (
    order_id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, client_order_id TEXT NOT NULL,
    side TEXT NOT NULL, type TEXT NOT NULL, time_in_force TEXT NOT NULL, price TEXT NOT NULL,
    orig_qty TEXT NOT NULL, executed_qty TEXT NOT NULL, cum_quote TEXT NOT NULL, status TEXT NOT NULL,
    time INTEGER NOT NULL, update_time INTEGER NOT NULL, locked TEXT NOT NULL, lock_asset TEXT NOT NULL,
    orig_quote_qty TEXT NOT NULL, stop_price TEXT NOT NULL DEFAULT '0',
    order_list_id INTEGER NOT NULL DEFAULT -1, working_time INTEGER NOT NULL DEFAULT -1
);
CREATE INDEX IF NOT EXISTS orders_client ON orders (symbol, client_order_id);
CREATE INDEX IF NOT EXISTS orders_status ON orders (status);
CREATE TABLE IF NOT EXISTS trades (
    id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL, symbol TEXT NOT NULL, price TEXT NOT NULL,
    qty TEXT NOT NULL, quote_qty TEXT NOT NULL, commission TEXT NOT NULL, commission_asset TEXT NOT NULL,
    time INTEGER NOT NULL, is_buyer INTEGER NOT NULL, is_maker INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS trades_symbol ON trades (symbol, id);
CREATE INDEX IF NOT EXISTS trades_order ON trades (order_id);
CREATE TABLE IF NOT EXISTS order_lists (
    order_list_id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, list_client_order_id TEXT NOT NULL,
    contingency_type TEXT NOT NULL, list_status_type TEXT NOT NULL, list_order_status TEXT NOT NULL,
    transaction_time INTEGER NOT NULL, order_ids TEXT NOT NULL
);
"""
#: Columns added after the first release, with the statement that adds them to an older file.
_MIGRATIONS = {
    "stop_price": "ALTER TABLE orders ADD COLUMN stop_price TEXT NOT NULL DEFAULT '0'",
    "order_list_id": "ALTER TABLE orders ADD COLUMN order_list_id INTEGER NOT NULL DEFAULT -1",
    "working_time": "ALTER TABLE orders ADD COLUMN working_time INTEGER NOT NULL DEFAULT -1",
}

_DECIMAL_ORDER = {"price", "orig_qty", "executed_qty", "cum_quote", "locked", "orig_quote_qty", "stop_price"}
_DECIMAL_TRADE = {"price", "qty", "quote_qty", "commission"}


@dataclass
class Order:
    """One order as the matching engine sees it (amounts are Decimals)."""

    order_id: int
    symbol: str
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    executed_qty: Decimal
    cum_quote: Decimal
    status: str
    time: int
    update_time: int
    locked: Decimal
    lock_asset: str
    orig_quote_qty: Decimal
    stop_price: Decimal = Decimal(0)
    order_list_id: int = -1
    #: when the order went on the book; -1 for a stop order whose stopPrice has not been reached
    working_time: int = -1

    @property
    def remaining(self) -> Decimal:
        """Quantity still to fill."""
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        """True while the order can still fill."""
        return self.status in OPEN_STATUSES

    @property
    def is_stop(self) -> bool:
        """True for STOP_LOSS(_LIMIT) and TAKE_PROFIT(_LIMIT) orders."""
        return self.type in STOP_TYPES

    @property
    def is_working(self) -> bool:
        """True once the order is on the book (always, except for a stop order not yet triggered)."""
        return self.working_time >= 0

    @property
    def triggers_upwards(self) -> bool:
        """True when the stop triggers on a price at or above stopPrice (a stop-loss buy, take-profit sell)."""
        return (self.side == "BUY") == self.type.startswith("STOP_LOSS")


@dataclass
class OrderList:
    """An OCO order list: two orders of which the first to work cancels the other."""

    order_list_id: int
    symbol: str
    list_client_order_id: str
    contingency_type: str
    list_status_type: str
    list_order_status: str
    transaction_time: int
    order_ids: list[int]


@dataclass
class Trade:
    """One fill of an order."""

    id: int
    order_id: int
    symbol: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool


def _row_order(row: sqlite3.Row) -> Order:
    data: dict[str, Any] = {k: (Decimal(row[k]) if k in _DECIMAL_ORDER else row[k]) for k in row.keys()}
    return Order(**data)


def _row_trade(row: sqlite3.Row) -> Trade:
    data: dict[str, Any] = {k: (Decimal(row[k]) if k in _DECIMAL_TRADE else row[k]) for k in row.keys()}
    data["is_buyer"], data["is_maker"] = bool(data["is_buyer"]), bool(data["is_maker"])
    return Trade(**data)


_ORDER_COLS = [f.name for f in fields(Order)]
_TRADE_COLS = [f.name for f in fields(Trade)]
_INSERT_ORDER = (f"INSERT OR REPLACE INTO orders ({', '.join(_ORDER_COLS)}) "
                 f"VALUES ({', '.join(':' + c for c in _ORDER_COLS)})")
_INSERT_TRADE = f"INSERT INTO trades ({', '.join(_TRADE_COLS)}) VALUES ({', '.join(':' + c for c in _TRADE_COLS)})"


def _params(obj: Order | Trade) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in _ORDER_COLS if isinstance(obj, Order) else _TRADE_COLS:
        v = getattr(obj, name)
        out[name] = str(v) if isinstance(v, Decimal) else v
    return out


class State:
    """The SQLite file behind one emulator; not thread-safe (the engine serialises access)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        have = {r["name"] for r in self.db.execute("PRAGMA table_info(orders)").fetchall()}
        for column, statement in _MIGRATIONS.items():
            if column not in have:
                self.db.execute(statement)
                if column == "working_time":  # orders of an older file were all working from their time
                    self.db.execute("UPDATE orders SET working_time=time")
        self.db.execute("BEGIN")

    # -- transactions -------------------------------------------------------------------------
    def commit(self) -> None:
        """Make every change since the last commit durable and open the next transaction."""
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")

    def rollback(self) -> None:
        """Drop every change since the last commit."""
        self.db.execute("ROLLBACK")
        self.db.execute("BEGIN")

    def close(self) -> None:
        """Commit and close the file."""
        self.db.execute("COMMIT")
        self.db.close()

    @property
    def is_new(self) -> bool:
        """True when the file has never been initialised with balances and a clock."""
        return self.get_meta("replay_ms") is None

    # -- meta -----------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        """Return a stored setting (or None)."""
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_metas(self, values: dict[str, str]) -> None:
        """Store several settings at once."""
        self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    # -- balances ---------------------------------------------------------------------------------
    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Return ``{asset: (free, locked)}``."""
        rows = self.db.execute("SELECT asset, free, locked FROM balances ORDER BY asset").fetchall()
        return {r["asset"]: (Decimal(r["free"]), Decimal(r["locked"])) for r in rows}

    def set_balances(self, values: dict[str, tuple[Decimal, Decimal]]) -> None:
        """Store several assets' free and locked amounts at once."""
        self.db.executemany("INSERT OR REPLACE INTO balances (asset, free, locked) VALUES (?, ?, ?)",
                            [(a, str(f), str(lk)) for a, (f, lk) in values.items()])

    # -- orders -----------------------------------------------------------------------------------
    def save_order(self, order: Order) -> None:
        """Insert or replace an order."""
        self.db.execute(_INSERT_ORDER, _params(order))

    def get_order(self, symbol: str, order_id: int | None = None,
                  client_order_id: str | None = None) -> Order | None:
        """Return an order by id or client order id (the newest one with that client id)."""
        if order_id is not None:
            row = self.db.execute("SELECT * FROM orders WHERE symbol=? AND order_id=?",
                                  (symbol, order_id)).fetchone()
        else:
            row = self.db.execute(
                "SELECT * FROM orders WHERE symbol=? AND client_order_id=? ORDER BY order_id DESC LIMIT 1",
                (symbol, client_order_id),
            ).fetchone()
        return None if row is None else _row_order(row)

    def open_orders(self) -> list[Order]:
        """Return every open order, oldest first."""
        rows = self.db.execute(
            "SELECT * FROM orders WHERE status IN ('NEW', 'PARTIALLY_FILLED') ORDER BY order_id"
        ).fetchall()
        return [_row_order(r) for r in rows]

    def orders(self, symbol: str, from_id: int | None, start: int | None, end: int | None,
               limit: int) -> list[Order]:
        """Return orders of ``symbol`` (ascending id) filtered like Binance's allOrders."""
        sql, args = "SELECT * FROM orders WHERE symbol=?", list[object]([symbol])
        if from_id is not None:
            sql, args = sql + " AND order_id>=?", [*args, from_id]
        if start is not None:
            sql, args = sql + " AND time>=?", [*args, start]
        if end is not None:
            sql, args = sql + " AND time<=?", [*args, end]
        if from_id is None and start is None:
            inner = sql + " ORDER BY order_id DESC LIMIT ?"
            sql = f"SELECT * FROM ({inner}) ORDER BY order_id"
        else:
            sql += " ORDER BY order_id LIMIT ?"
        return [_row_order(r) for r in self.db.execute(sql, [*args, limit]).fetchall()]

    # -- trades -----------------------------------------------------------------------------------
    def save_trade(self, trade: Trade) -> None:
        """Insert a fill."""
        self.db.execute(_INSERT_TRADE, _params(trade))

    def trades(self, symbol: str, order_id: int | None = None, from_id: int | None = None,
               start: int | None = None, end: int | None = None, limit: int = 500) -> list[Trade]:
        """Return fills of ``symbol`` (ascending id) filtered like Binance's myTrades."""
        sql, args = "SELECT * FROM trades WHERE symbol=?", list[object]([symbol])
        if order_id is not None:
            sql, args = sql + " AND order_id=?", [*args, order_id]
        if from_id is not None:
            sql, args = sql + " AND id>=?", [*args, from_id]
        if start is not None:
            sql, args = sql + " AND time>=?", [*args, start]
        if end is not None:
            sql, args = sql + " AND time<=?", [*args, end]
        if from_id is None and start is None and order_id is None:
            sql = f"SELECT * FROM ({sql} ORDER BY id DESC LIMIT ?) ORDER BY id"
        else:
            sql += " ORDER BY id LIMIT ?"
        return [_row_trade(r) for r in self.db.execute(sql, [*args, limit]).fetchall()]

    def last_trade_time(self) -> int:
        """Return the time of the newest fill (-1 when there is none)."""
        row = self.db.execute("SELECT MAX(time) FROM trades").fetchone()
        return -1 if row is None or row[0] is None else int(row[0])

    # -- order lists ----------------------------------------------------------------------------
    def save_order_list(self, lst: OrderList) -> None:
        """Insert or replace an order list."""
        self.db.execute(
            "INSERT OR REPLACE INTO order_lists (order_list_id, symbol, list_client_order_id, contingency_type, "
            "list_status_type, list_order_status, transaction_time, order_ids) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (lst.order_list_id, lst.symbol, lst.list_client_order_id, lst.contingency_type,
             lst.list_status_type, lst.list_order_status, lst.transaction_time,
             ",".join(str(i) for i in lst.order_ids)),
        )

    def order_lists(self, list_id: int | None = None, client_id: str | None = None, open_only: bool = False,
                    from_id: int | None = None, start: int | None = None, end: int | None = None,
                    limit: int = 500) -> list[OrderList]:
        """Return order lists (ascending id) by id, client id, state or time, like Binance's list queries."""
        sql, args = "SELECT * FROM order_lists WHERE 1=1", list[object]()
        if list_id is not None:
            sql, args = sql + " AND order_list_id=?", [*args, list_id]
        if client_id is not None:
            sql, args = sql + " AND list_client_order_id=?", [*args, client_id]
        if open_only:
            sql += " AND list_order_status='EXECUTING'"
        if from_id is not None:
            sql, args = sql + " AND order_list_id>=?", [*args, from_id]
        if start is not None:
            sql, args = sql + " AND transaction_time>=?", [*args, start]
        if end is not None:
            sql, args = sql + " AND transaction_time<=?", [*args, end]
        if from_id is None and start is None:
            sql = f"SELECT * FROM ({sql} ORDER BY order_list_id DESC LIMIT ?) ORDER BY order_list_id"
        else:
            sql += " ORDER BY order_list_id LIMIT ?"
        rows = self.db.execute(sql, [*args, limit]).fetchall()
        return [OrderList(order_list_id=r["order_list_id"], symbol=r["symbol"],
                          list_client_order_id=r["list_client_order_id"], contingency_type=r["contingency_type"],
                          list_status_type=r["list_status_type"], list_order_status=r["list_order_status"],
                          transaction_time=r["transaction_time"],
                          order_ids=[int(i) for i in r["order_ids"].split(",") if i]) for r in rows]
