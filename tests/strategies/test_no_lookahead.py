"""Properties of every built-in strategy: no lookahead, bounded positions, flat warm-up, live = vectorised."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.data import load_bars
from toolkit.strategies import MACross, Strategy, make_strategy

CASES: list[tuple[str, dict]] = [
    ("ma_cross", {"fast": 2, "slow": 3}),
    ("ma_cross", {"fast": 5, "slow": 20, "allow_short": True}),
    ("donchian", {"window": 3, "exit_window": 2}),
    ("donchian", {"window": 20, "exit_window": 5, "allow_short": True}),
    ("bollinger", {"window": 3, "k": 1.0}),
    ("bollinger", {"window": 20, "k": 2.0}),
    ("bollinger", {"window": 10, "k": 1.5, "allow_short": False}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in p.items())}" for name, p in CASES]


def _check_properties(strategy: Strategy, bars: pd.DataFrame, ts: list[int]) -> None:
    full = strategy.positions(bars)
    assert full.index.equals(bars.index) and full.name == "position"
    assert full.notna().all() and full.between(-1.0, 1.0).all()
    assert (full.iloc[: strategy.warmup] == 0.0).all()
    assert strategy.last_position(bars) == full.iloc[-1]
    for t in ts:
        prefix = bars.iloc[: t + 1]
        # the decision at t uses bars up to t only: a later bar cannot change it
        assert strategy.positions(prefix).iloc[-1] == full.iloc[t], t
        assert strategy.last_position(prefix) == full.iloc[t], t


@pytest.fixture(scope="module")
def real_bars() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1h", "2024-01-01", "2024-01-31")


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_no_lookahead_on_real_bars(real_bars: pd.DataFrame, name: str, params: dict) -> None:
    strategy = make_strategy(name, params)
    ts = sorted({*range(0, 30), *np.random.default_rng(1).integers(30, len(real_bars), 40).tolist(),
                 len(real_bars) - 1})
    _check_properties(strategy, real_bars, ts)
    assert strategy.positions(real_bars).abs().sum() > 0  # the real month does trade


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 120), data=st.data())
def test_no_lookahead_on_random_walks(random_walk: Callable[..., pd.DataFrame], name: str, params: dict,
                                      seed: int, n: int, data: st.DataObject) -> None:
    bars = random_walk(seed, n)
    ts = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=8, unique=True), label="t")
    _check_properties(make_strategy(name, params), bars, ts)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_empty_and_short_histories_are_flat(random_walk: Callable[..., pd.DataFrame], name: str,
                                            params: dict) -> None:
    strategy = make_strategy(name, params)
    bars = random_walk(3, 50)
    assert strategy.last_position(bars.iloc[:0]) == 0.0
    assert strategy.positions(bars.iloc[:0]).empty
    short = bars.iloc[: strategy.warmup]
    assert (strategy.positions(short) == 0.0).all()


class _Peeking(MACross):
    """A deliberately broken strategy that reads the next bar's close."""

    def signal(self, bars: pd.DataFrame) -> pd.Series:
        return super().signal(bars).shift(-1)


def test_the_property_catches_a_peeking_strategy(real_bars: pd.DataFrame) -> None:
    with pytest.raises(AssertionError):
        _check_properties(_Peeking(fast=2, slow=3), real_bars, list(range(len(real_bars))))
