"""A study fanned out over a real Dask LocalCluster (worker processes): same choices as one process, every trial
recorded once, also when the study is run again and when the ledger is the shared PostgreSQL table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.backtest import config_from_params
from toolkit.backtest.cluster import cell_backtest_id, run_study
from toolkit.backtest.engine import fold_bounds, fold_choices, sweep_moments
from toolkit.backtest.ledger import TrialLedger, ledger_key
from toolkit.errors import ConfigurationError
from toolkit.registry.server import RegistryEndpoints
from toolkit.reporting.views import bars_for

AT = pd.Timestamp("2026-11-30T12:00:00Z")


def _study() -> list:
    cells = [("ma_cross", "BTC/USDT", "1h", {"fast": [5, 10, 20], "slow": [50, 100, 200]}),
             ("ma_cross", "BTC/USDT", "4h", {"fast": [5, 10], "slow": [50, 100]}),
             ("donchian", "BTC/USDT", "1h", {"window": [24, 48, 96]}),
             ("ma_cross", "ETH/USDT", "1h", {"fast": [5, 10], "slow": [50, 100]})]
    out = []
    for strategy, symbol, tf, grid in cells:
        start, end = ("2024-07-27", "2024-08-24") if symbol == "ETH/USDT" else ("2024-01-01", "2024-04-30")
        out.append(config_from_params(strategy=strategy, symbol=symbol, timeframe=tf, start=start, end=end, grid=grid))
    return out


@pytest.fixture(scope="module")
def local_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[list, object, Path]:
    ledger = tmp_path_factory.mktemp("cluster") / "trials.db"
    configs = _study()
    result = run_study(configs, study_id="study-1", workers=2, chunk=4, recorded_at=AT, ledger_path=str(ledger))
    return configs, result, ledger


def test_the_cluster_chooses_what_one_process_chooses(local_study: tuple[list, object, Path]) -> None:
    configs, result, _ = local_study
    assert result.workers == 2 and result.tasks > len(configs)  # cells were really split into tasks
    for cfg, cell in zip(configs, result.cells, strict=True):
        bars = bars_for(cfg)
        folds = cfg.folds(len(bars))
        moments, _ = sweep_moments(cfg, bars, cfg.combinations(), fold_bounds(folds, len(bars)))
        picks = fold_choices(cfg, moments, folds)
        assert (cell.strategy, cell.symbol, cell.timeframe) == (cfg.strategy, cfg.symbol, cfg.timeframe)
        assert cell.fold_choices == picks
        assert cell.chosen == dict(cfg.combinations()[picks[-1]])
        sr = moments.sharpe(0, folds[0].test_lo)
        best = float(np.nanmax(sr)) if np.isfinite(sr).any() else float("nan")  # a short first window: all warm-up
        assert cell.best_sharpe_is == pytest.approx(best, nan_ok=True)


def test_every_trial_is_recorded_once_even_when_the_study_runs_again(local_study: tuple[list, object, Path]) -> None:
    configs, result, path = local_study
    ledger = TrialLedger(path)
    for cfg, cell in zip(configs, result.cells, strict=True):
        assert cell.trials_added == cell.combinations == len(cfg.combinations())
    again = run_study(configs, study_id="study-1", workers=2, chunk=3, recorded_at=AT, ledger_path=str(path))
    assert [c.trials_added for c in again.cells] == [0] * len(configs)  # a re-run adds nothing twice
    for key in {ledger_key(c.strategy, c.symbol) for c in configs}:
        rows = ledger.trials(key)
        assert not rows.duplicated(["backtest_id", "timeframe", "params"]).any()
        expected = sum(len(c.combinations()) for c in configs if ledger_key(c.strategy, c.symbol) == key)
        assert len(rows) == expected
    cell = configs[0]
    mine = ledger.trials(ledger_key(cell.strategy, cell.symbol))
    mine = mine[mine["backtest_id"] == cell_backtest_id("study-1", cell)]
    assert sorted(mine["params"]) == sorted(json.dumps(c, sort_keys=True) for c in cell.combinations())


@pytest.mark.slow  # two local clusters at once (about 70 s here); the non-slow test below races plain processes
def test_concurrent_studies_on_the_shared_database_lose_and_duplicate_nothing(
        on_shared_registry: RegistryEndpoints) -> None:
    """Two studies at once on one cluster, every cell's worker appending to the PostgreSQL ledger."""
    import threading

    configs = _study()[:2]
    ledger = TrialLedger()
    key = ledger_key("ma_cross", "BTC/USDT")
    before = ledger.count(key)
    results: dict[str, object] = {}

    def go(sid: str) -> None:
        results[sid] = run_study(configs, study_id=sid, workers=2, chunk=2, recorded_at=AT)

    ids = [f"pg-{n}-{AT.value}-{id(configs)}" for n in range(2)]
    threads = [threading.Thread(target=go, args=(sid,)) for sid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert set(results) == set(ids)
    per_study = sum(len(c.combinations()) for c in configs)
    assert ledger.count(key) == before + 2 * per_study
    rows = ledger.trials(key)
    assert not rows.duplicated(["backtest_id", "timeframe", "params"]).any()


def test_bad_study_input_is_refused_naming_the_field() -> None:
    cfg = _study()[0]
    with pytest.raises(ConfigurationError, match="configs: expected one cell per strategy"):
        run_study([cfg, cfg])
    with pytest.raises(ConfigurationError, match="chunk"):
        run_study([cfg], chunk=0)
    with pytest.raises(ConfigurationError, match="scheduler: expected a Dask scheduler address"):
        run_study([cfg], scheduler="localhost:8786")


_APPEND = """
import sys, pandas as pd
from toolkit.backtest.ledger import TrialLedger, TrialRecord
ledger = TrialLedger()
assert type(ledger).__name__ == "PgTrialLedger"
worker, key = int(sys.argv[1]), sys.argv[2]
for batch in range(5):  # the same five batches twice: a re-run adds nothing
    for _ in range(2):
        ledger.append(key, f"bt-{worker}-{batch}", pd.Timestamp("2026-11-30", tz="UTC"), "ma_cross", "BTC/USDT",
                      "1h", "hash", [TrialRecord({"fast": f, "slow": 100}, 0.1, 0.0, 10, 10) for f in range(20)])
"""


def test_processes_appending_at_once_to_the_shared_ledger_lose_and_duplicate_nothing(
        on_shared_registry: RegistryEndpoints) -> None:
    import subprocess
    import sys
    import uuid

    key = f"race-{uuid.uuid4().hex[:8]}|BTC/USDT"
    procs = [subprocess.Popen([sys.executable, "-c", _APPEND, str(w), key]) for w in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4
    rows = TrialLedger().trials(key)
    assert len(rows) == 4 * 5 * 20
    assert not rows.duplicated(["backtest_id", "timeframe", "params"]).any()
