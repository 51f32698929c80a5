"""Figures and tables for the report notebooks (matplotlib; no computation beyond presentation)."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from toolkit.backtest.engine import BacktestResult
from toolkit.stats.metrics import drawdown_series

__all__ = [
    "equity_figure",
    "metrics_table",
    "sweep_figure",
    "sweep_table",
    "trades_figure",
    "underwater_figure",
]

_LABELS = {
    "total_return": "Total return", "cagr": "CAGR", "volatility": "Volatility (ann.)", "sharpe": "Sharpe (ann.)",
    "sortino": "Sortino (ann.)", "calmar": "Calmar", "max_drawdown": "Max drawdown",
    "max_drawdown_days": "Max drawdown duration (days)", "win_rate": "Win rate", "profit_factor": "Profit factor",
    "expectancy": "Expectancy (per trade)", "exposure": "Exposure", "turnover": "Turnover (ann.)",
    "trade_count": "Trades", "n_obs": "Bars",
}
_PCT = {"total_return", "cagr", "volatility", "max_drawdown", "win_rate", "expectancy", "exposure"}


def _fmt(key: str, value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a" if value is None or math.isnan(value) else ("∞" if value > 0 else "-∞")
    if key in _PCT:
        return f"{value:.2%}"
    if key in ("trade_count", "n_obs"):
        return f"{int(value):,}"
    return f"{value:,.2f}"


def metrics_table(result: BacktestResult) -> pd.DataFrame:
    """Return out-of-sample and in-sample figures side by side, formatted for reading."""
    rows = []
    for key, label in _LABELS.items():
        rows.append({
            "metric": label,
            "out-of-sample": _fmt(key, result.metrics.get(key)),
            "in-sample": _fmt(key, result.metrics_is.get(key)),
        })
    return pd.DataFrame(rows).set_index("metric")


def sweep_table(result: BacktestResult, top: int = 10) -> pd.DataFrame:
    """Return the best combinations by in-sample Sharpe with their out-of-sample Sharpe."""
    cols = [c for c in result.sweep.columns if c not in ("sharpe_is", "sharpe_oos")]
    table = result.sweep[cols].sort_values("sharpe_is_annual", ascending=False).head(top)
    return table.round(3).reset_index(drop=True)


def equity_figure(result: BacktestResult, bars: pd.DataFrame) -> Figure:
    """Plot the chosen strategy's equity against buy and hold, with the split marked."""
    fig, ax = plt.subplots(figsize=(11, 4))
    equity = result.config.capital * (1.0 + result.returns).cumprod()
    hold = result.config.capital * bars["close"] / bars["close"].iloc[0]
    ax.plot(equity.index, equity.to_numpy(), label=f"{result.config.strategy} {result.chosen}", lw=1.2)
    ax.plot(hold.index, hold.to_numpy(), label="buy and hold", lw=0.8, color="grey", alpha=0.7)
    ax.axvline(result.split_at, color="black", ls="--", lw=0.8)
    ax.text(result.split_at, ax.get_ylim()[1], " out-of-sample →", va="top", fontsize=8)
    ax.set_ylabel(f"equity ({result.config.symbol.split('/')[1]})")
    ax.set_title("Equity (after fees and slippage)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def underwater_figure(result: BacktestResult) -> Figure:
    """Plot the out-of-sample drawdown from the running peak."""
    fig, ax = plt.subplots(figsize=(11, 2.6))
    dd = drawdown_series(result.oos_returns)
    ax.fill_between(dd.index, dd.to_numpy(), 0.0, color="tab:red", alpha=0.4, step="post")
    ax.set_title(f"Underwater (out-of-sample), max drawdown {result.metrics.get('max_drawdown', float('nan')):.2%}")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def sweep_figure(result: BacktestResult) -> Figure:
    """Plot annualised Sharpe over the grid: a heatmap for two parameters, bars otherwise."""
    sweep = result.sweep
    names = [c for c in sweep.columns if c not in
             ("sharpe_is", "sharpe_oos", "sharpe_is_annual", "sharpe_oos_annual", "chosen")]
    varying = [n for n in names if sweep[n].nunique() > 1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, col, title in zip(axes, ("sharpe_is_annual", "sharpe_oos_annual"),
                              ("in-sample", "out-of-sample"), strict=True):
        ax.set_title(f"Sharpe (ann.), {title}")
        if not sweep[col].notna().any():  # walk-forward selection: no single in-sample period to report
            ax.text(0.5, 0.5, f"no {title} figure for the whole grid\n(walk-forward: each fold chose on its own)",
                    ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        if len(varying) == 2:
            grid = sweep.pivot_table(index=varying[0], columns=varying[1], values=col, aggfunc="mean")
            lim = np.nanmax(np.abs(grid.to_numpy())) or 1.0
            im = ax.imshow(grid.to_numpy(), cmap="RdYlGn", vmin=-lim, vmax=lim, aspect="auto")
            ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
            ax.set_yticks(range(grid.shape[0]), [str(i) for i in grid.index])
            ax.set_xlabel(varying[1])
            ax.set_ylabel(varying[0])
            for (i, j), v in np.ndenumerate(grid.to_numpy()):
                ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8)
            fig.colorbar(im, ax=ax, shrink=0.8)
        else:
            labels = [", ".join(f"{n}={r[n]}" for n in (varying or names)) for _, r in sweep.iterrows()]
            ax.barh(range(len(sweep)), sweep[col].to_numpy(),
                    color=["tab:green" if c else "tab:blue" for c in sweep["chosen"]])
            ax.set_yticks(range(len(sweep)), labels, fontsize=7)
    fig.tight_layout()
    return fig


def trades_figure(result: BacktestResult, bars: pd.DataFrame) -> Figure:
    """Plot out-of-sample closes with the chosen strategy's entries and exits."""
    fig, ax = plt.subplots(figsize=(11, 4))
    close = bars["close"][bars.index >= result.split_at]
    ax.plot(close.index, close.to_numpy(), lw=0.8, color="black")
    t = result.trades
    longs = t[t["direction"] == "long"]
    shorts = t[t["direction"] == "short"]
    ax.scatter(longs["entry_time"], longs["entry_price"], marker="^", color="tab:green", s=30, label="long entry")
    ax.scatter(shorts["entry_time"], shorts["entry_price"], marker="v", color="tab:red", s=30, label="short entry")
    closed = t[t["status"] == "closed"]
    ax.scatter(closed["exit_time"], closed["exit_price"], marker="x", color="tab:blue", s=25, label="exit")
    ax.set_title(f"Out-of-sample trades on price ({len(t)} trades)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
