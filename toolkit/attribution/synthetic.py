"""Synthetic records for measuring the verdict's error rates (``bench/bench_attribution_mc.py``, tests).

A backtest record and a live record drawn from the same return process: hourly Student-t
returns (5 degrees of freedom) of a strategy whose true annual Sharpe ratio is ``sharpe``,
with volatility regimes (persistent, so block dependence matters). ``decay_at`` (a fraction
of the live record) removes the edge from that point on: the mean return becomes zero.
"""

from __future__ import annotations

import math

import numpy as np

from toolkit.attribution.verdict import RecordInputs

__all__ = ["synthetic_inputs", "synthetic_returns"]


def synthetic_returns(rng: np.random.Generator, n: int, sharpe: float, bars_per_day: float = 24.0,
                      vol_annual: float = 0.15, decay_at: float | None = None) -> np.ndarray:
    """Return ``n`` per-bar returns of a true annual Sharpe ``sharpe`` (edge removed after ``decay_at``·n)."""
    per_year = 365.0 * bars_per_day
    sd = vol_annual / math.sqrt(per_year)
    mu = sharpe / math.sqrt(per_year) * sd
    regime = np.exp(np.repeat(rng.normal(0.0, 0.35, n // 168 + 1), 168)[:n])  # weekly volatility regimes
    regime /= math.sqrt(np.mean(regime**2))
    shocks = rng.standard_t(5, n) / math.sqrt(5 / 3)
    drift = np.full(n, mu)
    if decay_at is not None:
        drift[int(decay_at * n):] = 0.0
    return drift * regime + sd * regime * shocks


def synthetic_inputs(rng: np.random.Generator, live_days: float, sharpe: float = 3.0, backtest_years: float = 3.0,
                     decay_at: float | None = None, excess_bps: float = 0.0, orders_per_day: float = 1.0,
                     bars_per_day: float = 24.0) -> RecordInputs:
    """Return the inputs of one synthetic record (execution excess: mean ``excess_bps``, sd 3 bps per order)."""
    bt = synthetic_returns(rng, int(backtest_years * 365 * bars_per_day), sharpe, bars_per_day)
    live = synthetic_returns(rng, int(live_days * bars_per_day), sharpe, bars_per_day, decay_at=decay_at)
    n_orders = max(2, int(live_days * orders_per_day))
    excess = rng.normal(excess_bps, 3.0, n_orders)
    return RecordInputs(live_returns=live.tolist(), backtest_returns=bt.tolist(), excess_cost_bps=excess.tolist(),
                        bars_per_day=bars_per_day, days=float(live_days), min_days=30.0)
