"""The trial ledger: every parameter combination ever evaluated, per strategy and market.

Deflated Sharpe ratios need the true number of trials and the variance of their
Sharpe ratios. The ledger is append-only: re-running a sweep until something
looks good adds trials; nothing removes them. It is a SQLite file (WAL mode) next
to the local tracking store, or ``TOOLKIT_LEDGER`` when set; when the desk shares a
PostgreSQL database (``TOOLKIT_DATABASE_URL``, ``toolkit.database``) ``TrialLedger()`` is the
table ``toolkit.trials`` there, append-only (triggers refuse UPDATE, DELETE and TRUNCATE).

Appends are idempotent per (backtest id, timeframe, parameters): a sweep task that a
cluster re-runs after a worker died (``toolkit.backtest.cluster``) adds its trials once.
Each append is one transaction, so concurrent writers (processes, hosts) lose nothing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit import config

__all__ = ["PG_DDL", "PgTrialLedger", "TrialLedger", "TrialRecord", "default_ledger_path", "ledger_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ledger_key TEXT NOT NULL,
    backtest_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    params TEXT NOT NULL,
    sharpe_is REAL,
    sharpe_oos REAL,
    n_obs_is INTEGER NOT NULL,
    n_obs_oos INTEGER NOT NULL,
    data_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_key ON trials (ledger_key);
CREATE UNIQUE INDEX IF NOT EXISTS trials_once ON trials (backtest_id, timeframe, params);
"""
#: the shared database's ledger table (idempotent DDL; ``toolkit.refuse_change`` is the audit's trigger function)
PG_DDL = (
    "CREATE SCHEMA IF NOT EXISTS toolkit",
    """CREATE OR REPLACE FUNCTION toolkit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'toolkit.% is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$""",
    """CREATE TABLE IF NOT EXISTS toolkit.trials (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ledger_key TEXT NOT NULL,
    backtest_id TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    strategy TEXT NOT NULL,
    symbol TEXT NOT NULL,
    timeframe TEXT NOT NULL,
    params TEXT NOT NULL,
    sharpe_is DOUBLE PRECISION,
    sharpe_oos DOUBLE PRECISION,
    n_obs_is INTEGER NOT NULL,
    n_obs_oos INTEGER NOT NULL,
    data_hash TEXT NOT NULL,
    UNIQUE (backtest_id, timeframe, params)
)""",
    "CREATE INDEX IF NOT EXISTS trials_key ON toolkit.trials (ledger_key, id)",
    "DROP TRIGGER IF EXISTS trials_append_only ON toolkit.trials",
    "CREATE TRIGGER trials_append_only BEFORE UPDATE OR DELETE ON toolkit.trials "
    "FOR EACH ROW EXECUTE FUNCTION toolkit.refuse_change()",
    "DROP TRIGGER IF EXISTS trials_no_truncate ON toolkit.trials",
    "CREATE TRIGGER trials_no_truncate BEFORE TRUNCATE ON toolkit.trials "
    "FOR EACH STATEMENT EXECUTE FUNCTION toolkit.refuse_change()",
)

COLUMNS = ["id", "ledger_key", "backtest_id", "recorded_at", "strategy", "symbol", "timeframe",
           "params", "sharpe_is", "sharpe_oos", "n_obs_is", "n_obs_oos", "data_hash"]


def ledger_key(strategy: str, symbol: str) -> str:
    """Return the key trials accumulate under: one strategy on one market (any timeframe)."""
    return f"{strategy}|{symbol.upper()}"


def default_ledger_path() -> Path:
    """Return ``TOOLKIT_LEDGER`` or ``trials.db`` beside the local sqlite tracking store."""
    return config.local_store_file("TOOLKIT_LEDGER", "trials.db")


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated parameter combination (per-period, not annualised, Sharpe ratios)."""

    params: dict[str, object]
    sharpe_is: float
    sharpe_oos: float
    n_obs_is: int
    n_obs_oos: int


class TrialLedger:
    """Append-only store of trials: one SQLite file, or the shared database's table.

    ``TrialLedger()`` (no path) is the shared PostgreSQL table when ``toolkit.database.database_url()``
    names one; ``TrialLedger(path)`` is always the SQLite file at ``path``.
    """

    def __new__(cls, path: Path | str | None = None, *args: Any, **kwargs: Any) -> TrialLedger:
        if cls is TrialLedger and path is None:
            from toolkit.database import database_url

            if database_url() is not None:
                return super().__new__(PgTrialLedger)
        return super().__new__(cls)

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else default_ledger_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def append(self, key: str, backtest_id: str, recorded_at: pd.Timestamp, strategy: str,
               symbol: str, timeframe: str, data_hash: str, trials: Iterable[TrialRecord]) -> int:
        """Append ``trials`` in one transaction; return how many were new (a repeated append adds none)."""
        rows = _rows(key, backtest_id, recorded_at, strategy, symbol, timeframe, data_hash, trials)
        with self._connect() as con:
            cur = con.executemany(
                "INSERT OR IGNORE INTO trials (ledger_key, backtest_id, recorded_at, strategy, symbol, timeframe,"
                " params, sharpe_is, sharpe_oos, n_obs_is, n_obs_oos, data_hash)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            return int(cur.rowcount)

    def trials(self, key: str) -> pd.DataFrame:
        """Return every trial recorded under ``key``, oldest first."""
        with self._connect() as con:
            cur = con.execute(f"SELECT {', '.join(COLUMNS)} FROM trials WHERE ledger_key = ? ORDER BY id",
                              (key,))
            rows = cur.fetchall()
        return pd.DataFrame(rows, columns=COLUMNS)

    def count(self, key: str) -> int:
        """Return the number of trials recorded under ``key``."""
        with self._connect() as con:
            return int(con.execute("SELECT COUNT(*) FROM trials WHERE ledger_key = ?", (key,)).fetchone()[0])


class PgTrialLedger(TrialLedger):
    """The trial ledger as the table ``toolkit.trials`` of the desk's shared PostgreSQL database."""

    def __init__(self, path: Path | str | None = None, db: Any = None) -> None:
        from toolkit.database import Database

        self.db = db or Database()
        self.path = Path(f"{self.db.display} table toolkit.trials")  # shown in messages only
        if not self.db.exists("toolkit.trials"):
            self.db.execute_script("creating table toolkit.trials", PG_DDL)

    def append(self, key: str, backtest_id: str, recorded_at: pd.Timestamp, strategy: str,
               symbol: str, timeframe: str, data_hash: str, trials: Iterable[TrialRecord]) -> int:
        """Append ``trials`` in one transaction; return how many were new (a repeated append adds none)."""
        rows = _rows(key, backtest_id, recorded_at, strategy, symbol, timeframe, data_hash, trials)
        if not rows:
            return 0
        values = ", ".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * len(rows))
        with self.db.connect(f"appending {len(rows)} trials of {key}") as con:
            cur = con.execute(
                "INSERT INTO toolkit.trials (ledger_key, backtest_id, recorded_at, strategy, symbol, timeframe,"
                f" params, sharpe_is, sharpe_oos, n_obs_is, n_obs_oos, data_hash) VALUES {values}"
                " ON CONFLICT (backtest_id, timeframe, params) DO NOTHING",
                [v for r in rows for v in r])
            return int(cur.rowcount)

    def trials(self, key: str) -> pd.DataFrame:
        """Return every trial recorded under ``key``, oldest first."""
        with self.db.connect(f"reading the trials of {key}") as con:
            rows = con.execute(f"SELECT {', '.join(COLUMNS)} FROM toolkit.trials WHERE ledger_key = %s ORDER BY id",
                               (key,)).fetchall()
        return pd.DataFrame(rows, columns=COLUMNS)

    def count(self, key: str) -> int:
        """Return the number of trials recorded under ``key``."""
        with self.db.connect(f"counting the trials of {key}") as con:
            return int(con.execute("SELECT COUNT(*) FROM toolkit.trials WHERE ledger_key = %s", (key,)).fetchone()[0])


def _rows(key: str, backtest_id: str, recorded_at: pd.Timestamp, strategy: str, symbol: str, timeframe: str,
          data_hash: str, trials: Iterable[TrialRecord]) -> list[tuple[Any, ...]]:
    return [(key, backtest_id, recorded_at.isoformat(), strategy, symbol, timeframe,
             json.dumps(t.params, sort_keys=True), _nan_to_none(t.sharpe_is),
             _nan_to_none(t.sharpe_oos), int(t.n_obs_is), int(t.n_obs_oos), data_hash)
            for t in trials]


def _nan_to_none(x: float) -> float | None:
    return None if x is None or x != x else float(x)
