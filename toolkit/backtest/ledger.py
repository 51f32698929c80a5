"""The trial ledger: every parameter combination ever evaluated, per strategy and market.

Deflated Sharpe ratios need the true number of trials and the variance of their
Sharpe ratios. The ledger is append-only: re-running a sweep until something
looks good adds trials; nothing removes them. It is a SQLite file (WAL mode) next
to the local tracking store, or ``TOOLKIT_LEDGER`` when set (point it at a shared
path when the desk shares an MLflow server).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from toolkit import config

__all__ = ["TrialLedger", "TrialRecord", "default_ledger_path", "ledger_key"]

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
"""

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
    """Append-only store of trials, one SQLite file."""

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
        """Append ``trials`` in one transaction and return how many were written."""
        rows = [
            (key, backtest_id, recorded_at.isoformat(), strategy, symbol, timeframe,
             json.dumps(t.params, sort_keys=True), _nan_to_none(t.sharpe_is),
             _nan_to_none(t.sharpe_oos), int(t.n_obs_is), int(t.n_obs_oos), data_hash)
            for t in trials
        ]
        with self._connect() as con:
            con.executemany(
                "INSERT INTO trials (ledger_key, backtest_id, recorded_at, strategy, symbol, timeframe,"
                " params, sharpe_is, sharpe_oos, n_obs_is, n_obs_oos, data_hash)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
        return len(rows)

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


def _nan_to_none(x: float) -> float | None:
    return None if x is None or x != x else float(x)
