"""The fused kernel's path API: one direction path simulated bar by bar, for reports and comparison.

``simulate_path`` runs the sweep kernel's loop (``toolkit.backtest.fused``) on one direction series
(the strategy's, or a walk-forward splice) and returns the per-bar returns, the equity, the sized
positions and the order records: what the backtest's chosen path, the attribution's replay and the
gates' re-simulations read, and what the tests compare with ``vectorbt.Portfolio.from_orders``.
``directions`` is the kernel's direction rule alone, for the tests; ``warm`` compiles every kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numba import njit

from toolkit.backtest.config import BacktestConfig
from toolkit.backtest.costs import BarCostInputs
from toolkit.backtest.features import combo_features, feature_rows
from toolkit.backtest.fused import SUPPORTED, Combo, _bar_rows, _new_state, _params, _simulate, _step, sweep_moments

__all__ = ["PathResult", "directions", "simulate_path", "warm"]


@njit(cache=True, error_model="numpy")
def _directions(kind: int, close: np.ndarray, feats: np.ndarray, fi: np.ndarray, fx: np.ndarray,
                out: np.ndarray) -> None:
    """Write one combination's direction per bar into ``out`` (the rule alone, for tests)."""
    short, warmup, limit, k = fi[4] == 1, fi[5], fi[6] - 1, fx[0]
    fa, fb, fc, fd = feats[fi[0]], feats[fi[1]], feats[fi[2]], feats[fi[3]]
    lv, ll, sv, sl = 0.0, -1, 0.0, -1
    for t in range(close.shape[0]):
        d, lv, ll, sv, sl = _step(kind, t, close[t], fa, fb, fc, fd, k, short, limit, lv, ll, sv, sl)
        out[t] = 0.0 if t < warmup else d


@dataclass(frozen=True)
class PathResult:
    """One direction path simulated by the kernel's loop, bar by bar (for comparison and replay)."""

    returns: np.ndarray
    values: np.ndarray     # equity at each close
    positions: np.ndarray  # sized position decided on each close
    orders: pd.DataFrame   # bar, size (signed), price (with slippage), fees, slippage


def simulate_path(cfg: BacktestConfig, bars: pd.DataFrame, direction: np.ndarray,
                  cost_inputs: BarCostInputs | None = None) -> PathResult:
    """Simulate one direction series (the strategy's, or a walk-forward splice) with the kernel's loop."""
    rows = _bar_rows(cfg, bars, cost_inputs)
    n = len(bars)
    d = np.ascontiguousarray(np.asarray(direction, dtype=np.float64))
    if d.shape != (n,):
        raise ValueError(f"direction: expected {n} values, found shape {d.shape}")
    rets, values, decided = np.empty(n), np.empty(n), np.empty(n)
    orders = np.empty((n, 5))
    bounds = np.array([0, n], dtype=np.int64)
    seg = np.zeros((1, 6))
    evid = np.zeros(1)
    k = _simulate(-1, np.empty((1, 0)), np.zeros(7, dtype=np.int64), np.zeros(1), d, rows, _params(cfg), bounds,
                  np.zeros(n, dtype=np.int64), seg, evid, True, rets, values, decided, orders, 0, n,
                  _new_state(float(cfg.capital), 0))
    frame = pd.DataFrame(orders[:k], columns=["bar", "size", "price", "fees", "slippage"])
    frame["bar"] = frame["bar"].astype(np.int64)
    return PathResult(returns=rets, values=values, positions=decided, orders=frame)


def directions(cfg: BacktestConfig, bars: pd.DataFrame, params: Combo) -> np.ndarray:
    """Return one combination's direction per bar as the kernel computes it (tests compare with ``positions``)."""
    keys, ints, floats = combo_features(cfg.strategy, params)
    feats = feature_rows(bars, list(dict.fromkeys(keys)))
    uniq = list(dict.fromkeys(keys))
    fi = np.zeros(7, dtype=np.int64)
    for slot, key in enumerate(keys):
        fi[slot] = uniq.index(key)
    fi[4:7] = ints
    out = np.empty(len(bars))
    _directions(SUPPORTED[cfg.strategy], bars["close"].to_numpy(dtype=np.float64), feats, fi,
                np.asarray(floats, dtype=np.float64), out)
    return out


def warm() -> None:
    """Compile (or load from numba's on-disk cache) every kernel on a small synthetic market.

    ``make install`` calls it once, so that the first sweep of a fresh clone does not wait for
    the compiler (the specialised loops take tens of seconds to compile, a few ms to load).
    """
    rng = np.random.default_rng(0)
    index = pd.date_range("2024-01-01", periods=400, freq="1h", tz="UTC")
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, len(index))))
    bars = pd.DataFrame({"open": close, "high": close * 1.001, "low": close * 0.999, "close": close,
                         "volume": 1e3, "quote_volume": 1e5}, index=index)
    grids = {"ma_cross": {"fast": [5], "slow": [20]}, "donchian": {"window": [20], "exit_window": [10]},
             "bollinger": {"window": [20]}}
    for name, grid in grids.items():
        cfg = BacktestConfig(strategy=name, timeframe="1h", grid=grid,  # type: ignore[arg-type]
                             sizing={"vol_window_days": 2.0})  # type: ignore[arg-type]
        sweep_moments(cfg, bars, cfg.combinations(), np.array([0, 200, len(bars)]), "60min")
        simulate_path(cfg, bars, directions(cfg, bars, cfg.combinations()[0]))
