"""Backtests: costs, the vectorbt adapter, sweeps with a trial ledger, evidence bundles."""

from toolkit.backtest.config import BacktestConfig, config_from_params, parse_grid
from toolkit.backtest.costs import CostModel
from toolkit.backtest.engine import BacktestResult, run_backtest
from toolkit.backtest.ledger import TrialLedger, ledger_key

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "CostModel",
    "TrialLedger",
    "config_from_params",
    "ledger_key",
    "parse_grid",
    "run_backtest",
]
