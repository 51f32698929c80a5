"""Sweep a study (strategies × symbols × timeframes) on a Dask cluster: the only module that imports ``distributed``.

A study is a list of backtest configurations, one per cell (strategy, symbol, timeframe, grid).
Each cell's grid is cut into chunks of ``chunk`` combinations; every chunk is one task that loads
the cell's bars on the worker (cached per worker process) and sweeps them with the same engine as
``toolkit backtest`` (``engine.sweep_moments``: the fused numba kernel), keeping only the moments
between the walk-forward fold edges. A cell's last task merges its chunks, chooses per fold
(``engine.fold_choices``) and appends the cell's trials to the trial ledger.

The ledger stays consistent under concurrency: each cell appends in one transaction, under a
backtest id derived from the study id and the cell (``uuid5``), and an append is idempotent per
(backtest id, timeframe, parameters), so a task the scheduler re-runs after a worker died adds
nothing twice, and no trial is lost. Workers find the ledger themselves: the shared PostgreSQL
database of their own environment (``TOOLKIT_DATABASE_URL``, never shipped through the scheduler,
so no secret is in a task) or, for a local cluster, the SQLite path resolved by the caller.

``scheduler``: ``None`` starts a ``LocalCluster`` (``workers`` processes, one thread each, stopped
at the end); ``tcp://host:port`` uses the desk's running scheduler (its workers need this project
installed, the bar store and the database variables).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from toolkit.backtest.config import BacktestConfig
from toolkit.backtest.ledger import TrialLedger, TrialRecord, ledger_key
from toolkit.backtest.moments import Moments
from toolkit.errors import ConfigurationError, TemporaryError

__all__ = ["CellResult", "StudyResult", "cell_backtest_id", "run_study"]

_NAMESPACE = uuid.UUID("6f1c2a52-5d0e-4a53-9a3e-7f0b6f4f5d11")


@dataclass(frozen=True)
class CellResult:
    """What one cell of a study produced (per-bar Sharpe ratios, not annualised)."""

    strategy: str
    symbol: str
    timeframe: str
    backtest_id: str
    combinations: int
    trials_added: int
    chosen: dict[str, Any]
    fold_choices: list[int]
    best_sharpe_is: float
    bars: int


@dataclass(frozen=True)
class StudyResult:
    """The cells of a study, in the order given, and where it ran."""

    study_id: str
    cells: list[CellResult]
    scheduler: str
    workers: int
    tasks: int
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def combinations(self) -> int:
        return sum(c.combinations for c in self.cells)


def cell_backtest_id(study_id: str, cfg: BacktestConfig) -> str:
    """Return the backtest id a study's cell records its trials under (the same on every re-run of the cell)."""
    return uuid.uuid5(_NAMESPACE, f"{study_id}|{cfg.strategy}|{cfg.symbol}|{cfg.timeframe}").hex


@functools.lru_cache(maxsize=16)
def _bars(symbol: str, timeframe: str, start: str, end: str, bars_file: str | None) -> pd.DataFrame:
    from toolkit.data.store import load_bars, load_bars_file

    if bars_file:
        return load_bars_file(bars_file, timeframe, start, end)
    return load_bars(symbol, timeframe, start, end)


def _cell_bars(cfg: BacktestConfig) -> pd.DataFrame:
    return _bars(cfg.symbol, cfg.timeframe, str(cfg.start), str(cfg.end), str(cfg.bars_file) if cfg.bars_file else None)


def _sweep_chunk(cfg: BacktestConfig, lo: int, hi: int, engine: str) -> np.ndarray:
    """Sweep combinations ``lo … hi−1`` of a cell; return their per-segment moments (N × S × 6)."""
    from toolkit.backtest.engine import fold_bounds, sweep_moments

    bars = _cell_bars(cfg)
    bounds = fold_bounds(cfg.folds(len(bars)), len(bars))
    moments, _ = sweep_moments(cfg, bars, cfg.combinations()[lo:hi], bounds, engine=engine)
    return moments.seg


def _finish_cell(cfg: BacktestConfig, study_id: str, recorded_at: str, ledger_path: str | None,
                 *segs: np.ndarray) -> CellResult:
    """Merge a cell's chunks, choose per fold, append its trials to the ledger (idempotently)."""
    from toolkit.backtest.engine import fold_bounds, fold_choices
    from toolkit.data.quality import data_hash

    bars = _cell_bars(cfg)
    folds = cfg.folds(len(bars))
    bounds = fold_bounds(folds, len(bars))
    combos = cfg.combinations()
    moments = Moments(bounds=bounds, seg=np.concatenate(segs, axis=0), evidence=pd.DataFrame())
    n_split = folds[0].test_lo
    sr_is, sr_oos = moments.sharpe(0, n_split), moments.sharpe(n_split, len(bars))
    picks = fold_choices(cfg, moments, folds)
    backtest_id = cell_backtest_id(study_id, cfg)
    ledger = TrialLedger(ledger_path) if ledger_path else TrialLedger()
    added = ledger.append(ledger_key(cfg.strategy, cfg.symbol), backtest_id, pd.Timestamp(recorded_at),
                          cfg.strategy, cfg.symbol, cfg.timeframe, data_hash(bars), [
                              TrialRecord(dict(c), float(sr_is[j]), float(sr_oos[j]), n_split, len(bars) - n_split)
                              for j, c in enumerate(combos)])
    finite = sr_is[np.isfinite(sr_is)]
    return CellResult(strategy=cfg.strategy, symbol=cfg.symbol, timeframe=cfg.timeframe, backtest_id=backtest_id,
                      combinations=len(combos), trials_added=added, chosen=dict(combos[picks[-1]]),
                      fold_choices=[int(p) for p in picks], best_sharpe_is=float(finite.max()) if len(finite) else
                      float("nan"), bars=len(bars))


@contextmanager
def _client(scheduler: str | None, workers: int) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=40)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    if not scheduler.startswith(("tcp://", "tls://")):
        raise ConfigurationError("scheduler", "a Dask scheduler address (tcp://HOST:PORT or tls://HOST:PORT)",
                                 scheduler)
    try:
        client = Client(scheduler, timeout="30s")
    except OSError as exc:
        raise TemporaryError(f"Dask scheduler {scheduler}: cannot connect ({exc}); retry when it is up") from None
    try:
        yield client
    finally:
        client.close()


def run_study(configs: Sequence[BacktestConfig], study_id: str | None = None, scheduler: str | None = None,
              workers: int = 2, chunk: int = 64, engine: str = "auto", recorded_at: pd.Timestamp | None = None,
              ledger_path: str | None = None) -> StudyResult:
    """Sweep every cell of a study on a Dask cluster and record its trials; return one result per cell.

    Parameters
    ----------
    configs
        One validated backtest configuration per cell (its grid, period, costs, sizing, folds).
    study_id
        Identity of the study: a re-run with the same id adds no trial twice (default: a new id).
    scheduler, workers
        ``None`` and ``workers`` local processes, or a running scheduler's address.
    chunk
        Combinations per task.
    recorded_at
        UTC time stamped on the ledger rows (the caller's clock; default now).
    ledger_path
        A SQLite ledger file (workers on this host only); default: the worker's ``TrialLedger()``.

    Raises
    ------
    ConfigurationError
        No cell, a bad ``chunk``/``workers`` or scheduler address, or two cells with the same
        strategy, symbol and timeframe.
    TemporaryError
        The scheduler cannot be reached.
    """
    if not configs:
        raise ConfigurationError("configs", "at least one cell (strategy, symbol, timeframe)", 0)
    if chunk < 1:
        raise ConfigurationError("chunk", "a positive number of combinations per task", chunk)
    if scheduler is None and workers < 1:
        raise ConfigurationError("workers", "a positive number of local worker processes", workers)
    keys = [(c.strategy, c.symbol, c.timeframe) for c in configs]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ConfigurationError("configs", "one cell per strategy, symbol and timeframe", "|".join(dup))
    sid = study_id or uuid.uuid4().hex
    stamp = (recorded_at if recorded_at is not None else pd.Timestamp.now(tz="UTC")).isoformat()
    with _client(scheduler, workers) as client:
        finals = []
        tasks = 0
        for cfg in configs:
            n = len(cfg.combinations())
            parts = [client.submit(_sweep_chunk, cfg, lo, min(lo + chunk, n), engine, pure=False)
                     for lo in range(0, n, chunk)]
            tasks += len(parts) + 1
            finals.append(client.submit(_finish_cell, cfg, sid, stamp, ledger_path, *parts, pure=False))
        cells = client.gather(finals)
        n_workers = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    return StudyResult(study_id=sid, cells=list(cells), scheduler=scheduler or "LocalCluster",
                       workers=n_workers, tasks=tasks)
