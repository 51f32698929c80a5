"""The gates' re-simulations of a bundle: the walk-forward record under stressed costs, the deployed
parameters' neighbours, and the record's reproduction (on the fused kernel's loop; the record came from vectorbt).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from toolkit.backtest.bundle import Bundle
from toolkit.backtest.config import BacktestConfig
from toolkit.data.resample import bars_per_year
from toolkit.gates.policy import GatePolicy
from toolkit.stats.metrics import sharpe_ratio
from toolkit.strategies import ParameterError, make_strategy

__all__ = ["measure_costs_and_neighbours", "neighbour_params"]


def neighbour_params(
    chosen: dict[str, Any], grid: dict[str, list[Any]], strategy_name: str, step: float
) -> list[dict[str, Any]]:
    """Return the valid parameter sets one step away from ``chosen`` along each numeric parameter.

    A parameter with a grid axis of several values moves to the adjacent grid
    values; any other int/float parameter moves by ``±step`` relatively (ints by
    at least 1). Booleans and strings do not move. Invalid sets are skipped.
    """
    out: list[dict[str, Any]] = []
    for name, value in chosen.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        axis = sorted(
            {v for v in grid.get(name, []) if isinstance(v, int | float) and not isinstance(v, bool)}
        )
        if len(axis) > 1 and value in axis:
            i = axis.index(value)
            moves = [axis[j] for j in (i - 1, i + 1) if 0 <= j < len(axis)]
        elif isinstance(value, int):
            d = max(1, round(abs(value) * step))
            moves = [value - d, value + d]
        else:
            moves = [value * (1 - step), value * (1 + step)]
        for v in moves:
            params = {**chosen, name: v}
            try:
                make_strategy(strategy_name, params)
            except ParameterError:
                continue
            if params not in out:
                out.append(params)
    return out


def _oos_stats(r: np.ndarray, oos: np.ndarray, ppy: float) -> dict[str, float]:
    x = r[oos]
    return {"sharpe_oos_annual": sharpe_ratio(x, ppy), "total_return_oos": float(np.prod(1.0 + x) - 1.0)}


def measure_costs_and_neighbours(
    bundle: Bundle, policy: GatePolicy
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Re-simulate the walk-forward record under stressed costs, and the chosen parameters' neighbours.

    The cost stress replays the recorded folds and choices at the policy's allocation, with
    base costs and with fees and slippage scaled by the policy's factor. The neighbours (one
    step from the deployed parameters) and the deployed parameters themselves are simulated
    over the whole period with the backtest's own costs and capital; their out-of-sample
    Sharpe ratios are compared. ``reproduction_max_abs_diff`` is the largest difference between
    the recorded returns and their replay (the record re-derived from the bundle). The
    re-simulations run on the fused kernel's loop (``toolkit.backtest.fused_path.simulate_path``),
    the record was simulated by vectorbt: the reproduction is also the check between the two.
    """
    from toolkit.backtest.config import Fold
    from toolkit.backtest.engine import path_returns, replay_returns

    cfg: BacktestConfig = bundle.config
    bars: pd.DataFrame = bundle.bars
    chosen = dict(bundle.chosen)
    oos = np.asarray(bars.index >= pd.Timestamp(bundle.split_at))
    ppy = float(bars_per_year(cfg.timeframe))
    folds = [Fold(**{k: int(f[k]) for k in ("train_lo", "test_lo", "test_hi")}) for f in bundle.folds]
    choices = [dict(f["chosen"]) for f in bundle.folds]

    alloc = policy.capital.allocation_usdt
    factor = policy.cost_stress.factor
    at_alloc = cfg.model_copy(update={"capital": alloc})
    stressed = cfg.model_copy(update={"capital": alloc, "costs": cfg.costs.stressed(factor)})
    base_r = replay_returns(at_alloc, bars, folds, choices)
    stress_r = replay_returns(stressed, bars, folds, choices)
    cost = {
        "factor": factor,
        "capital": alloc,
        "base": _oos_stats(base_r, oos, ppy),
        "stressed": _oos_stats(stress_r, oos, ppy),
    }

    recorded = bundle.returns["return"].to_numpy(dtype="float64")
    again = replay_returns(cfg, bars, folds, choices)
    neighbours = neighbour_params(chosen, cfg.grid, cfg.strategy, policy.robustness.step)
    r = path_returns(cfg, bars, [chosen, *neighbours])
    rows = []
    axes = {k for k, v in cfg.grid.items() if len(set(map(str, v))) > 1}
    for j, params in enumerate(neighbours, start=1):
        moved = [k for k in params if params[k] != chosen.get(k)]
        rows.append(
            {
                "params": params,
                "moved": moved[0] if moved else None,
                "source": "grid" if moved and moved[0] in axes else "perturbed",
                **_oos_stats(r[:, j], oos, ppy),
            }
        )
    robust = {
        "step": policy.robustness.step,
        "chosen": chosen,
        **_oos_stats(r[:, 0], oos, ppy),
        "reproduction_max_abs_diff": float(np.nanmax(np.abs(again - recorded))) if len(recorded) else None,
        "neighbours": rows,
    }
    return cost, robust
