"""The main job on the bundled real data: what ``make demo`` runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from toolkit import config

__all__ = ["DEMO_BACKTEST", "run_demo"]

#: The demo's backtest: real Binance BTC/USDT bars bundled with the project.
DEMO_BACKTEST: dict[str, Any] = {
    "strategy": "ma_cross",
    "symbol": "BTC/USDT",
    "timeframe": "15m",
    "start": "2024-01-01",
    "end": "2024-03-31",
    "grid": {"fast": [5, 10, 20], "slow": [50, 100]},
}


def run_demo(echo: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Backtest on the bundled data, then gate, promote and index whatever the later stages provide."""
    from toolkit.reports.backtest import backtest_report

    say = echo or (lambda _msg: None)
    say(f"tracking store: {config.tracking_uri()}")
    say(f"backtest: {DEMO_BACKTEST}")
    result: dict[str, Any] = {"backtest": backtest_report(dict(DEMO_BACKTEST), progress=echo is not None)}
    bt = result["backtest"]
    m = bt["metrics"]
    say(f"registered {bt['model_name']} v{bt['model_version']} (run {bt['run_id']}); chosen {bt['chosen']}; "
        f"OOS Sharpe {m['sharpe']:.2f}, return {m['total_return']:.2%}, {bt['n_trials']} trials in the ledger")
    say(f"report: {bt['report_path']}")
    say(f"index:  {config.reports_dir() / 'index.html'}")
    return result
