"""Run a backtest: parameter sweep, in-sample selection, out-of-sample figures, trial ledger.

Positions decided on the close of bar ``t`` are executed at the open of bar
``t + 1`` (taker fee plus the bar-derived slippage model). Parameters are chosen
on the in-sample part (highest in-sample Sharpe); every reported figure is
out-of-sample. Every combination evaluated is appended to the trial ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from toolkit.backtest.config import BacktestConfig, GridValue
from toolkit.backtest.costs import BarCostInputs, slippage_rates
from toolkit.backtest.ledger import TrialLedger, TrialRecord, ledger_key
from toolkit.backtest.portfolio import simulate
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.data.quality import data_hash
from toolkit.data.resample import bars_per_year, timeframe_minutes
from toolkit.errors import DataError
from toolkit.stats.metrics import sharpe_ratio, sharpe_ratios, summary
from toolkit.strategies import make_strategy

__all__ = ["CHUNK", "BacktestResult", "run_backtest", "sweep_returns"]

#: columns simulated per vectorbt call (bounds memory; one progress step each)
CHUNK = 16


@dataclass
class BacktestResult:
    """Everything a backtest produced; ``toolkit.backtest.bundle`` saves and loads it."""

    config: BacktestConfig
    backtest_id: str
    created_at: pd.Timestamp
    data_hash: str
    split_at: pd.Timestamp
    sweep: pd.DataFrame            # one row per combination: params, Sharpe IS/OOS (annualised too)
    chosen: dict[str, object]      # chosen parameters
    chosen_index: int
    returns: pd.Series             # chosen strategy, per bar, whole period
    positions: pd.Series           # decided on each bar's close
    trades: pd.DataFrame           # out-of-sample trades of the chosen strategy
    orders: pd.DataFrame           # all orders of the chosen strategy (fills, slippage, participation)
    metrics: dict[str, float]      # out-of-sample
    metrics_is: dict[str, float]   # in-sample, for reference
    benchmark: dict[str, float]    # buy and hold over the out-of-sample period
    trial_returns: pd.DataFrame    # every combination's returns at max(bar, 1h), for PBO
    ledger: pd.DataFrame           # the whole ledger for this strategy and market, this run included
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def oos_returns(self) -> pd.Series:
        return self.returns[self.returns.index >= self.split_at]

    @property
    def n_trials(self) -> int:
        return len(self.ledger)


Combo = dict[str, GridValue]
Details = tuple[pd.DataFrame, pd.DataFrame, np.ndarray]


def _positions(cfg: BacktestConfig, combos: list[Combo], bars: pd.DataFrame) -> np.ndarray:
    out = np.empty((len(bars), len(combos)))
    for j, params in enumerate(combos):
        out[:, j] = make_strategy(cfg.strategy, params).positions(bars).to_numpy()
    return out


def sweep_returns(cfg: BacktestConfig, bars: pd.DataFrame, combos: list[Combo],
                  detail: int | None = None, progress: bool = False,
                  on_chunk: Callable[[int], None] | None = None) -> tuple[np.ndarray, Details | None]:
    """Return the T × N per-bar returns of every combination (and the details of one column)."""
    returns = np.empty((len(bars), len(combos)))
    details: Details | None = None
    bar = tqdm(total=len(combos), desc=f"sweep {cfg.strategy}", unit="combo", disable=not progress)
    cost_inputs = BarCostInputs.from_bars(bars, cfg.costs)
    for lo in range(0, len(combos), CHUNK):
        part = combos[lo:lo + CHUNK]
        decided = _positions(cfg, part, bars)
        targets = np.vstack([np.zeros((1, len(part))), decided[:-1]])  # execute at the next open
        delta = np.abs(np.diff(targets, axis=0, prepend=0.0))
        slip = slippage_rates(cost_inputs, delta, cfg.capital, cfg.costs)
        cols = (detail - lo,) if detail is not None and lo <= detail < lo + CHUNK else ()
        sim = simulate(bars, targets, slip, cfg.costs.taker_fee, cfg.capital, cols, cost_inputs)
        returns[:, lo:lo + len(part)] = sim.returns
        if cols:
            details = (sim.trades[cols[0]], sim.orders[cols[0]], decided[:, cols[0]])
        bar.update(len(part))
        if on_chunk:
            on_chunk(lo + len(part))
    bar.close()
    return returns, details


def _evidence_frequency(timeframe: str) -> str:
    return f"{max(timeframe_minutes(timeframe), 60)}min"


def run_backtest(cfg: BacktestConfig, bars: pd.DataFrame, ledger: TrialLedger | None = None,
                 progress: bool = True, clock: Clock = SYSTEM_CLOCK) -> BacktestResult:
    """Sweep the grid, choose in-sample, report out-of-sample, and record every trial.

    Parameters
    ----------
    cfg
        The validated configuration.
    bars
        Bars at ``cfg.timeframe`` (tz-aware UTC index).
    ledger
        Trial ledger to append to (default: ``TrialLedger()``).
    progress
        Show a progress bar over the combinations.
    clock
        The clock whose time (UTC) is stamped on the result and the ledger rows.
    """
    combos = cfg.combinations()
    n_split = int(len(bars) * cfg.split)
    if n_split < 30 or len(bars) - n_split < 30:
        raise DataError(
            f"{cfg.symbol} {cfg.timeframe}: expected at least 30 bars on each side of the "
            f"in/out-of-sample split, found {n_split} and {len(bars) - n_split} (of {len(bars)} bars)"
        )
    ppy = bars_per_year(cfg.timeframe)
    returns, _ = sweep_returns(cfg, bars, combos, progress=progress)
    sr_is = sharpe_ratios(returns[:n_split])
    sr_oos = sharpe_ratios(returns[n_split:])
    best = int(np.nanargmax(np.where(np.isnan(sr_is), -np.inf, sr_is))) if np.isfinite(sr_is).any() else 0

    # the chosen column again, with its trades and orders
    _, chosen_details = sweep_returns(cfg, bars, [combos[best]], detail=0)
    if chosen_details is None:  # pragma: no cover - detail=0 always yields details
        raise RuntimeError("sweep returned no details for the chosen combination")
    trades, orders, decided = chosen_details
    split_at = bars.index[n_split]
    chosen_returns = pd.Series(returns[:, best], index=bars.index, name="return")
    positions = pd.Series(decided, index=bars.index, name="position")
    oos_trades = trades[trades["entry_time"] >= split_at].reset_index(drop=True)
    is_trades = trades[trades["entry_time"] < split_at]
    metrics = summary(chosen_returns.iloc[n_split:], positions.iloc[n_split:],
                      oos_trades["return"].to_numpy(), ppy)
    metrics_is = summary(chosen_returns.iloc[:n_split], positions.iloc[:n_split],
                         is_trades["return"].to_numpy(), ppy)
    close = bars["close"].iloc[n_split - 1:]
    hold = close.pct_change().dropna()
    benchmark = {"total_return": float(close.iloc[-1] / close.iloc[0] - 1.0),
                 "sharpe": float(sharpe_ratio(hold, ppy))}

    names = list(cfg.grid) or list(cfg.params)
    sweep = pd.DataFrame([{k: c.get(k) for k in names} for c in combos])
    sweep["sharpe_is"] = sr_is
    sweep["sharpe_oos"] = sr_oos
    sweep["sharpe_is_annual"] = sr_is * np.sqrt(ppy)
    sweep["sharpe_oos_annual"] = sr_oos * np.sqrt(ppy)
    sweep["chosen"] = np.arange(len(combos)) == best

    freq = _evidence_frequency(cfg.timeframe)
    trial = pd.DataFrame(returns, index=bars.index, columns=[f"t{j:04d}" for j in range(len(combos))])
    trial_returns = (1.0 + trial).resample(freq, label="left", closed="left", origin="epoch").prod() - 1.0
    trial_returns = trial_returns.astype("float32")

    now = clock.now()
    backtest_id = uuid.uuid4().hex
    dhash = data_hash(bars)
    key = ledger_key(cfg.strategy, cfg.symbol)
    ledger = ledger or TrialLedger()
    ledger.append(key, backtest_id, now, cfg.strategy, cfg.symbol, cfg.timeframe, dhash, [
        TrialRecord(dict(c), float(sr_is[j]), float(sr_oos[j]), n_split, len(bars) - n_split)
        for j, c in enumerate(combos)
    ])
    return BacktestResult(
        config=cfg, backtest_id=backtest_id, created_at=now, data_hash=dhash, split_at=split_at,
        sweep=sweep, chosen=dict(combos[best]), chosen_index=best, returns=chosen_returns,
        positions=positions, trades=oos_trades, orders=orders, metrics=metrics, metrics_is=metrics_is,
        benchmark=benchmark, trial_returns=trial_returns, ledger=ledger.trials(key),
    )
