"""The vectorbt adapter against an independent hand simulation: fills at the next open, fees, slippage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit.backtest.portfolio import simulate


def _bars(n: int = 40, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    # opens gap away from the previous close, so trading at the close would be visible
    open_ = np.concatenate(([100.0], close[:-1] * np.exp(rng.normal(0.0, 0.005, n - 1))))
    high = np.maximum(open_, close) * 1.002
    low = np.minimum(open_, close) * 0.998
    idx = pd.date_range("2024-01-01", periods=n, freq="15min", tz="UTC", name="timestamp")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": np.full(n, 10.0), "quote_volume": 10.0 * close}, index=idx)


def _hand_simulation(bars: pd.DataFrame, p: np.ndarray, capital: float) -> np.ndarray:
    """Cash and units, no costs: when the target changes, trade at the open to p·equity; else hold units."""
    o, c = bars["open"].to_numpy(), bars["close"].to_numpy()
    cash, units, prev_equity, prev_target = capital, 0.0, capital, np.nan
    out = np.empty(len(bars))
    for t in range(len(bars)):
        if p[t] != prev_target:
            equity_open = cash + units * o[t]
            new_units = p[t] * equity_open / o[t]
            cash -= (new_units - units) * o[t]
            units, prev_target = new_units, p[t]
        equity = cash + units * c[t]
        out[t] = equity / prev_equity - 1.0
        prev_equity = equity
    return out


def test_zero_cost_returns_match_a_hand_simulation_filled_at_the_open() -> None:
    bars = _bars()
    rng = np.random.default_rng(11)
    targets = rng.choice([-1.0, 0.0, 0.5, 1.0], size=(len(bars), 1))
    targets[0] = 0.0
    sim = simulate(bars, targets, np.zeros_like(targets), fee=0.0, capital=1_000.0)
    expected = _hand_simulation(bars, targets[:, 0], 1_000.0)
    np.testing.assert_allclose(sim.returns[:, 0], expected, rtol=0, atol=1e-10)
    # the same positions filled at the close would give visibly different returns
    at_close = targets[:, 0][:-1] * (bars["close"].pct_change().to_numpy()[1:])
    assert np.abs(at_close - expected[1:]).max() > 1e-3


@pytest.mark.parametrize(("fee", "slip"), [(0.001, 0.0), (0.0, 0.0005), (0.001, 0.0005)])
def test_round_trip_costs_by_hand(fee: float, slip: float) -> None:
    bars = _bars()
    targets = np.zeros((len(bars), 1))
    targets[5:20] = 1.0  # buy at the open of bar 5, sell at the open of bar 20
    sim = simulate(bars, targets, np.full_like(targets, slip), fee=fee, capital=1_000.0, detail_columns=(0,))
    o = bars["open"].to_numpy()
    final = 1_000.0 * (o[20] * (1 - slip) * (1 - fee)) / (o[5] * (1 + slip) * (1 + fee))
    assert np.prod(1.0 + sim.returns[:, 0]) * 1_000.0 == pytest.approx(final, rel=1e-9)
    orders = sim.orders[0]
    assert list(orders["timestamp"]) == [bars.index[5], bars.index[20]]
    assert orders["price"].iloc[0] == pytest.approx(o[5] * (1 + slip))
    assert orders["price"].iloc[1] == pytest.approx(o[20] * (1 - slip))
    trades = sim.trades[0]
    assert len(trades) == 1 and trades["direction"].iloc[0] == "long"


def test_columns_are_independent() -> None:
    bars = _bars()
    rng = np.random.default_rng(5)
    targets = rng.choice([0.0, 1.0], size=(len(bars), 3))
    slip = np.full_like(targets, 0.0003)
    together = simulate(bars, targets, slip, fee=0.001, capital=5_000.0).returns
    for j in range(3):
        alone = simulate(bars, targets[:, [j]], slip[:, [j]], fee=0.001, capital=5_000.0).returns
        np.testing.assert_allclose(together[:, j], alone[:, 0], atol=1e-12)
