"""Small presentation helpers the templates call (markdown headers, data loading by config)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from toolkit.backtest.config import BacktestConfig
from toolkit.data.store import load_bars, load_bars_file

__all__ = ["backtest_header", "bars_for", "chosen_summary", "temp_bundle_dir"]


def bars_for(cfg: BacktestConfig) -> pd.DataFrame:
    """Return the bars a backtest config asks for: the user's file, or the store."""
    if cfg.bars_file:
        return load_bars_file(cfg.bars_file, cfg.timeframe, cfg.start, cfg.end)
    return load_bars(cfg.symbol, cfg.timeframe, cfg.start, cfg.end)


def backtest_header(cfg: BacktestConfig, bars: pd.DataFrame) -> str:
    """Return the report's opening paragraph as Markdown."""
    grid = ", ".join(f"{k} ∈ {v}" for k, v in cfg.grid.items()) or "none (fixed parameters)"
    c = cfg.costs
    return (
        f"# Backtest: {cfg.strategy} on {cfg.symbol} {cfg.timeframe}\n\n"
        f"**Data**: {len(bars):,} bars from {bars.index[0]:%Y-%m-%d %H:%M} to {bars.index[-1]:%Y-%m-%d %H:%M} UTC"
        f" ({'file ' + cfg.bars_file if cfg.bars_file else 'bar store'}).  \n"
        f"**Grid**: {grid}.  \n"
        f"**Capital allocation**: {cfg.capital:,.0f} {cfg.symbol.split('/')[1]}; positions sized to "
        f"{cfg.sizing.target_vol_annual_pct:g}% annual volatility (at most {cfg.sizing.max_position:g}x, "
        f"rebalancing band {cfg.sizing.rebalance_band:.0%}).  \n"
        + (f"**Selection**: walk-forward, first in-sample window {cfg.walk_forward.train_share:.0%} of the bars, "
           f"{cfg.walk_forward.folds} out-of-sample blocks, "
           f"{'anchored' if cfg.walk_forward.anchored else 'rolling'} (each block traded by the combination "
           "with the best in-sample Sharpe before it)"
           if cfg.selection == "walk_forward" else
           f"**Selection**: one split, in-sample share {cfg.split:.0%} (parameters chosen in-sample by Sharpe)")
        + "; every figure below is out-of-sample unless marked.  \n"
        f"**Costs**: taker fee {c.taker_fee:.3%}, slippage = {c.spread_share:g}× the spread ("
        + (f"{c.spread_bps:g} bps, measured on the book" if c.spread_model == "fixed"
           else "Corwin–Schultz estimate from the bars")
        + f") + {c.impact_coef:g}·σ·participation^{c.impact_exponent:g} over a "
        f"{c.execution_horizon_minutes} min execution horizon; decisions on each bar's close, "
        "orders at the next bar's open.  \n"
        f"**Config sha256**: `{cfg.sha256()[:16]}…`"
    )


def chosen_summary(result: Any) -> str:
    """Return a Markdown paragraph naming the chosen parameters and the trial count."""
    m = result.metrics
    return (
        f"**Deployed**: {result.chosen} (the last block's in-sample best of {len(result.sweep)} combinations; "
        f"{result.n_trials} trials recorded for {result.config.strategy} on {result.config.symbol} so far).  \n"
        f"**Out-of-sample** from {result.split_at:%Y-%m-%d %H:%M} UTC: total return {m['total_return']:.2%}, "
        f"Sharpe {m['sharpe']:.2f}, max drawdown {m['max_drawdown']:.2%}, {int(m['trade_count'])} trades; "
        f"buy and hold {result.benchmark['total_return']:.2%}."
        + engine_note(result.engine)
    )


def engine_note(engine: dict[str, Any]) -> str:
    """Return the sentence on how the sweep ran and how the kernel agreed with vectorbt ('' when unknown)."""
    if not engine:
        return ""
    how = ("the fused kernel" if engine.get("sweep") == "fused"
           else "vectorbt (this strategy has no fused kernel)")
    rate = engine.get("bar_combos_per_second")
    speed = f" in {engine['sweep_seconds']:.2f} s ({rate / 1e6:,.1f} M bar·combinations/s)" if rate else ""
    return (f"  \n**Sweep**: {engine['combinations']} combinations × {engine['bars']:,} bars on {how}{speed}; "
            f"the deployed walk-forward record simulated by vectorbt and by the kernel's loop differs by at most "
            f"{engine['kernel_vs_vectorbt_max_abs_diff']:.1e} per bar (tolerance {engine['tolerance']:g}).")


def temp_bundle_dir() -> str:
    """Return a fresh temporary directory for an evidence bundle."""
    import tempfile

    return tempfile.mkdtemp(prefix="backtest-bundle-")
