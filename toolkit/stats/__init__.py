"""Performance metrics and the statistics behind the promotion gates.

``metrics`` holds per-bar performance metrics (Sharpe, drawdowns, trade stats,
``summary``); ``sharpe`` the probabilistic / deflated Sharpe ratio and the
minimum track record length; ``pbo`` the probability of backtest overfitting
(CSCV); ``risk`` daily returns, historical VaR and CVaR.
"""

from toolkit.stats.metrics import (
    annual_volatility,
    cagr,
    calmar_ratio,
    drawdown_series,
    expectancy,
    exposure,
    max_drawdown,
    max_drawdown_duration,
    max_drawdown_duration_time,
    profit_factor,
    sharpe_ratio,
    sharpe_ratios,
    sortino_ratio,
    summary,
    total_return,
    turnover,
    win_rate,
)
from toolkit.stats.pbo import PBOResult, pbo_cscv
from toolkit.stats.risk import historical_cvar, historical_var, to_daily_returns, worst_period
from toolkit.stats.sharpe import (
    deflated_sharpe_ratio,
    expected_max_sharpe,
    min_track_record_length,
    probabilistic_sharpe_ratio,
    sharpe_moments,
)

__all__ = [
    "PBOResult",
    "annual_volatility",
    "cagr",
    "calmar_ratio",
    "deflated_sharpe_ratio",
    "drawdown_series",
    "expectancy",
    "expected_max_sharpe",
    "exposure",
    "historical_cvar",
    "historical_var",
    "max_drawdown",
    "max_drawdown_duration",
    "max_drawdown_duration_time",
    "min_track_record_length",
    "pbo_cscv",
    "probabilistic_sharpe_ratio",
    "profit_factor",
    "sharpe_moments",
    "sharpe_ratio",
    "sharpe_ratios",
    "sortino_ratio",
    "summary",
    "to_daily_returns",
    "total_return",
    "turnover",
    "win_rate",
    "worst_period",
]
