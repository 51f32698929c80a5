"""Risk-against-capital gates: drawdown, VaR/CVaR, worst day, exposure, leverage, capacity, cost stress.

Drawdown is the peak-to-trough P&L of a constant allocation (P&L per bar =
allocation · return) in % of that allocation; VaR, CVaR and the worst day
are computed on UTC-day compounded returns; order sizes recorded by the
compounding backtest are restated at the constant allocation (``allocation /
equity before the order``), and capacity compares them with the quote volume
of the policy's execution horizon.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from toolkit.backtest.costs import horizon_bars, horizon_quote_volume
from toolkit.data.resample import timeframe_minutes
from toolkit.gates.evidence import Evidence
from toolkit.gates.policy import GatePolicy
from toolkit.gates.result import GateResult, finite, fmt, gate
from toolkit.stats.metrics import max_drawdown as max_drawdown_fraction
from toolkit.stats.risk import historical_cvar, historical_var, to_daily_returns

__all__ = [
    "capacity",
    "cost_stress",
    "cvar_99",
    "drawdown_pct_of_allocation",
    "exposure",
    "leverage",
    "max_drawdown",
    "order_notional",
    "order_scale",
    "realised_leverage",
    "risk_returns",
    "sizing",
    "spot_long_only",
    "var_99",
    "worst_day",
]



def risk_returns(ev: Evidence, pol: GatePolicy) -> pd.Series:
    """Return the per-bar returns the risk gates read (the policy's ``risk_window``)."""
    return ev.oos_returns if pol.capital.risk_window == "oos" else ev.returns


def drawdown_pct_of_allocation(returns: pd.Series, allocation: float) -> pd.Series:
    """Return the drawdown of a constant allocation as % of that allocation, per bar.

    The strategy trades a fixed allocation (gains swept out, losses topped up),
    so its P&L in USDT is ``allocation · r_t`` per bar and the drawdown is the
    running peak of cumulative P&L minus cumulative P&L, here in % of the
    allocation (independent of ``allocation``; it is kept for the units).
    """
    pnl = allocation * returns.cumsum()
    return (pnl.cummax().clip(lower=0.0) - pnl) / allocation * 100.0


def max_drawdown(ev: Evidence, pol: GatePolicy) -> GateResult:
    alloc = pol.capital.allocation_usdt
    dd = drawdown_pct_of_allocation(risk_returns(ev, pol), alloc)
    worst = float(dd.max()) if len(dd) else math.nan
    lim = pol.capital.max_drawdown_pct
    at = dd.idxmax() if len(dd) else None
    compounded = float(-max_drawdown_fraction(risk_returns(ev, pol)) * 100.0)
    return gate(
        "max_drawdown",
        "risk",
        finite(worst) and worst <= lim,
        {
            "max_drawdown_pct_of_allocation": worst,
            "max_drawdown_usdt": worst * alloc / 100.0,
            "max_drawdown_pct_compounded_equity": compounded,
            "trough_at": at,
            "window": pol.capital.risk_window,
        },
        {"max_pct": lim, "allocation_usdt": alloc},
        f"max drawdown {fmt(worst, '.2f')}% of the {alloc:,.0f} USDT allocation vs limit {lim:.1f}%",
    )


def _daily(ev: Evidence, pol: GatePolicy) -> pd.Series:
    return to_daily_returns(risk_returns(ev, pol))


def _tail_gate(ev: Evidence, pol: GatePolicy, name: str, label: str, key: str, measure: Any, lim: float) -> GateResult:
    d = _daily(ev, pol)
    v = measure(d, 0.99) * 100.0
    need = pol.capital.min_risk_days
    enough = len(d) >= need
    return gate(
        name,
        "risk",
        finite(v) and v <= lim and enough,
        {key: v, "days": len(d), "window": pol.capital.risk_window},
        {"max_pct": lim, "min_days": need},
        f"99% one-day historical {label} {fmt(v, '.2f')}% over {len(d)} days vs limit {lim:.1f}%"
        + ("" if enough else f" (fewer than {need} days: undefined)"),
    )


def var_99(ev: Evidence, pol: GatePolicy) -> GateResult:
    return _tail_gate(ev, pol, "var_99_1d", "VaR", "var_pct", historical_var, pol.capital.var_99_1d_pct)


def cvar_99(ev: Evidence, pol: GatePolicy) -> GateResult:
    return _tail_gate(ev, pol, "cvar_99_1d", "CVaR", "cvar_pct", historical_cvar, pol.capital.cvar_99_1d_pct)


def worst_day(ev: Evidence, pol: GatePolicy) -> GateResult:
    d = _daily(ev, pol)
    loss = float(-d.min() * 100.0) if len(d) else math.nan
    lim = pol.capital.worst_day_pct
    return gate(
        "worst_day",
        "risk",
        finite(loss) and loss <= lim,
        {"worst_day_loss_pct": loss, "date": d.idxmin() if len(d) else None},
        {"max_pct": lim},
        f"worst UTC day lost {fmt(loss, '.2f')}% vs limit {lim:.1f}%",
    )


def exposure(ev: Evidence, pol: GatePolicy) -> GateResult:
    pos = ev.bundle.returns["position"].to_numpy(dtype="float64")
    gross = float(np.nanmax(np.abs(pos))) if pos.size else 0.0
    lim = pol.capital.max_gross_exposure
    return gate(
        "gross_exposure",
        "risk",
        gross <= lim * (1.0 + pol.lookahead.tolerance),
        {"max_abs_position": gross},
        {"max": lim},
        f"largest |position| {gross:.2f}x equity vs limit {lim:.2f}x",
    )


def realised_leverage(ev: Evidence) -> pd.Series:
    """Return gross position notional / equity at each bar's close, from the recorded fills."""
    bars = ev.bundle.bars
    orders = ev.bundle.orders
    signed = np.where(orders["side"].astype(str) == "buy", 1.0, -1.0) * orders["size"].to_numpy(
        dtype="float64"
    )
    flow = pd.Series(signed, index=pd.DatetimeIndex(orders["timestamp"])).groupby(level=0).sum()
    holding = flow.reindex(bars.index, fill_value=0.0).cumsum()
    equity = float(ev.config.capital) * (1.0 + ev.returns.reindex(bars.index, fill_value=0.0)).cumprod()
    return (holding.abs() * bars["close"] / equity).rename("leverage")


def leverage(ev: Evidence, pol: GatePolicy) -> GateResult:
    lev_series = realised_leverage(ev)
    lev = float(lev_series.max()) if len(lev_series) else 0.0
    lim = pol.capital.max_leverage
    return gate(
        "leverage",
        "risk",
        finite(lev) and lev <= lim * (1.0 + pol.lookahead.tolerance),
        {
            "max_gross_notional_over_equity": lev,
            "at": lev_series.idxmax() if len(lev_series) else None,
            "orders": len(ev.bundle.orders),
        },
        {"max": lim},
        f"gross notional reached {fmt(lev, '.3f')}x equity (at closes, from the fills) vs limit {lim:.2f}x",
    )


def order_scale(ev: Evidence, pol: GatePolicy) -> np.ndarray:
    """Return, per recorded order, the factor that restates it at a constant allocation.

    The backtest compounds (an order is a fraction of the equity at that time);
    the desk trades a constant allocation, so an order is rescaled by
    ``allocation / equity before the order's bar``.
    """
    orders = ev.bundle.orders
    r = ev.returns.to_numpy(dtype="float64")
    equity_before = float(ev.config.capital) * np.concatenate([[1.0], np.cumprod(1.0 + r)[:-1]])
    pos = ev.returns.index.get_indexer(pd.DatetimeIndex(orders["timestamp"]))
    eq = np.where(pos >= 0, equity_before[np.clip(pos, 0, None)], float(ev.config.capital))
    return pol.capital.allocation_usdt / eq


def order_notional(ev: Evidence, pol: GatePolicy) -> GateResult:
    scale = order_scale(ev, pol)
    recorded = ev.bundle.orders["notional"].to_numpy(dtype="float64")
    n = np.abs(recorded) * scale
    worst = float(np.nanmax(n)) if n.size else 0.0
    lim = pol.capital.max_order_notional_usdt
    inputs = {
        "max_order_notional_usdt": worst,
        "orders": int(n.size),
        "recorded_max_order_notional": float(np.nanmax(np.abs(recorded))) if n.size else 0.0,
        "scale_to_allocation_range": [float(scale.min()), float(scale.max())] if n.size else [],
    }
    return gate(
        "order_notional",
        "risk",
        worst <= lim,
        inputs,
        {"max_usdt": lim},
        f"largest order {worst:,.0f} USDT at the allocation vs limit {lim:,.0f}",
    )


def capacity(ev: Evidence, pol: GatePolicy) -> GateResult:
    """Each order (at the allocation) over the quote volume of the policy's execution horizon.

    The horizon is the ``k = ceil(execution_horizon_minutes / bar minutes)`` closed
    bars before the order (at least one; ``toolkit.backtest.costs.horizon_quote_volume``,
    the measure the slippage model uses). A horizon without volume, or an order
    outside the bars, is unbounded participation.
    """
    orders, bars = ev.bundle.orders, ev.bundle.bars
    horizon = pol.capital.execution_horizon_minutes
    k = horizon_bars(horizon, timeframe_minutes(ev.config.timeframe))
    pos = bars.index.get_indexer(pd.DatetimeIndex(orders["timestamp"]))
    volume = horizon_quote_volume(bars, k)[np.clip(pos, 0, None)] if len(bars) else np.full(len(pos), np.nan)
    volume = np.where(pos >= 0, volume, np.nan)
    p = np.abs(orders["notional"].to_numpy(dtype="float64")) * order_scale(ev, pol) / volume
    p = np.where(np.isnan(p), np.inf, p)  # no volume over the horizon: unbounded participation
    worst = float(p.max()) if p.size else 0.0
    p99 = float(np.percentile(p[np.isfinite(p)], 99)) if np.isfinite(p).any() else math.nan
    lim = pol.capital.max_volume_share
    return gate(
        "capacity",
        "risk",
        worst <= lim,
        {"max_volume_share": worst, "p99_volume_share": p99, "orders": int(p.size),
         "horizon_bars": k, "unbounded_orders": int(np.isinf(p).sum())},
        {"max": lim, "execution_horizon_minutes": horizon},
        f"largest order {fmt(worst * 100, '.3f')}% of the quote volume of the {horizon} min ({k} bars) "
        f"before it vs limit {lim:.1%}",
    )


def sizing(ev: Evidence, pol: GatePolicy) -> GateResult:
    """The version's sizing aims inside the policy's risk budget (volatility target, largest position)."""
    sz = ev.config.sizing
    over_vol = sz.target_vol_annual_pct > pol.capital.target_vol_annual_pct
    over_pos = sz.max_position > pol.capital.max_gross_exposure
    realised = float(risk_returns(ev, pol).std(ddof=1) * math.sqrt(ev.periods_per_year) * 100.0)
    why = (f"sizing targets {sz.target_vol_annual_pct:g}% a year (budget {pol.capital.target_vol_annual_pct:g}%), "
           f"positions up to {sz.max_position:g}x equity (limit {pol.capital.max_gross_exposure:g}x); "
           f"realised volatility {fmt(realised, '.1f')}%")
    return gate(
        "sizing",
        "risk",
        not (over_vol or over_pos),
        {"target_vol_annual_pct": sz.target_vol_annual_pct, "max_position": sz.max_position,
         "rebalance_band": sz.rebalance_band, "vol_window_days": sz.vol_window_days,
         "realised_vol_annual_pct": realised},
        {"max_target_vol_annual_pct": pol.capital.target_vol_annual_pct,
         "max_position": pol.capital.max_gross_exposure},
        why,
    )


def spot_long_only(ev: Evidence, pol: GatePolicy) -> GateResult:
    """Without a margin account (``allow_short: false``) the version never holds a short position."""
    pos = ev.bundle.returns["position"].to_numpy(dtype="float64")
    shorts = int((pos < 0).sum())
    can_short = bool(ev.bundle.chosen.get("allow_short", False))
    ok = pol.capital.allow_short or (shorts == 0 and not can_short)
    why = ("the policy allows shorts (margin account; borrow cost is in the returns)" if pol.capital.allow_short
           else f"spot, no borrowing: {shorts} bars short" + ("; the chosen parameters allow shorts" if can_short
                                                              else ", long/flat"))
    return gate(
        "spot_long_only",
        "risk",
        ok,
        {"short_bars": shorts, "allow_short_param": can_short,
         "borrow_rate_annual_pct": ev.config.borrow_rate_annual_pct},
        {"allow_short": pol.capital.allow_short},
        why,
    )


def cost_stress(ev: Evidence, pol: GatePolicy) -> GateResult:
    c = ev.extras["cost_stress"]
    s = c["stressed"]["sharpe_oos_annual"]
    lim = pol.cost_stress.min_sharpe
    same = math.isclose(c["factor"], pol.cost_stress.factor) and math.isclose(
        c["capital"], pol.capital.allocation_usdt
    )
    why = (
        f"OOS Sharpe {fmt(s, '.2f')} with costs x{c['factor']:g} "
        f"(base {fmt(c['base']['sharpe_oos_annual'], '.2f')}) vs floor {lim:.2f}"
    )
    if not same:
        why = (
            f"evidence measured at x{c['factor']:g} / {c['capital']:,.0f} USDT, policy asks "
            f"x{pol.cost_stress.factor:g} / {pol.capital.allocation_usdt:,.0f} USDT: collect it again"
        )
    return gate(
        "cost_stress",
        "risk",
        same and finite(s) and s >= lim,
        {"factor": c["factor"], "capital": c["capital"], "stressed": c["stressed"], "base": c["base"]},
        {"min_sharpe": lim, "factor": pol.cost_stress.factor},
        why,
    )
