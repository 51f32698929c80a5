"""A short run in the ledger does not move a long study's deflated Sharpe ratio (real backtests, real ledger)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.backtest import TrialLedger, config_from_params, run_backtest
from toolkit.backtest.bundle import load_bundle, save_bundle
from toolkit.data import load_bars
from toolkit.data.quality import certify
from toolkit.gates import Evidence, load_policy
from toolkit.gates.checks import dsr

GRID = {"fast": [10, 20, 40], "slow": [100, 200]}


def _study_dsr(ledger: TrialLedger, tmp: Path) -> tuple[float, int, float]:
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", start="2022-01-01", end="2024-12-31", grid=GRID)
    bars = load_bars("BTC/USDT", "1h", cfg.start, cfg.end)
    result = run_backtest(cfg, bars, ledger=ledger, progress=False)
    d = save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), tmp)
    ev = Evidence(bundle_dir=d, bundle=load_bundle(d), bundle_sha="-", extras={})
    g = dsr(ev, load_policy(stage="live"))
    return g.inputs["dsr"], g.inputs["n_trials"], g.inputs["trial_sharpe_variance"]


def test_a_27_day_run_does_not_change_a_three_year_studys_dsr(tmp_path: Path) -> None:
    alone = _study_dsr(TrialLedger(tmp_path / "alone.db"), tmp_path / "a")
    shared = TrialLedger(tmp_path / "shared.db")
    short = config_from_params(strategy="ma_cross", timeframe="1h", start="2024-06-01", end="2024-06-27",
                               grid=GRID, selection="split")
    run_backtest(short, load_bars("BTC/USDT", "1h", short.start, short.end), ledger=shared, progress=False)
    after = _study_dsr(shared, tmp_path / "b")
    assert len(shared.trials("ma_cross|BTC/USDT")) == 2 * 6  # both runs are in the ledger (append-only)
    assert after == pytest.approx(alone, rel=0, abs=0)       # same N, same V[SR], same DSR
