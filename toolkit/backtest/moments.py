"""What a sweep keeps of every combination: moments of its per-bar returns between fold edges, and its
returns at the evidence frequency.

Both sweep engines reduce to this (the fused kernel in its loop, the vectorbt path from each chunk's
returns matrix), so that nothing of size bars × combinations outlives a chunk; every fold's Sharpe
ratio and the trial returns PBO and the DSR read follow from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Moments", "evidence_buckets", "moments_from_returns"]


@dataclass(frozen=True)
class Moments:
    """Per-combination moments of the per-bar returns over the segments between ``bounds``.

    ``sharpe(lo, hi)`` is the per-bar Sharpe ratio of every combination over bars
    ``lo … hi−1`` (``lo``, ``hi`` must be bounds), as ``toolkit.stats.metrics.sharpe_ratios``
    computes it on the returns themselves (to rounding).
    """

    bounds: np.ndarray     # S + 1 sorted bar indices, 0 … T
    seg: np.ndarray        # N × S × 6: count, shift, Σd, Σd² (d = r − shift), min, max
    evidence: pd.DataFrame  # evidence-frequency returns, one column per combination (float32)

    def sharpe(self, lo: int, hi: int) -> np.ndarray:
        from toolkit.stats.metrics import _ROUNDING

        i, k = int(np.searchsorted(self.bounds, lo)), int(np.searchsorted(self.bounds, hi))
        if self.bounds[i] != lo or self.bounds[k] != hi:
            raise ValueError(f"sharpe: expected segment bounds, found {lo}..{hi} (bounds {self.bounds.tolist()})")
        part = self.seg[:, i:k, :]
        cnt = part[..., 0]
        n = cnt.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            seg_mean = part[..., 1] + part[..., 2] / cnt
            seg_m2 = part[..., 3] - part[..., 2] ** 2 / cnt
            seg_mean = np.where(cnt > 0, seg_mean, 0.0)
            seg_m2 = np.where(cnt > 0, np.maximum(seg_m2, 0.0), 0.0)
            mean = (cnt * seg_mean).sum(axis=1) / n
            m2 = (seg_m2 + cnt * (seg_mean - mean[:, None]) ** 2).sum(axis=1)
            sd = np.sqrt(m2 / (n - 1))
            lo_r = np.where(cnt > 0, part[..., 4], np.inf).min(axis=1)
            hi_r = np.where(cnt > 0, part[..., 5], -np.inf).max(axis=1)
            flat = hi_r == lo_r
            out = np.where((n >= 2) & (sd > _ROUNDING * np.abs(mean)) & (sd > 0) & ~flat & np.isfinite(sd),
                           mean / sd, np.nan)
        return out


def moments_from_returns(returns: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """Return the ``Moments.seg`` array of a T × N returns matrix (the vectorbt path's reduction)."""
    n_seg = len(bounds) - 1
    out = np.zeros((returns.shape[1], n_seg, 6))
    for s in range(n_seg):
        part = returns[bounds[s]:bounds[s + 1]]
        if len(part) == 0:
            continue
        shift = part[0]
        d = part - shift
        out[:, s, 0] = len(part)
        out[:, s, 1] = shift
        out[:, s, 2] = d.sum(axis=0)
        out[:, s, 3] = (d * d).sum(axis=0)
        out[:, s, 4] = part.min(axis=0)
        out[:, s, 5] = part.max(axis=0)
    return out


def evidence_buckets(index: pd.DatetimeIndex, freq: str) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Return each bar's bucket (0-based) at ``freq`` (left-labelled, epoch origin) and the buckets' index.

    The same buckets as ``frame.resample(freq, label="left", closed="left", origin="epoch")``,
    empty ones included.
    """
    step = pd.Timedelta(freq).value
    ns = index.asi8
    raw = np.floor_divide(ns, step)
    first = int(raw[0]) if len(raw) else 0
    n = int(raw[-1]) - first + 1 if len(raw) else 0
    labels = pd.DatetimeIndex(pd.to_datetime((first + np.arange(n)) * step, utc=True), name=index.name)
    return (raw - first).astype(np.int64), labels
