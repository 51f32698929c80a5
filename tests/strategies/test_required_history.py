"""Each strategy declares the history a decision needs; on that history it decides as on the full one.

The runner starts a version from ``required_history`` closed bars (then runs incrementally), so
a strategy whose decision depends on how long its history is cannot be deployed. Checked on the
bundled real BTC/USDT 1h bars at hundreds of end bars per parameter set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit.data import load_bars
from toolkit.strategies import BUILTINS, make_strategy

CASES = [
    ("ma_cross", {"fast": 10, "slow": 50}),
    ("ma_cross", {"fast": 20, "slow": 200, "allow_short": True}),
    ("donchian", {"window": 20, "exit_window": 10, "max_hold": 50}),
    ("donchian", {"window": 48, "exit_window": 24, "allow_short": True, "max_hold": 120}),
    ("bollinger", {"window": 20, "k": 2.0, "max_hold": 30}),
    ("bollinger", {"window": 50, "k": 1.5, "allow_short": True, "max_hold": 60}),
]


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1h", "2023-01-01", "2023-06-30")


@pytest.mark.parametrize(("name", "params"), CASES)
def test_decision_on_required_history_equals_full_history(bars: pd.DataFrame, name: str, params: dict) -> None:
    s = make_strategy(name, params)
    need = s.required_history
    full = s.positions(bars).to_numpy()
    ends = range(need - 1, len(bars), 11)
    got = np.array([s.last_position(bars.iloc[e - need + 1:e + 1]) for e in ends])
    np.testing.assert_array_equal(got, full[list(ends)])
    assert np.abs(full).sum() > 0  # the strategy traded: the comparison is not between flat histories


@pytest.mark.parametrize("name", sorted(BUILTINS))
def test_built_in_strategies_are_long_flat_by_default(bars: pd.DataFrame, name: str) -> None:
    s = make_strategy(name)
    assert not s.can_short
    assert (s.positions(bars) >= 0).all()
    assert s.required_history >= s.warmup
