"""Drawdown diagnostics of a live record: episodes, what they came from, and whether they are unusual.

An **episode** runs from an equity peak to the next time the peak is regained (or the end
of the record): its trough, depth (fraction of the peak), duration and recovery. The top
``n`` by depth are kept. Each is attributed to its bars' signal PnL (holdings × moves),
execution costs and fees, the hours it lost in, and the liquidity regime, and classified
by the failure modes of a spot crypto strategy trading market orders on bar closes (every
tag that applies, the first being the main one):

- ``outage/stale feed``: a stale-feed, exchange-unavailable or halt incident, or a missing
  bar, inside the episode;
- ``flash move``: one bar of the episode moved more than ``k_sigma`` standard deviations of
  the bar returns before the episode;
- ``execution cost spike``: execution costs and fees are at least half the depth;
- ``low-liquidity hours``: at least half of the loss came on weekends or 00–06 UTC (Asian
  night), or in thin-volume bars;
- ``trend reversal``: the position lost to a move against it (the default when the loss is
  the signal's).

Whether the live drawdown is within the backtest's: the maximum drawdown of circular
block-bootstrap paths of the backtest's per-bar returns as long as the live record; the
live one's quantile in that distribution (``p`` = share of paths drawing down at least as far).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["Episode", "bootstrap_max_drawdowns", "drawdown_episodes", "max_drawdown_of"]

_OUTAGE_KINDS = ("stale_feed", "exchange_unavailable", "exchange_operational", "bar_missing")


@dataclass(frozen=True)
class Episode:
    """One drawdown episode of the live equity."""

    peak: pd.Timestamp
    trough: pd.Timestamp
    recovery: pd.Timestamp | None
    depth: float
    loss: float
    bars: int
    duration_hours: float
    signal: float
    execution: float
    fees: float
    worst_hours: list[int]
    weekend_share: float
    thin_share: float
    classification: list[str]

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("peak", "trough", "recovery"):
            d[k] = None if d[k] is None else d[k].isoformat()
        return d


def max_drawdown_of(equity: np.ndarray) -> float:
    """Return the largest fall from a running peak, as a fraction of the peak (>= 0)."""
    e = np.asarray(equity, dtype=np.float64)
    if len(e) == 0:
        return 0.0
    peak = np.maximum.accumulate(e)
    return float(np.max(1.0 - e / peak))


def bootstrap_max_drawdowns(returns: np.ndarray, length: int, block: int, samples: int = 2000,
                            seed: int = 20261130) -> np.ndarray:
    """Return the maximum drawdowns of ``samples`` circular block-bootstrap paths of ``length`` returns."""
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    if n == 0 or length <= 0:
        return np.zeros(0)
    block = max(1, min(int(block), length))
    n_blocks = -(-length // block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(samples, n_blocks))
    out = np.empty(samples)
    offsets = np.arange(block)
    chunk = max(1, 2_000_000 // length)
    for lo in range(0, samples, chunk):
        idx = (starts[lo:lo + chunk, :, None] + offsets) % n
        paths = r[idx.reshape(idx.shape[0], -1)[:, :length]]
        eq = np.cumprod(1.0 + paths, axis=1)
        eq = np.concatenate([np.ones((eq.shape[0], 1)), eq], axis=1)
        out[lo:lo + chunk] = np.max(1.0 - eq / np.maximum.accumulate(eq, axis=1), axis=1)
    return out


def _classify(part: pd.DataFrame, depth_quote: float, incidents: list[dict[str, Any]], bar_ms: int,
              sigma: float, k_sigma: float) -> list[str]:
    tags = []
    t0 = int(part.index[0].value // 1_000_000)
    t1 = int(part.index[-1].value // 1_000_000) + bar_ms
    outage = any(i["kind"] in _OUTAGE_KINDS and int(i["at"]) <= t1 and
                 (i["resolved_at"] is None or int(i["resolved_at"]) >= t0) for i in incidents)
    steps = np.diff(part.index.asi8) // 1_000_000 if len(part) > 1 else np.array([bar_ms])
    if outage or (steps > bar_ms).any():
        tags.append("outage/stale feed")
    rets = (part["move"] / part["close"]).to_numpy()
    if math.isfinite(sigma) and sigma > 0 and (np.abs(rets) > k_sigma * sigma).any():
        tags.append("flash move")
    costs = -(part["live_execution"].sum() - part["live_fees"].sum())
    if depth_quote > 0 and costs >= 0.5 * depth_quote:
        tags.append("execution cost spike")
    loss = -part["live_pnl"].clip(upper=0.0)
    if loss.sum() > 0:
        idx = part.index
        quiet = (idx.dayofweek >= 5) | (idx.hour < 6)
        thin = (part.get("regime", pd.Series("", index=idx)) == "thin").to_numpy()
        if loss[quiet | thin].sum() >= 0.5 * loss.sum():
            tags.append("low-liquidity hours")
    if part["live_position_pnl"].sum() < 0 and not tags[:1] == ["execution cost spike"]:
        tags.append("trend reversal")
    return tags or ["trend reversal"]


def drawdown_episodes(frame: pd.DataFrame, incidents: list[dict[str, Any]], bar_ms: int, top: int = 5,
                      k_sigma: float = 4.0, sigma: float | None = None) -> list[Episode]:
    """Return the ``top`` deepest episodes of the live equity of a PnL split's per-bar ``frame``.

    ``frame`` needs ``live_equity`` (at each decision close, before the move to the next),
    ``live_pnl``, ``live_position_pnl``, ``live_execution``, ``live_fees``, ``move`` and ``close``
    (and optionally ``regime``). ``sigma``: the per-bar return standard deviation for flash
    moves (default: that of the record's closes).
    """
    if frame.empty:
        return []
    equity = np.concatenate([[frame["live_equity"].iloc[0]], frame["live_equity"].iloc[0]
                             + frame["live_pnl"].cumsum().to_numpy()])
    times = list(frame.index)
    if sigma is None:
        r = (frame["move"] / frame["close"]).to_numpy()
        sigma = float(np.std(r, ddof=1)) if len(r) > 2 else math.nan
    peak_val, peak_i = equity[0], 0
    episodes: list[tuple[int, int, int | None]] = []
    trough_i = 0
    in_dd = False
    for i in range(1, len(equity)):
        if equity[i] >= peak_val:
            if in_dd:
                episodes.append((peak_i, trough_i, i))
                in_dd = False
            peak_val, peak_i = equity[i], i
        else:
            if not in_dd:
                in_dd, trough_i = True, i
            if equity[i] < equity[trough_i]:
                trough_i = i
    if in_dd:
        episodes.append((peak_i, trough_i, None))
    out = []
    for p, tr, rec in episodes:
        depth = 1.0 - equity[tr] / equity[p] if equity[p] > 0 else math.nan
        part = frame.iloc[p: (rec if rec is not None else len(frame))]
        part = part.iloc[: max(tr - p, 1)]
        loss = float(equity[p] - equity[tr])
        by_hour = (-part["live_pnl"]).groupby(part.index.hour).sum().sort_values(ascending=False)
        idx = part.index
        neg = -part["live_pnl"].clip(upper=0.0)
        total_neg = float(neg.sum()) or math.nan
        thin = part["regime"] == "thin" if "regime" in part.columns else pd.Series(False, index=idx)
        ts = [times[min(j, len(times) - 1)] for j in (p, tr)]
        end = times[rec] if rec is not None and rec < len(times) else None
        out.append(Episode(
            peak=ts[0], trough=ts[1], recovery=end, depth=float(depth), loss=loss, bars=int(tr - p),
            duration_hours=float(((end or times[-1]) - ts[0]).total_seconds() / 3600.0),
            signal=float(part["live_position_pnl"].sum()), execution=float(part["live_execution"].sum()),
            fees=float(-part["live_fees"].sum()), worst_hours=[int(h) for h in by_hour.index[:3] if by_hour[h] > 0],
            weekend_share=float(neg[idx.dayofweek >= 5].sum() / total_neg) if total_neg == total_neg else 0.0,
            thin_share=float(neg[thin.to_numpy()].sum() / total_neg) if total_neg == total_neg else 0.0,
            classification=_classify(part, loss, incidents, bar_ms, sigma, k_sigma)))
    out.sort(key=lambda e: -e.depth)
    return out[:top]
