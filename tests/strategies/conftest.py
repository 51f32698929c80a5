"""Fixtures of the strategy tests: bar frames written out by hand or drawn as random walks."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import pytest


def _frame(close: Sequence[float], high: Sequence[float] | None = None,
           low: Sequence[float] | None = None) -> pd.DataFrame:
    c = np.asarray(close, dtype=float)
    h = c + 1.0 if high is None else np.asarray(high, dtype=float)
    lo = c - 1.0 if low is None else np.asarray(low, dtype=float)
    idx = pd.date_range("2024-01-01", periods=len(c), freq="1h", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": c, "high": h, "low": lo, "close": c, "volume": 1.0}, index=idx)


def _random_walk(seed: int, n: int, tick: float = 0.1) -> pd.DataFrame:
    """Return a random-walk OHLC frame; prices rounded to ``tick`` so ties happen."""
    rng = np.random.default_rng(seed)
    close = np.round((100.0 + np.cumsum(rng.normal(0.0, 0.5, n))) / tick) * tick
    close = np.maximum(close, tick)
    open_ = np.concatenate(([close[0]], close[:-1]))
    spread = np.round(np.abs(rng.normal(0.0, 0.3, (2, n))) / tick) * tick
    idx = pd.date_range("2024-01-01", periods=n, freq="15min", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) + spread[0],
                         "low": np.maximum(np.minimum(open_, close) - spread[1], tick / 2),
                         "close": close, "volume": 1.0}, index=idx)


@pytest.fixture
def frame() -> Callable[..., pd.DataFrame]:
    """Return the builder of a small hand-written frame (high = close + 1, low = close - 1 by default)."""
    return _frame


@pytest.fixture
def random_walk() -> Callable[..., pd.DataFrame]:
    return _random_walk
