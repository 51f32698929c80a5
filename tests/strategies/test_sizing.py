"""Volatility-targeted sizing with a rebalancing band, on real BTC/USDT bars."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit.backtest import config_from_params
from toolkit.backtest.engine import sweep_returns
from toolkit.data import load_bars
from toolkit.gates import load_policy
from toolkit.stats.metrics import max_drawdown, sharpe_ratio
from toolkit.stats.risk import historical_var, to_daily_returns
from toolkit.strategies import Sizing, make_strategy, rebalance


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1h", "2022-01-01", "2024-12-31")


def test_rebalance_moves_only_beyond_the_band_or_on_a_side_change() -> None:
    held = np.array([0.5, 0.5, 0.5, 0.5, 0.0, -0.5])
    raw = np.array([0.6, 0.7, 0.0, -0.1, 0.3, -0.55])
    np.testing.assert_array_equal(rebalance(raw, held, 0.25), [0.5, 0.7, 0.0, -0.1, 0.3, -0.5])


def test_sized_positions_aim_at_the_target_and_respect_the_cap(bars: pd.DataFrame) -> None:
    sz = Sizing(target_vol_annual_pct=20.0, rebalance_band=0.0)
    always_long = np.ones(len(bars))
    pos = sz.positions(always_long, bars["close"], 60.0)
    assert pos.max() <= sz.max_position and pos.min() >= 0.0
    r = np.log(bars["close"]).diff().to_numpy()[1:] * pos[:-1]  # held from each close to the next
    realised = np.nanstd(r[sz.window_bars(60.0):]) * np.sqrt(365 * 24)
    assert realised == pytest.approx(0.20, rel=0.2)  # a 30-day estimate tracks the target within 20 %


def test_the_band_cuts_turnover_and_keeps_the_risk(bars: pd.DataFrame) -> None:
    direction = make_strategy("ma_cross", {"fast": 20, "slow": 200}).positions(bars).to_numpy()
    banded = Sizing(rebalance_band=0.25).positions(direction, bars["close"], 60.0)
    unbanded = Sizing(rebalance_band=0.0).positions(direction, bars["close"], 60.0)
    turnover = lambda p: np.abs(np.diff(p)).sum()  # noqa: E731
    changes = lambda p: int((np.diff(p) != 0).sum())  # noqa: E731
    assert changes(banded) < changes(unbanded) / 5
    assert turnover(banded) < turnover(unbanded)
    assert np.abs(banded - unbanded).max() < 0.5 * unbanded.max()


@pytest.mark.parametrize("kw", [{}, {"vol_window_days": 2.0}, {"vol_window_days": 7.0, "min_vol_annual_pct": 60.0,
                                                              "max_position": 0.5}])
def test_scale_is_the_pandas_formula_to_the_bit(bars: pd.DataFrame, kw: dict[str, float]) -> None:
    """``scale`` (numpy around pandas' rolling std) equals the formula written in pandas, NaN warm-up included."""
    sz = Sizing(**kw)
    n = sz.window_bars(60.0)
    sigma = np.log(bars["close"]).diff().rolling(n, min_periods=n).std(ddof=1) * np.sqrt(365 * 24)
    reference = (sz.target_vol_annual_pct / 100.0 / sigma.clip(lower=sz.min_vol_annual_pct / 100.0)).clip(
        upper=sz.max_position)
    got = sz.scale(bars["close"], 60.0)
    assert got.index.equals(bars.index) and got.name == "close"
    np.testing.assert_array_equal(got.to_numpy(), reference.to_numpy())  # NaN where NaN, equal elsewhere
    assert got.isna().sum() == n and (got == sz.max_position).any() == (kw.get("vol_window_days") == 2.0)
    window = bars["close"].to_numpy()[-(n + 1):]
    assert sz.scale_values(window, 60.0)[-1] == pytest.approx(reference.iloc[-1], rel=1e-12)


def test_sized_target_on_required_history_equals_full_history(bars: pd.DataFrame) -> None:
    sz = Sizing()
    need = sz.required_history(60.0)
    ones = pd.Series(1.0, index=bars.index)
    full = sz.targets(ones, bars["close"], 60.0)
    for e in range(need - 1, len(bars), 997):
        part = sz.targets(ones.iloc[e - need + 1:e + 1], bars["close"].iloc[e - need + 1:e + 1], 60.0)
        assert part[-1] == pytest.approx(full[e], rel=1e-9)


@pytest.mark.parametrize(("strategy", "params"), [("ma_cross", {"fast": 20, "slow": 200}),
                                                   ("donchian", {"window": 48, "exit_window": 24})])
def test_a_20_percent_target_keeps_drawdown_and_var_inside_the_limits_and_the_sharpe(
        bars: pd.DataFrame, strategy: str, params: dict) -> None:
    """All-in (the old behaviour) breaks the desk's drawdown limit on BTC 2022-2024; sizing does not."""
    limits = load_policy(stage="live").capital
    all_in = Sizing(target_vol_annual_pct=200.0, min_vol_annual_pct=1.0, rebalance_band=0.0)
    figures = {}
    for label, sizing in (("all_in", all_in), ("sized", Sizing(target_vol_annual_pct=20.0))):
        cfg = config_from_params(strategy=strategy, timeframe="1h", params=params, sizing=sizing.model_dump())
        r, _ = sweep_returns(cfg, bars, [params])
        s = pd.Series(r[:, 0], index=bars.index)
        figures[label] = (sharpe_ratio(s, 8760), -100 * max_drawdown(s),
                          100 * historical_var(to_daily_returns(s), 0.99))
    (sr_all, dd_all, _), (sr, dd, var) = figures["all_in"], figures["sized"]
    assert dd_all > limits.max_drawdown_pct  # the unsized strategy breaks the limit by construction
    assert dd <= limits.max_drawdown_pct and var <= limits.var_99_1d_pct
    assert sr >= sr_all  # and keeps (here improves) the Sharpe ratio


def test_the_compiled_band_equals_the_python_band_and_rebalance(bars: pd.DataFrame) -> None:
    from toolkit.strategies.sizing import _band_loop, _band_loop_py

    direction = np.stack([make_strategy("ma_cross", {"fast": f, "slow": 200}).positions(bars).to_numpy()
                          for f in (10, 20, 40)], axis=1)
    raw = Sizing().targets(direction, bars["close"], 60.0)
    start = np.zeros(3)
    compiled, python = _band_loop(raw, start, 0.25), _band_loop_py(raw, start, 0.25)
    np.testing.assert_array_equal(compiled, python)
    held, stepwise = start, np.empty_like(raw)
    for t in range(len(raw)):  # the runner's call, one bar at a time
        held = rebalance(raw[t], held, 0.25)
        stepwise[t] = held
    np.testing.assert_array_equal(compiled, stepwise)
