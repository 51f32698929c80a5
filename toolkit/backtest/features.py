"""The feature series a grid's rules read, computed once per distinct window by the strategies' own functions.

A moving average, a channel or a band depends on one window, not on the combination: a grid of a
thousand MA-cross combinations reads a few dozen moving averages. The fused kernel
(``toolkit.backtest.fused``) takes them as rows of one array and each combination's row indices.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from toolkit.backtest.config import GridValue
from toolkit.strategies import make_strategy
from toolkit.strategies.bollinger import band
from toolkit.strategies.donchian import channel
from toolkit.strategies.ma_cross import sma

__all__ = ["FEATURE_BUDGET", "FeatureKey", "combo_features", "feature_groups", "feature_rows"]

#: bytes of feature series held at once (more: the grid is swept in groups, features recomputed)
FEATURE_BUDGET = 768 * 2**20

Combo = dict[str, GridValue]
FeatureKey = tuple[str, int]


def combo_features(strategy: str, params: Combo) -> tuple[list[FeatureKey], list[int], list[float]]:
    """Return the feature series a combination reads (in the rule's order), its ints and floats."""
    s = make_strategy(strategy, params)
    p = s.params
    short = int(bool(getattr(p, "allow_short", False)))
    if strategy == "ma_cross":
        keys = [("sma", p.fast), ("sma", p.slow)]  # type: ignore[attr-defined]
        return keys, [short, s.warmup, 1], [0.0]
    if strategy == "donchian":
        keys = [("upper", p.window), ("lower", p.window),  # type: ignore[attr-defined]
                ("upper", p.exit_window), ("lower", p.exit_window)]  # type: ignore[attr-defined]
        return keys, [short, s.warmup, p.max_hold], [0.0]  # type: ignore[attr-defined]
    keys = [("mean", p.window), ("std", p.window)]  # type: ignore[attr-defined]
    return keys, [short, s.warmup, p.max_hold], [float(p.k)]  # type: ignore[attr-defined]


def feature_rows(bars: pd.DataFrame, keys: list[FeatureKey]) -> np.ndarray:
    """Compute the feature series with the strategies' own functions (rows in ``keys`` order).

    pandas' rolling windows release the GIL: the series are computed on a thread per core.
    """
    out = np.empty((len(keys), len(bars)))
    close = bars["close"]
    rows: dict[FeatureKey, list[int]] = {}
    for i, key in enumerate(keys):
        rows.setdefault(key, []).append(i)
    # one task per function and window: a channel or a band gives two series at once
    family = {"sma": "sma", "upper": "channel", "lower": "channel", "mean": "band", "std": "band"}
    tasks = list(dict.fromkeys((family[kind], n) for kind, n in keys))

    def one(task: tuple[str, int]) -> None:
        fn, n = task
        if fn == "sma":
            out[rows[("sma", n)]] = sma(close, n).to_numpy(dtype=np.float64)
            return
        pair = zip(("upper", "lower"), channel(bars, n), strict=True) if fn == "channel" else \
            zip(("mean", "std"), band(close, n), strict=True)
        for kind, series in pair:
            if (kind, n) in rows:
                out[rows[(kind, n)]] = series.to_numpy(dtype=np.float64)

    with ThreadPoolExecutor(max_workers=max(1, min(len(tasks), os.cpu_count() or 1))) as pool:
        list(pool.map(one, tasks))
    return out


def feature_groups(strategy: str, combos: list[Combo], n_bars: int) -> list[tuple[list[int], list[FeatureKey]]]:
    """Split the combinations into groups whose distinct feature series fit ``FEATURE_BUDGET``."""
    max_rows = max(4, FEATURE_BUDGET // max(1, 8 * n_bars))
    out: list[tuple[list[int], list[FeatureKey]]] = []
    members: list[int] = []
    keys: list[FeatureKey] = []
    for j, params in enumerate(combos):
        need = [k for k in dict.fromkeys(combo_features(strategy, params)[0]) if k not in keys]
        if members and len(keys) + len(need) > max_rows:
            out.append((members, keys))
            members, keys = [], []
            need = list(dict.fromkeys(combo_features(strategy, params)[0]))
        members.append(j)
        keys.extend(need)
    if members:
        out.append((members, keys))
    return out
