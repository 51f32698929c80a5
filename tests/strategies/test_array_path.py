"""The built-in strategies compute their signals on arrays; they must equal, bit for bit, the pandas
formulation they replaced (written out here as the reference), on real bars and on tick-rounded random
walks where ties happen, for random parameters, shorts included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import _random_walk

from toolkit.data import load_bars
from toolkit.strategies import make_strategy
from toolkit.strategies.base import Strategy


def _ref_hold(events: pd.Series, max_hold: int) -> pd.Series:
    return events.ffill(limit=max_hold - 1).fillna(0.0) if max_hold > 1 else events.fillna(0.0)


def _ref_events(entry: pd.Series, level: float, exit_: pd.Series) -> pd.Series:
    return pd.Series(np.where(entry, level, np.where(exit_, 0.0, np.nan)), index=entry.index)


def _ref_signal(name: str, p: dict, bars: pd.DataFrame) -> pd.Series:
    close = bars["close"]
    if name == "ma_cross":
        fast = close.rolling(p["fast"], min_periods=p["fast"]).mean()
        slow = close.rolling(p["slow"], min_periods=p["slow"]).mean()
        out = pd.Series(np.where(fast > slow, 1.0, -1.0 if p["allow_short"] else 0.0), index=bars.index)
        return out.where(slow.notna())
    if name == "donchian":
        def chan(n: int) -> tuple[pd.Series, pd.Series]:
            return (bars["high"].rolling(n, min_periods=n).max().shift(1),
                    bars["low"].rolling(n, min_periods=n).min().shift(1))
        (upper, lower), (exit_high, exit_low) = chan(p["window"]), chan(p["exit_window"])
        long_entry, long_exit = close > upper, close < exit_low
        if not p["allow_short"]:
            return _ref_hold(_ref_events(long_entry, 1.0, long_exit), p["max_hold"])
        short_entry, short_exit = close < lower, close > exit_high
        return (_ref_hold(_ref_events(long_entry, 1.0, long_exit | short_entry), p["max_hold"])
                + _ref_hold(_ref_events(short_entry, -1.0, short_exit | long_entry), p["max_hold"]))
    mean = close.rolling(p["window"], min_periods=p["window"]).mean()
    std = close.rolling(p["window"], min_periods=p["window"]).std(ddof=0)
    z = (close - mean) / std.where(std > 0)
    long_entry, long_exit = z < -p["k"], z >= 0.0
    if not p["allow_short"]:
        return _ref_hold(pd.Series(np.where(long_entry, 1.0, np.where(long_exit, 0.0, np.nan)), bars.index),
                         p["max_hold"])
    short_entry, short_exit = z > p["k"], z <= 0.0
    long_ev = np.where(long_entry, 1.0, np.where(long_exit | short_entry, 0.0, np.nan))
    short_ev = np.where(short_entry, -1.0, np.where(short_exit | long_entry, 0.0, np.nan))
    return (_ref_hold(pd.Series(long_ev, bars.index), p["max_hold"])
            + _ref_hold(pd.Series(short_ev, bars.index), p["max_hold"]))


def _ref_positions(strategy: Strategy, raw: pd.Series) -> pd.Series:
    out = raw.astype("float64").fillna(0.0).clip(-1.0, 1.0)
    out.iloc[: min(strategy.warmup, len(out))] = 0.0
    return out


def _draw(name: str, rng: np.random.Generator) -> dict:
    short = bool(rng.integers(2))
    if name == "ma_cross":
        fast = int(rng.integers(2, 60))
        return {"fast": fast, "slow": int(rng.integers(fast + 1, 400)), "allow_short": short}
    if name == "donchian":
        window = int(rng.integers(2, 200))
        return {"window": window, "exit_window": int(rng.integers(1, window + 1)),
                "max_hold": int(rng.integers(1, 300)), "allow_short": short}
    return {"window": int(rng.integers(2, 200)), "k": float(rng.uniform(0.5, 3.0)),
            "max_hold": int(rng.integers(1, 300)), "allow_short": short}


@pytest.fixture(scope="module")
def real_bars() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1h", "2023-01-01", "2024-12-31")


@pytest.mark.parametrize("name", ["ma_cross", "donchian", "bollinger"])
def test_array_signals_equal_the_pandas_formulation(name: str, real_bars: pd.DataFrame) -> None:
    rng = np.random.default_rng(["ma_cross", "donchian", "bollinger"].index(name))
    walks = [_random_walk(seed, 3000) for seed in range(3)]
    moved = 0
    for draw in range(12):
        p = _draw(name, rng)
        strategy = make_strategy(name, p)
        for bars in (real_bars, walks[draw % 3]):
            ref = _ref_signal(name, p, bars)
            np.testing.assert_array_equal(strategy.signal_values(bars), ref.to_numpy(), err_msg=f"{name} {p}")
            expected = _ref_positions(strategy, ref)
            got = strategy.positions(bars)
            pd.testing.assert_series_equal(got, expected.rename("position"), check_exact=True)
            moved += int(np.count_nonzero(np.diff(got.to_numpy())))
            # the runner's call: the last decision of every window equals the positions' last value
            for end in rng.integers(1, len(bars), 5):
                window = bars.iloc[max(0, end - strategy.required_history): end]
                assert strategy.last_position(window) == float(_ref_positions(
                    strategy, _ref_signal(name, p, window)).iloc[-1])
    assert moved > 100  # the draws traded: equal positions were not all flat


def test_a_strategy_overriding_signal_is_read_through_it() -> None:
    bars = _random_walk(7, 500)

    class Peeking(type(make_strategy("ma_cross"))):  # type: ignore[misc]
        def signal(self, bars: pd.DataFrame) -> pd.Series:
            return super().signal(bars).shift(-1)

    base = make_strategy("ma_cross", {"fast": 5, "slow": 20})
    peeking = Peeking(fast=5, slow=20)
    expected = base.signal(bars).shift(-1).fillna(0.0)
    expected.iloc[:19] = 0.0
    np.testing.assert_array_equal(peeking.position_values(bars), expected.to_numpy())
    assert not np.array_equal(peeking.position_values(bars), base.position_values(bars))


def test_a_strategy_without_a_signal_says_so() -> None:
    class Empty(Strategy):
        name = "empty"

    with pytest.raises(NotImplementedError, match="Empty implements neither signal nor signal_values"):
        Empty.__new__(Empty).signal_values(_random_walk(1, 10))
