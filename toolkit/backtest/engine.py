"""Run a backtest: parameter sweep, walk-forward selection, out-of-sample figures, trial ledger.

A strategy decides a direction on the close of bar ``t``; the version's sizing
(``toolkit.strategies.sizing``: volatility target, rebalancing band) turns it
into a position, executed at the open of bar ``t + 1`` (taker fee plus the
slippage model). A short position pays the margin model's borrow rate.

Selection is walk-forward by default: before each out-of-sample block the
combination with the highest in-sample Sharpe is chosen and traded on that
block; the concatenated blocks are the out-of-sample record every figure and
gate reads (``split_at`` is the first out-of-sample bar). ``selection="split"``
is one in-sample/out-of-sample split. The version deploys the last block's
choice. Every combination evaluated is appended to the trial ledger.

The sweep runs on the fused kernel (``toolkit.backtest.fused``) when the strategy has
one, else on vectorbt in chunks of ``CHUNK`` combinations; either way only reductions
are kept (per-segment moments of the per-bar returns, from which every fold's Sharpe
ratio follows, and the returns at the evidence frequency), never a bars × combinations
matrix. The chosen walk-forward record is simulated by vectorbt for the report (trades,
orders) and by the kernel's loop; the largest difference between the two is recorded
(``BacktestResult.engine``) and a difference above ``KERNEL_TOLERANCE`` is an error.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from toolkit.backtest import fused, fused_path
from toolkit.backtest.config import BacktestConfig, Fold, GridValue
from toolkit.backtest.costs import BarCostInputs, slippage_rates
from toolkit.backtest.ledger import TrialLedger, TrialRecord, ledger_key
from toolkit.backtest.moments import Moments, evidence_buckets, moments_from_returns
from toolkit.backtest.portfolio import simulate
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.data.quality import data_hash
from toolkit.data.resample import bars_per_year, timeframe_minutes
from toolkit.errors import ToolkitError
from toolkit.stats.metrics import sharpe_ratio, sharpe_ratios, summary
from toolkit.strategies import make_strategy

__all__ = ["CHUNK", "KERNEL_TOLERANCE", "BacktestResult", "Replay", "fold_choices", "path_returns", "replay",
           "replay_returns", "run_backtest", "sweep_moments", "sweep_returns"]

#: columns simulated per vectorbt call (bounds memory; one progress step each)
CHUNK = 16
#: largest difference allowed between the kernel's and vectorbt's per-bar returns of the chosen record
KERNEL_TOLERANCE = 1e-9


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
    returns: pd.Series             # the walk-forward record, per bar, whole period (before split_at: in-sample)
    positions: pd.Series           # sized position decided on each bar's close
    trades: pd.DataFrame           # out-of-sample trades of the chosen strategy
    orders: pd.DataFrame           # all orders of the chosen strategy (fills, slippage, participation)
    metrics: dict[str, float]      # out-of-sample
    metrics_is: dict[str, float]   # in-sample, for reference
    benchmark: dict[str, float]    # buy and hold over the out-of-sample period
    trial_returns: pd.DataFrame    # every combination's returns at max(bar, 1h), for PBO
    ledger: pd.DataFrame           # the whole ledger for this strategy and market, this run included
    directions: pd.Series | None = None   # the strategy's direction on each bar's close
    folds: list[dict[str, object]] = field(default_factory=list)  # walk-forward steps and their choices
    required_history: int = 0      # closed bars a decision of the deployed version needs
    engine: dict[str, object] = field(default_factory=dict)  # sweep engine, its time, kernel vs vectorbt check
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def oos_returns(self) -> pd.Series:
        return self.returns[self.returns.index >= self.split_at]

    @property
    def n_trials(self) -> int:
        return len(self.ledger)


Combo = dict[str, GridValue]
Details = tuple[pd.DataFrame, pd.DataFrame, np.ndarray]


def _directions(cfg: BacktestConfig, combos: list[Combo], bars: pd.DataFrame) -> np.ndarray:
    out = np.empty((len(bars), len(combos)))
    for j, params in enumerate(combos):
        out[:, j] = make_strategy(cfg.strategy, params).positions(bars).to_numpy()
    return out


def _borrow(cfg: BacktestConfig, targets: np.ndarray, bar_minutes: float) -> np.ndarray:
    """Return the per-bar borrow cost (fraction of equity) of the short positions held from each open."""
    rate = cfg.borrow_rate_annual_pct / 100.0 * bar_minutes / (365.0 * 1440.0)
    return rate * np.clip(-targets, 0.0, None)


def _simulate(cfg: BacktestConfig, bars: pd.DataFrame, decided: np.ndarray, cost_inputs: BarCostInputs,
              cols: tuple[int, ...]) -> tuple[np.ndarray, dict[int, pd.DataFrame], dict[int, pd.DataFrame]]:
    """Simulate sized positions decided on closes (T × N): next-open fills, costs, borrow."""
    targets = np.vstack([np.zeros((1, decided.shape[1])), decided[:-1]])  # execute at the next open
    delta = np.abs(np.diff(targets, axis=0, prepend=0.0))
    slip = slippage_rates(cost_inputs, delta, cfg.capital, cfg.costs)
    sim = simulate(bars, targets, slip, cfg.costs.taker_fee, cfg.capital, cols, cost_inputs)
    returns = sim.returns - _borrow(cfg, targets, cfg.bar_minutes()) if (targets < 0).any() else sim.returns
    return returns, sim.trades, sim.orders


def sweep_returns(cfg: BacktestConfig, bars: pd.DataFrame, combos: list[Combo],
                  detail: int | None = None, progress: bool = False,
                  on_chunk: Callable[[int], None] | None = None,
                  on_chunk_returns: Callable[[int, np.ndarray], None] | None = None,
                  ) -> tuple[np.ndarray, Details | None]:
    """Return the T × N per-bar returns of every combination, sized, through vectorbt (and one column's details).

    The details are (trades, orders, sized positions decided on each close). With
    ``on_chunk_returns`` each chunk's T × CHUNK returns are handed to it (first column, array)
    instead of being kept: the returned matrix is then empty (T × 0).
    """
    returns = np.empty((len(bars), 0 if on_chunk_returns else len(combos)))
    details: Details | None = None
    bar = tqdm(total=len(combos), desc=f"sweep {cfg.strategy}", unit="combo", disable=not progress)
    cost_inputs = BarCostInputs.from_bars(bars, cfg.costs)
    for lo in range(0, len(combos), CHUNK):
        part = combos[lo:lo + CHUNK]
        decided = cfg.sizing.positions(_directions(cfg, part, bars), bars["close"], cfg.bar_minutes())
        cols = (detail - lo,) if detail is not None and lo <= detail < lo + CHUNK else ()
        r, trades, orders = _simulate(cfg, bars, decided, cost_inputs, cols)
        if on_chunk_returns is not None:
            on_chunk_returns(lo, r)
        else:
            returns[:, lo:lo + len(part)] = r
        if cols:
            details = (trades[cols[0]], orders[cols[0]], decided[:, cols[0]])
        bar.update(len(part))
        if on_chunk:
            on_chunk(lo + len(part))
    bar.close()
    return returns, details


def _best(sr: np.ndarray) -> int:
    """Return the column with the highest Sharpe ratio (ties: the first; none finite: 0)."""
    return int(np.nanargmax(np.where(np.isnan(sr), -np.inf, sr))) if np.isfinite(sr).any() else 0


def fold_choices(cfg: BacktestConfig, moments: Moments, folds: list[Fold]) -> list[int]:
    """Return, per fold, the combination with the highest in-sample Sharpe (ties: the first; none finite: 0)."""
    return [_best(moments.sharpe(f.train_lo, f.test_lo)) for f in folds]


def fold_bounds(folds: list[Fold], n_bars: int) -> np.ndarray:
    """Return the segment bounds a sweep reduces over: 0, every fold edge, ``n_bars``."""
    edges = {0, n_bars}
    for f in folds:
        edges.update((f.train_lo, f.test_lo, f.test_hi))
    return np.array(sorted(edges), dtype=np.int64)


def sweep_moments(cfg: BacktestConfig, bars: pd.DataFrame, combos: list[Combo], bounds: np.ndarray,
                  progress: bool = False, engine: str = "auto") -> tuple[Moments, str]:
    """Sweep ``combos``; return their per-segment moments and evidence-frequency returns, and the engine used.

    ``engine``: ``auto`` (the fused kernel when the strategy has one), ``fused`` or ``vectorbt``
    (the environment variable ``TOOLKIT_SWEEP_ENGINE`` overrides it).
    """
    used = fused.engine_for(cfg.strategy, engine)
    freq = _evidence_frequency(cfg.timeframe)
    bar = tqdm(total=len(combos), desc=f"sweep {cfg.strategy} ({used})", unit="combo", disable=not progress)
    if used == "fused":
        moments = fused.sweep_moments(cfg, bars, combos, bounds, freq, on_batch=lambda k: bar.update(k - bar.n))
        bar.close()
        return moments, used
    bounds = np.unique(np.asarray(bounds, dtype=np.int64))
    bucket, labels = evidence_buckets(pd.DatetimeIndex(bars.index), freq)
    seg = np.zeros((len(combos), len(bounds) - 1, 6))
    evid = np.zeros((len(combos), len(labels)))

    present = np.unique(bucket)  # buckets with bars (the others stay 0: no return)

    def reduce(lo: int, r: np.ndarray) -> None:
        seg[lo:lo + r.shape[1]] = moments_from_returns(r, bounds)
        grown = pd.DataFrame(1.0 + r).groupby(bucket).prod().to_numpy() - 1.0
        evid[lo:lo + r.shape[1], present] = grown.T

    sweep_returns(cfg, bars, combos, on_chunk_returns=reduce, on_chunk=lambda k: bar.update(k - bar.n))
    bar.close()
    evidence = pd.DataFrame(evid.T.astype("float32"), index=labels, columns=[f"t{j:04d}" for j in range(len(combos))])
    return Moments(bounds=bounds, seg=seg, evidence=evidence), used


@dataclass(frozen=True)
class Replay:
    """The walk-forward record re-simulated from the folds' choices."""

    returns: np.ndarray
    positions: np.ndarray   # sized, decided on each close
    directions: np.ndarray  # the chosen combinations' directions, spliced at the fold boundaries
    trades: pd.DataFrame
    orders: pd.DataFrame


def replay(cfg: BacktestConfig, bars: pd.DataFrame, folds: list[Fold], choices: list[Combo],
           cost_inputs: BarCostInputs | None = None) -> Replay:
    """Re-simulate the walk-forward record: fold ``k``'s choice decides on its block, the first before it.

    Deterministic: the gates re-derive the recorded returns and positions with it.
    """
    direction = _spliced_directions(cfg, bars, folds, choices)
    decided = cfg.sizing.positions(direction, bars["close"], cfg.bar_minutes())
    inputs = cost_inputs if cost_inputs is not None else BarCostInputs.from_bars(bars, cfg.costs)
    r, trades, orders = _simulate(cfg, bars, decided[:, None], inputs, (0,))
    return Replay(returns=r[:, 0], positions=decided, directions=direction, trades=trades[0], orders=orders[0])


def _spliced_directions(cfg: BacktestConfig, bars: pd.DataFrame, folds: list[Fold],
                        choices: list[Combo]) -> np.ndarray:
    distinct: list[Combo] = []
    for c in choices:
        if c not in distinct:
            distinct.append(c)
    per = _directions(cfg, distinct, bars)
    which = np.full(len(bars), distinct.index(choices[0]))
    for f, c in zip(folds, choices, strict=True):
        which[f.test_lo:f.test_hi] = distinct.index(c)
    return per[np.arange(len(bars)), which]


def replay_returns(cfg: BacktestConfig, bars: pd.DataFrame, folds: list[Fold], choices: list[Combo]) -> np.ndarray:
    """Return the per-bar returns of ``replay`` computed by the kernel's loop (no vectorbt)."""
    return fused_path.simulate_path(cfg, bars, _spliced_directions(cfg, bars, folds, choices)).returns


def path_returns(cfg: BacktestConfig, bars: pd.DataFrame, combos: list[Combo]) -> np.ndarray:
    """Return the T × N per-bar returns of a few combinations by the kernel's loop (no vectorbt)."""
    out = np.empty((len(bars), len(combos)))
    cost_inputs = BarCostInputs.from_bars(bars, cfg.costs)
    for j, params in enumerate(combos):
        direction = make_strategy(cfg.strategy, params).positions(bars).to_numpy()
        out[:, j] = fused_path.simulate_path(cfg, bars, direction, cost_inputs).returns
    return out


def _evidence_frequency(timeframe: str) -> str:
    return f"{max(timeframe_minutes(timeframe), 60)}min"


def run_backtest(cfg: BacktestConfig, bars: pd.DataFrame, ledger: TrialLedger | None = None,
                 progress: bool = True, clock: Clock = SYSTEM_CLOCK, engine: str = "auto") -> BacktestResult:
    """Sweep the grid, select walk-forward (or on one split), report out-of-sample, record every trial.

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
    engine
        Sweep engine: ``auto`` (the fused kernel when the strategy has one), ``fused`` or
        ``vectorbt``; the results are the same (``TOOLKIT_SWEEP_ENGINE`` overrides it).

    Raises
    ------
    ToolkitError
        The kernel's and vectorbt's returns of the chosen record differ by more than
        ``KERNEL_TOLERANCE`` (the sweep's ranking cannot be trusted; run with
        ``TOOLKIT_SWEEP_ENGINE=vectorbt`` and report it).
    """
    combos = cfg.combinations()
    folds = cfg.folds(len(bars))
    n_split = folds[0].test_lo
    ppy = bars_per_year(cfg.timeframe)
    t0 = time.perf_counter()
    moments, used = sweep_moments(cfg, bars, combos, fold_bounds(folds, len(bars)), progress=progress, engine=engine)
    sweep_seconds = time.perf_counter() - t0
    sr_is = moments.sharpe(0, n_split)
    sr_oos = moments.sharpe(n_split, len(bars))
    picks = fold_choices(cfg, moments, folds)
    best = picks[-1]  # the version deploys the latest choice

    cost_inputs = BarCostInputs.from_bars(bars, cfg.costs)  # the same inputs for vectorbt and the kernel
    record = replay(cfg, bars, folds, [combos[k] for k in picks], cost_inputs)
    kernel = fused_path.simulate_path(cfg, bars, record.directions, cost_inputs)
    deviation = float(np.nanmax(np.abs(kernel.returns - record.returns))) if len(bars) else 0.0
    if not deviation <= KERNEL_TOLERANCE:
        raise ToolkitError(
            f"the fused kernel and vectorbt disagree on the chosen walk-forward record of {cfg.strategy}: "
            f"largest per-bar return difference {deviation:.3g}, expected at most {KERNEL_TOLERANCE:g}; rerun with "
            "TOOLKIT_SWEEP_ENGINE=vectorbt and report it")
    split_at = bars.index[n_split]
    chosen_returns = pd.Series(record.returns, index=bars.index, name="return")
    positions = pd.Series(record.positions, index=bars.index, name="position")
    trades = record.trades
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
    fold_rows: list[dict[str, object]] = [
        {**f.model_dump(), "train_start": bars.index[f.train_lo], "test_start": bars.index[f.test_lo],
         "test_end": bars.index[f.test_hi - 1], "chosen_index": k, "chosen": dict(combos[k]),
         "sharpe_is": float(moments.sharpe(f.train_lo, f.test_lo)[k]),
         "sharpe_oos": float(sharpe_ratios(record.returns[f.test_lo:f.test_hi, None])[0])}
        for f, k in zip(folds, picks, strict=True)
    ]

    names = list(cfg.grid) or list(cfg.params)
    sweep = pd.DataFrame([{k: c.get(k) for k in names} for c in combos])
    sweep["sharpe_is"] = sr_is
    sweep["sharpe_oos"] = sr_oos
    sweep["sharpe_is_annual"] = sr_is * np.sqrt(ppy)
    sweep["sharpe_oos_annual"] = sr_oos * np.sqrt(ppy)
    sweep["chosen"] = np.arange(len(combos)) == best

    trial_returns = moments.evidence

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
        positions=positions, trades=oos_trades, orders=record.orders, metrics=metrics, metrics_is=metrics_is,
        benchmark=benchmark, trial_returns=trial_returns, ledger=ledger.trials(key),
        directions=pd.Series(record.directions, index=bars.index, name="direction"), folds=fold_rows,
        required_history=cfg.required_history(dict(combos[best])),
        engine={"sweep": used, "combinations": len(combos), "bars": len(bars),
                "sweep_seconds": round(sweep_seconds, 3),
                "bar_combos_per_second": round(len(bars) * len(combos) / sweep_seconds) if sweep_seconds > 0 else None,
                "kernel_vs_vectorbt_max_abs_diff": deviation, "tolerance": KERNEL_TOLERANCE},
    )
