"""Tests of toolkit.stats.metrics: hand-computed cases and invariance properties."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from toolkit.data.resample import bars_per_year
from toolkit.errors import ConfigurationError
from toolkit.stats import metrics as m

PPY_15M = bars_per_year("15m")


def _series(values: list[float], freq: str = "15min") -> pd.Series:
    index = pd.date_range("2024-01-01", periods=len(values), freq=freq, tz="UTC", name="timestamp")
    return pd.Series(values, index=index, dtype=float)


# --------------------------------------------------------------------------- hand-computed cases
def test_total_return_and_cagr_by_hand() -> None:
    r = [0.1, -0.1, 0.05, 0.1]
    growth = 1.1 * 0.9 * 1.05 * 1.1  # 1.14345
    assert m.total_return(r) == pytest.approx(growth - 1)
    # four daily bars on 365-day years: years = 4 / 365
    assert m.cagr(r, 365) == pytest.approx(growth ** (365 / 4) - 1)
    # 730 bars of 0.1% per bar at 365 bars per year = 2 years
    flat = np.full(730, 0.001)
    assert m.cagr(flat, 365) == pytest.approx(1.001**365 - 1)
    assert m.total_return([]) == 0.0
    assert math.isnan(m.cagr([], 365))
    assert m.cagr([-1.0, 0.5], 365) == -1.0
    assert m.cagr([0.5] * 10, PPY_15M) == math.inf


def test_volatility_sharpe_sortino_by_hand() -> None:
    r = np.array([0.01, -0.02, 0.03, 0.00])
    mean = 0.02 / 4
    var1 = sum((x - mean) ** 2 for x in r) / 3
    assert m.annual_volatility(r, 365) == pytest.approx(math.sqrt(var1) * math.sqrt(365))
    assert m.sharpe_ratio(r) == pytest.approx(mean / math.sqrt(var1))
    assert m.sharpe_ratio(r, 365) == pytest.approx(mean / math.sqrt(var1) * math.sqrt(365))
    rf = 0.001
    assert m.sharpe_ratio(r, 1.0, risk_free=rf) == pytest.approx((mean - rf) / math.sqrt(var1))
    downside = math.sqrt((0.02**2) / 4)  # only -0.02 is below 0
    assert m.sortino_ratio(r, 365) == pytest.approx(mean / downside * math.sqrt(365))
    # target 0.01: shortfalls -0.03 and -0.01 (0.01 itself is not below)
    dd_t = math.sqrt((0.03**2 + 0.01**2) / 4)
    assert m.sortino_ratio(r, 365, target=0.01) == pytest.approx((mean - 0.01) / dd_t * math.sqrt(365))


def test_degenerate_sharpe_and_sortino_are_nan_or_inf() -> None:
    assert math.isnan(m.sharpe_ratio([0.01]))
    assert math.isnan(m.sharpe_ratio([]))
    assert math.isnan(m.sharpe_ratio([0.01] * 10))
    assert math.isnan(m.annual_volatility([0.01], 365))
    assert m.sortino_ratio([0.01, 0.02], 365) == math.inf
    assert math.isnan(m.sortino_ratio([0.0, 0.0], 365))


def test_drawdowns_by_hand() -> None:
    r = _series([0.1, -0.1, 0.05, 0.1])
    # equity 1, 1.1, 0.99, 1.0395, 1.14345
    dd = m.drawdown_series(r)
    assert dd.index.equals(r.index)
    np.testing.assert_allclose(dd.to_numpy(), [0.0, 0.99 / 1.1 - 1, 1.0395 / 1.1 - 1, 0.0], atol=1e-15)
    assert m.max_drawdown(r) == pytest.approx(-0.1)
    # peak after bar 0 (equity position 1), recovered after bar 3 (position 4): 3 bars
    assert m.max_drawdown_duration(r) == 3
    assert m.max_drawdown_duration_time(r) == pd.Timedelta(minutes=45)
    assert m.calmar_ratio(r, 365) == pytest.approx(m.cagr(r, 365) / 0.1)


def test_drawdown_from_the_initial_equity_and_unrecovered() -> None:
    r = _series([-0.2, 0.1, 0.05, -0.1, 0.01], freq="1h")
    # equity 1, .8, .88, .924, .8316, .839916: never recovers the initial peak
    assert m.max_drawdown(r) == pytest.approx(-0.2)
    assert m.max_drawdown_duration(r) == 5
    # the initial equity is stamped one bar before the first label
    assert m.max_drawdown_duration_time(r) == pd.Timedelta(hours=5)
    assert m.max_drawdown_duration([0.01, 0.02]) == 0
    assert m.max_drawdown_duration([]) == 0
    assert m.max_drawdown([]) == 0.0
    assert math.isnan(m.calmar_ratio([0.01, 0.02], 365))


def test_longest_drawdown_is_chosen_not_the_deepest() -> None:
    # deep but short: -50% then +100% (recovers in 2 bars from the peak);
    # shallow but long: -1% then four flat bars then +2%
    r = [0.1, -0.5, 1.0, -0.01, 0.0, 0.0, 0.0, 0.0, 0.02]
    assert m.max_drawdown(r) == pytest.approx(-0.5)
    assert m.max_drawdown_duration(r) == 6


def test_drawdown_time_counts_index_gaps() -> None:
    index = pd.DatetimeIndex(
        ["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:02", "2024-01-03 00:00"], tz="UTC"
    )
    r = pd.Series([0.01, -0.05, 0.0, 0.1], index=index)
    assert m.max_drawdown_duration(r) == 3
    assert m.max_drawdown_duration_time(r) == pd.Timestamp("2024-01-03", tz="UTC") - index[0]


def test_drawdown_recovery_is_robust_to_round_off() -> None:
    # -x / (1 + x) undoes +x exactly in real numbers; float round-off must not extend the drawdown
    r = [0.3, -0.3, 0.3 / 0.7, 0.0, 0.0]  # back to 1.3 in reals, 2.2e-16 short in floats
    assert np.prod(1 + np.array(r)) < 1.3
    assert m.max_drawdown_duration(r) == 2


def test_duration_time_needs_a_datetime_index() -> None:
    with pytest.raises(ConfigurationError, match="DatetimeIndex"):
        m.max_drawdown_duration_time(pd.Series([0.1, -0.1]))
    with pytest.raises(ConfigurationError, match="DatetimeIndex"):
        m.max_drawdown_duration_time(np.array([0.1, -0.1]))  # type: ignore[arg-type]


def test_trade_metrics_by_hand() -> None:
    pnl = [10.0, -5.0, 20.0, -15.0, 0.0]
    assert m.win_rate(pnl) == pytest.approx(2 / 5)
    assert m.profit_factor(pnl) == pytest.approx(30 / 20)
    assert m.expectancy(pnl) == pytest.approx(2.0)
    assert m.profit_factor([1.0, 2.0]) == math.inf
    assert math.isnan(m.profit_factor([]))
    assert math.isnan(m.profit_factor([0.0, 0.0]))
    assert math.isnan(m.win_rate([]))
    assert math.isnan(m.expectancy([]))
    assert m.profit_factor([-1.0]) == 0.0


def test_exposure_and_turnover_by_hand() -> None:
    pos = [0.0, 1.0, 1.0, -1.0, 0.0, 0.5]
    assert m.exposure(pos) == pytest.approx(4 / 6)
    # |Δ|: 0, 1, 0, 2, 1, 0.5 = 4.5 over 6 bars
    assert m.turnover(pos, 365) == pytest.approx(4.5 * 365 / 6)
    # daily flip +1/-1 every day on daily bars -> 2 per day after the entry
    flips = np.tile([1.0, -1.0], 365)
    assert m.turnover(flips, 365) == pytest.approx((1 + 2 * 729) * 365 / 730)
    assert math.isnan(m.exposure([]))


def test_summary_keys_types_and_values() -> None:
    r = _series([0.1, -0.1, 0.05, 0.1])
    out = m.summary(r, [0.0, 1.0, 1.0, -1.0], [0.1, -0.05], 365)
    assert list(out) == [
        "total_return", "cagr", "volatility", "sharpe", "sortino", "calmar", "max_drawdown",
        "max_drawdown_bars", "max_drawdown_days", "win_rate", "profit_factor", "expectancy",
        "exposure", "turnover", "trade_count", "n_obs",
    ]  # fmt: skip
    assert all(type(v) is float for v in out.values())
    assert out["max_drawdown_bars"] == 3.0
    assert out["max_drawdown_days"] == pytest.approx(45 / (24 * 60))  # wall clock, 15-minute index
    assert out["sharpe"] == pytest.approx(m.sharpe_ratio(r, 365))
    assert out["trade_count"] == 2.0 and out["n_obs"] == 4.0
    assert out["profit_factor"] == pytest.approx(2.0)
    json.loads(json.dumps(out))  # JSON friendly (nan/inf as the json module writes them)
    bare = m.summary(r.to_numpy(), None, None, 365)
    assert bare["max_drawdown_days"] == pytest.approx(3.0)  # 3 bars at 365 bars per year
    assert math.isnan(bare["exposure"]) and math.isnan(bare["win_rate"]) and bare["trade_count"] == 0.0


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "x"])
def test_periods_per_year_is_validated(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="periods_per_year"):
        m.sharpe_ratio([0.01, 0.02], bad)  # type: ignore[arg-type]


def test_bad_returns_are_rejected_with_a_named_field() -> None:
    with pytest.raises(ConfigurationError, match="returns: expected finite"):
        m.sharpe_ratio([0.01, math.nan, 0.02])
    with pytest.raises(ConfigurationError, match="returns: expected a 1-D"):
        m.total_return(np.zeros((2, 2)))
    with pytest.raises(ConfigurationError, match=">= -1"):
        m.max_drawdown([0.1, -1.5])
    with pytest.raises(ConfigurationError, match="trade_pnl"):
        m.win_rate([1.0, math.inf])
    with pytest.raises(ConfigurationError, match="positions"):
        m.exposure(["a", "b"])


# --------------------------------------------------------------------------- properties
returns_arrays = arrays(
    np.float64,
    st.integers(2, 60),
    elements=st.floats(-0.5, 0.5, allow_nan=False, allow_subnormal=False),
)


@settings(max_examples=150, deadline=None)
@given(returns_arrays, st.floats(1e-3, 1e3))
def test_sharpe_is_invariant_to_positive_scaling(r: np.ndarray, c: float) -> None:
    base = m.sharpe_ratio(r)
    if math.isnan(base):
        assert math.isnan(m.sharpe_ratio(r * c))
    else:
        assert m.sharpe_ratio(r * c) == pytest.approx(base, rel=1e-7, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(returns_arrays)
def test_sharpe_flips_sign_under_negation(r: np.ndarray) -> None:
    base = m.sharpe_ratio(r)
    if not math.isnan(base):
        assert m.sharpe_ratio(-r) == pytest.approx(-base, rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(returns_arrays, st.sampled_from([365.0, 8760.0, PPY_15M, 525600.0]))
def test_annualised_sharpe_is_per_period_times_sqrt_ppy(r: np.ndarray, ppy: float) -> None:
    per = m.sharpe_ratio(r)
    if not math.isnan(per):
        assert m.sharpe_ratio(r, ppy) == pytest.approx(per * math.sqrt(ppy), rel=1e-9, abs=1e-9)
        assert m.annual_volatility(r, ppy) == pytest.approx(np.std(r, ddof=1) * math.sqrt(ppy), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(returns_arrays, st.floats(-0.01, 0.01))
def test_risk_free_equals_shifting_returns(r: np.ndarray, rf: float) -> None:
    a = m.sharpe_ratio(r, 1.0, risk_free=rf)
    b = m.sharpe_ratio(r - rf)
    if not (math.isnan(a) or math.isnan(b)):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-9)


@settings(max_examples=150, deadline=None)
@given(returns_arrays)
def test_drawdown_is_nonpositive_and_bounded(r: np.ndarray) -> None:
    dd = m.drawdown_series(r)
    assert (dd <= 0).all() and (dd >= -1).all()
    assert m.max_drawdown(r) == pytest.approx(float(dd.min()))
    assert 0 <= m.max_drawdown_duration(r) <= r.size


@settings(max_examples=100, deadline=None)
@given(returns_arrays, returns_arrays)
def test_total_return_of_concatenation_compounds(a: np.ndarray, b: np.ndarray) -> None:
    joined = m.total_return(np.concatenate([a, b]))
    ga, gb = 1 + m.total_return(a), 1 + m.total_return(b)
    # a growth near 0 is stored as a total return near -1: allow that absolute round-off
    slack = 8 * np.finfo(float).eps * max(ga, 1.0) * max(gb, 1.0)
    assert 1 + joined == pytest.approx(ga * gb, rel=1e-9, abs=slack)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 60), elements=st.floats(0.0, 0.5, allow_subnormal=False)))
def test_monotone_equity_has_no_drawdown(r: np.ndarray) -> None:
    assert m.max_drawdown(r) == 0.0
    assert m.max_drawdown_duration(r) == 0


@settings(max_examples=100, deadline=None)
@given(returns_arrays)
def test_max_drawdown_matches_a_brute_force_over_all_pairs(r: np.ndarray) -> None:
    equity = np.concatenate([[1.0], np.cumprod(1 + r)])
    worst = min(equity[j] / equity[i] - 1 for i in range(equity.size) for j in range(i, equity.size))
    assert m.max_drawdown(r) == pytest.approx(min(worst, 0.0), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(0, 40), elements=st.floats(-100, 100, allow_subnormal=False)))
def test_profit_factor_and_win_rate_ranges(pnl: np.ndarray) -> None:
    pf, wr = m.profit_factor(pnl), m.win_rate(pnl)
    assert math.isnan(pf) or pf >= 0
    assert math.isnan(wr) or 0 <= wr <= 1
    if pnl.size and (pnl < 0).any() and (pnl > 0).any():
        assert (pf > 1) == (pnl.sum() > 0)


def test_a_spread_at_float_rounding_is_not_variation() -> None:
    """[0.5, 0.5 + 1 ulp] once gave a Sharpe of ~9e15 that scaling changed (found by Hypothesis)."""
    r = np.array([0.5, np.nextafter(0.5, 1.0)])
    assert math.isnan(m.sharpe_ratio(r)) and math.isnan(m.sharpe_ratios(r[:, None])[0])
    assert m.sharpe_ratio(np.array([0.5, 0.5001])) > 0  # a real, small spread is still measured
