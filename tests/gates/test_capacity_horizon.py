"""Capacity over the execution horizon, on real bundled bars: the verdict no longer depends on the bar length."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from gate_support import make_evidence, tweak, with_changes

from toolkit.backtest.config import BacktestConfig
from toolkit.backtest.costs import BarCostInputs, CostModel, horizon_bars, horizon_quote_volume, slippage_rates
from toolkit.backtest.portfolio import simulate
from toolkit.data.store import load_bars, quote_volume
from toolkit.gates import Evidence, GatePolicy
from toolkit.gates.risk import capacity
from toolkit.strategies import MACross

START, END = "2024-01-01", "2024-01-31"
CAPITAL = 100_000.0


@pytest.mark.parametrize(("horizon", "minutes", "k"), [
    (60, 1.0, 60), (60, 15.0, 4), (60, 60.0, 1), (60, 240.0, 1), (90, 60.0, 2), (1, 1.0, 1), (60, None, 1),
])
def test_horizon_bars(horizon: int, minutes: float | None, k: int) -> None:
    assert horizon_bars(horizon, minutes) == k


def _run(bars: pd.DataFrame, targets: np.ndarray, timeframe: str) -> Evidence:
    """Simulate ``targets`` on ``bars`` with the default cost model; evidence holding that run."""
    model = CostModel()
    inputs = BarCostInputs.from_bars(bars, model)
    t = targets[:, None]
    slip = slippage_rates(inputs, np.abs(np.diff(t, axis=0, prepend=0.0)), CAPITAL, model)
    sim = simulate(bars, t, slip, model.taker_fee, CAPITAL, (0,), inputs)
    cfg = BacktestConfig(strategy="ma_cross", timeframe=timeframe, capital=CAPITAL, params={"fast": 10, "slow": 50})
    returns = pd.DataFrame({"return": sim.returns[:, 0], "position": targets}, index=bars.index)
    return with_changes(make_evidence(), {"config": cfg, "bars": bars, "returns": returns, "orders": sim.orders[0]})


@pytest.fixture(scope="module")
def runs() -> dict[str, Evidence]:
    """The same positions (ma_cross decided on 1h closes) executed on real 1h and 1m bars of January 2024."""
    hourly = load_bars("BTC/USDT", "1h", START, END)
    minutely = load_bars("BTC/USDT", "1m", START, END)
    decided = MACross(fast=10, slow=50).positions(hourly).to_numpy()
    targets_1h = np.concatenate([[0.0], decided[:-1]])  # executed at the next hour's open
    # on 1m bars: the hour's target from its first minute on
    targets_1m = pd.Series(targets_1h, index=hourly.index).reindex(minutely.index, method="ffill").to_numpy()
    return {"1h": _run(hourly, targets_1h, "1h"), "1m": _run(minutely, targets_1m, "1m")}


def test_the_same_orders_meet_the_same_horizon_volume_at_1m_and_1h(runs: dict[str, Evidence]) -> None:
    o1h, o1m = runs["1h"].bundle.orders, runs["1m"].bundle.orders
    assert len(o1h) >= 10
    assert list(o1h["timestamp"]) == list(o1m["timestamp"])  # the same orders, at the same hour opens
    assert list(o1m["horizon_bars"].unique()) == [60] and list(o1h["horizon_bars"].unique()) == [1]
    assert set(o1m["horizon_minutes"]) == set(o1h["horizon_minutes"]) == {60}
    # the last 60 one-minute bars hold exactly the previous hour's volume (the 1h bars are their sums)
    np.testing.assert_allclose(o1m["horizon_quote_volume"], o1h["horizon_quote_volume"], rtol=1e-9)
    # the notionals differ only through the fills' slippage (σ is measured on different bars)
    np.testing.assert_allclose(o1m["participation"], o1h["participation"], rtol=1e-3)


def test_the_gate_verdict_no_longer_flips_with_the_bar_length(runs: dict[str, Evidence], policy: GatePolicy) -> None:
    g1h, g1m = capacity(runs["1h"], policy), capacity(runs["1m"], policy)
    assert g1h.passed and g1m.passed
    assert g1m.inputs["max_volume_share"] == pytest.approx(g1h.inputs["max_volume_share"], rel=1e-3)
    assert g1m.inputs["horizon_bars"] == 60 and g1h.inputs["horizon_bars"] == 1
    # the old measure (one bar's volume) put the same orders 60x apart, on both sides of the 2 % limit
    old = {}
    for tf, ev in runs.items():
        o, bars = ev.bundle.orders, ev.bundle.bars
        prev = quote_volume(bars).shift(1).to_numpy()[bars.index.get_indexer(pd.DatetimeIndex(o["timestamp"]))]
        old[tf] = float(np.max(o["notional"].abs() / prev))
    assert old["1h"] < policy.capital.max_volume_share < old["1m"], old
    # a limit between them fails both bar lengths alike now
    strict = tweak(policy, capital={"max_volume_share": g1h.inputs["max_volume_share"] * 0.9})
    assert not capacity(runs["1h"], strict).passed and not capacity(runs["1m"], strict).passed


def test_a_halted_horizon_is_unbounded_and_a_halted_bar_inside_one_is_not(policy: GatePolicy) -> None:
    # real: Binance halted spot trading on 2023-03-24; the 12:00 hour has no volume and 13:00 no bar
    bars = load_bars("BTC/USDT", "1h", "2023-03-20", "2023-03-27")
    halted = pd.Timestamp("2023-03-24 12:00", tz="UTC")
    after = pd.Timestamp("2023-03-24 14:00", tz="UTC")
    assert quote_volume(bars).loc[halted] == 0.0 and pd.Timestamp("2023-03-24 13:00", tz="UTC") not in bars.index
    at = bars.index.get_loc(after)
    assert np.isnan(horizon_quote_volume(bars, 1)[at])
    assert horizon_quote_volume(bars, 2)[at] == pytest.approx(quote_volume(bars).iloc[at - 2])  # 11:00 + 0
    # the slippage model charges full participation where the horizon had no volume
    model = CostModel()
    delta = np.zeros(len(bars))
    delta[at] = 1.0
    inputs = BarCostInputs.from_bars(bars, model)
    assert inputs.horizon_bars == 1
    cost = slippage_rates(inputs, delta, CAPITAL, model)[at]
    assert cost == pytest.approx(model.spread_share * model.spread_bps * 1e-4 + model.impact_coef * inputs.sigma[at])

    targets = np.zeros(len(bars))
    targets[at:] = 1.0  # one buy of the whole capital at 14:00
    ev = _run(bars, targets, "1h")
    assert list(ev.bundle.orders["timestamp"]) == [after]
    g = capacity(ev, policy)  # 60 min: the one bar before is the halted hour
    assert not g.passed and g.inputs["unbounded_orders"] == 1
    g2 = capacity(ev, tweak(policy, capital={"execution_horizon_minutes": 120}))  # 11:00 and the halted 12:00
    assert g2.passed and g2.inputs["unbounded_orders"] == 0
    assert g2.inputs["max_volume_share"] == pytest.approx(
        float(ev.bundle.orders["notional"].iloc[0]) / float(quote_volume(bars).iloc[at - 2]))
