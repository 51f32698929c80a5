"""Fixtures of the data tests: an isolated user cache and small hand-made bar frames."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

HALT_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "BTCUSDT_1m_2023-03-24_halt.parquet"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point the user bar cache at an empty tmp dir so a developer's cache never leaks in."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TOOLKIT_DATA_DIR", str(cache))
    yield cache


def _make_bars(n: int = 200, start: str = "2024-01-01", freq: str = "1min", seed: int = 7) -> pd.DataFrame:
    """Return a clean random-walk bar frame: consistent OHLC, positive volume, no gaps."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.001, n)))
    open_ = np.concatenate(([100.0], close[:-1]))
    wiggle = np.abs(rng.normal(0.0, 0.0005, (2, n))) * close
    high = np.maximum(open_, close) + wiggle[0]
    low = np.minimum(open_, close) - wiggle[1]
    volume = rng.uniform(1.0, 10.0, n)
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="timestamp").as_unit("ns")
    cols = {"open": open_, "high": high, "low": low, "close": close, "volume": volume}
    return pd.DataFrame(cols, index=idx)


@pytest.fixture
def make_bars() -> Callable[..., pd.DataFrame]:
    """Return the factory of clean random-walk bar frames."""
    return _make_bars


@pytest.fixture
def bars() -> pd.DataFrame:
    return _make_bars()


@pytest.fixture
def halt_file() -> Path:
    """Return the real 2023-03-24 Binance halt day (1m, 80 missing bars, 72 flat zero-volume bars)."""
    return HALT_FILE
