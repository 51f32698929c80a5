"""Tests of toolkit.stats.risk: daily compounding, VaR/CVaR by hand, real Binance data."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from toolkit.data.store import load_bars
from toolkit.errors import ConfigurationError
from toolkit.stats import risk
from toolkit.stats.metrics import total_return


def test_daily_returns_compound_per_utc_day() -> None:
    index = pd.date_range("2024-03-01 20:00", periods=8, freq="2h", tz="UTC")  # 20:00 .. 10:00 next day
    r = pd.Series([0.01, -0.02, 0.03, 0.0, 0.01, 0.01, -0.01, 0.02], index=index, name="strategy")
    daily = risk.to_daily_returns(r)
    assert list(daily.index) == [pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-02", tz="UTC")]
    assert daily.iloc[0] == pytest.approx(1.01 * 0.98 - 1)
    assert daily.iloc[1] == pytest.approx(1.03 * 1.0 * 1.01 * 1.01 * 0.99 * 1.02 - 1)
    assert daily.name == "strategy"
    assert 1 + total_return(daily) == pytest.approx(1 + total_return(r))


def test_daily_returns_use_the_utc_date_for_other_zones_and_naive_utc() -> None:
    utc = pd.date_range("2024-06-30 22:00", periods=4, freq="1h", tz="UTC")  # 22,23 | 00,01
    r = pd.Series([0.1, 0.1, -0.1, -0.1], index=utc)
    paris = r.tz_convert("Europe/Paris")  # local dates would all be 2024-07-01
    naive = r.tz_localize(None)
    for variant in (r, paris, naive):
        daily = risk.to_daily_returns(variant)
        assert len(daily) == 2
        assert str(daily.index.tz) == "UTC"
        np.testing.assert_allclose(daily.to_numpy(), [1.1**2 - 1, 0.9**2 - 1])


def test_days_without_bars_are_left_out() -> None:
    index = pd.DatetimeIndex(["2024-01-01 10:00", "2024-01-03 10:00"], tz="UTC")
    daily = risk.to_daily_returns(pd.Series([0.01, 0.02], index=index))
    assert list(daily.index.day) == [1, 3]


def test_daily_returns_of_real_hourly_btc_match_the_daily_bars() -> None:
    hourly = load_bars("BTC/USDT", "1h", "2024-01-01", "2024-06-30")
    daily_bars = load_bars("BTC/USDT", "1d", "2023-12-31", "2024-06-30")
    # Buy and hold marked at each bar's close; the bar is labelled by its open time.
    close = pd.concat([daily_bars["close"].iloc[:1], hourly["close"]])
    per_bar = close.pct_change().iloc[1:]
    daily = risk.to_daily_returns(per_bar)
    expected = daily_bars["close"].pct_change().dropna()
    common = daily.index.intersection(expected.index)
    assert len(common) >= 180
    np.testing.assert_allclose(daily.loc[common].to_numpy(), expected.loc[common].to_numpy(), atol=1e-9)


def test_var_and_cvar_by_hand() -> None:
    r = np.array([-0.05, -0.03, -0.01, 0.0, 0.01, 0.02, 0.02, 0.03, 0.04, 0.05])
    # quantile 0.10 of 10 points, linear: position 0.1 * 9 = 0.9 between -0.05 and -0.03
    q10 = -0.05 + 0.9 * 0.02
    assert risk.historical_var(r, 0.90) == pytest.approx(-q10)
    assert risk.historical_cvar(r, 0.90) == pytest.approx(0.05)  # only -0.05 is <= q10
    # quantile 0.25: position 2.25 between -0.01 and 0.0
    assert risk.historical_var(r, 0.75) == pytest.approx(0.01 - 0.25 * 0.01)
    assert risk.historical_cvar(r, 0.75) == pytest.approx((0.05 + 0.03 + 0.01) / 3)
    assert risk.worst_period(r) == -0.05
    gains = np.array([0.01, 0.02, 0.03])
    assert risk.historical_var(gains, 0.99) < 0  # even the tail is a gain
    assert math.isnan(risk.historical_var([], 0.99))
    assert math.isnan(risk.historical_cvar([], 0.99))
    assert math.isnan(risk.worst_period([]))


@settings(max_examples=150, deadline=None)
@given(
    arrays(np.float64, st.integers(1, 80), elements=st.floats(-0.9, 0.9, allow_subnormal=False)),
    st.floats(0.5, 0.999),
)
def test_cvar_bounds(r: np.ndarray, level: float) -> None:
    var, cvar = risk.historical_var(r, level), risk.historical_cvar(r, level)
    assert cvar >= var - 1e-15
    assert cvar <= -r.min() + 1e-15
    assert risk.historical_var(r, min(level + 0.0005, 0.9995)) >= var - 1e-15


@pytest.mark.parametrize("level", [0.0, 1.0, 99, -0.5, "high"])
def test_level_is_validated(level: object) -> None:
    with pytest.raises(ConfigurationError, match="level"):
        risk.historical_var([0.01, -0.01], level)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="level"):
        risk.historical_cvar([0.01, -0.01], level)  # type: ignore[arg-type]


def test_daily_returns_need_a_datetime_index_and_finite_values() -> None:
    with pytest.raises(ConfigurationError, match="DatetimeIndex"):
        risk.to_daily_returns(pd.Series([0.01, 0.02]))
    with pytest.raises(ConfigurationError, match="DatetimeIndex"):
        risk.to_daily_returns(np.array([0.01, 0.02]))  # type: ignore[arg-type]
    index = pd.date_range("2024-01-01", periods=2, freq="1h", tz="UTC")
    with pytest.raises(ConfigurationError, match="finite"):
        risk.to_daily_returns(pd.Series([0.01, math.nan], index=index))
