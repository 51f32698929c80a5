"""The cost model against the real Binance BTC/USDT book it was calibrated on (bundled, 2024-08-08/09).

Bounds, both ways (model/book and book/model):

* spread: within **2×** of the book ticker's median relative spread. The spread
  is one tick almost all the time (99.3 % of the capture), so the median is
  exact to the tick; 2× leaves room for a tick at another price level (the
  2021 sample, one tick at 39,400 USDT, is 1.6× the 2024 figure) and nothing
  more: a model charging two ticks or a bar-based estimate is out.
* total slippage of market orders of 100k, 250k, 500k and 1M USDT: within
  **2.5×** of the mean cost of walking the rebuilt L2 book. The model is a
  square-root law and the book's cost grows about linearly with size; fitted
  across a decade of sizes, a √ law can follow a line within about
  10^(1/4) ≈ 1.8× at both ends. The extra margin is for the sample (11
  minutes of one evening). The old default (Corwin–Schultz spread, Y = 1,
  participation in the previous bar) is at least 5× off at every one of
  these sizes, so the bound tells the two apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from toolkit.backtest.calibration import (
    book_states,
    book_walk_costs,
    compare_with_book,
    fit_impact_coef,
    load_book_sample,
    load_sample_bars,
    relative_spread,
    spread_summary,
    taker_orders,
    walk_cost,
)
from toolkit.backtest.costs import (
    BOOK_IMPACT_COEF,
    BOOK_SPREAD_BPS,
    BarCostInputs,
    CostModel,
    corwin_schultz_spread,
    slippage_rates,
)
from toolkit.data.store import load_bars

SPREAD_FACTOR = 2.0
IMPACT_FACTOR = 2.5
SIZES = [100_000.0, 250_000.0, 500_000.0, 1_000_000.0]
#: the defaults before the calibration: bar-estimated spread, Y = 1, one bar's volume (on 1m bars)
OLD_DEFAULT = CostModel(spread_model="corwin_schultz", impact_coef=1.0, execution_horizon_minutes=1)


def _factor(a: float, b: float) -> float:
    return max(a / b, b / a)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_sample_bars()


@pytest.fixture(scope="module")
def walks() -> pd.DataFrame:
    return book_walk_costs(list(book_states(load_book_sample("depth"), "1s")), SIZES)


def _book_spread_bps(table: str) -> float:
    return float(relative_spread(load_book_sample(table)).median()) * 1e4


def test_the_default_spread_is_the_books_within_2x() -> None:
    model_bps = CostModel().spread_bps
    for table in ("bookticker", "quotes_2021"):  # the calibration capture, and another year
        assert _factor(model_bps, _book_spread_bps(table)) <= SPREAD_FACTOR, table
    s = spread_summary(load_book_sample("bookticker"))
    assert s["one_tick_time_share"] > 0.99
    assert _factor(model_bps, s["time_weighted_median_bps"]) <= SPREAD_FACTOR


def test_the_default_constants_are_the_measured_ones(walks: pd.DataFrame, bars: pd.DataFrame) -> None:
    assert _book_spread_bps("bookticker") == pytest.approx(BOOK_SPREAD_BPS, rel=0.02)  # 0.01 / 61,800
    assert fit_impact_coef(walks, bars, SIZES) == pytest.approx(BOOK_IMPACT_COEF, abs=0.01)  # 0.179


def test_the_bar_estimated_spread_is_not_the_books() -> None:
    # Corwin–Schultz on the capture's 1m bars and on the bundled 1h bars of the same month
    book = _book_spread_bps("bookticker")
    for b in (load_sample_bars(), load_bars("BTC/USDT", "1h", "2024-08-01", "2024-08-31")):
        estimate = float(corwin_schultz_spread(b).median()) * 1e4
        assert _factor(estimate, book) > 100 * SPREAD_FACTOR, estimate


def test_slippage_matches_book_walks_within_2_5x(walks: pd.DataFrame, bars: pd.DataFrame) -> None:
    table = compare_with_book(walks, bars, SIZES)
    assert (table["factor"] <= IMPACT_FACTOR).all(), table
    # honest about the scale: 100k-250k USDT costs well under 1 bp in the book, and in the model
    assert (table.loc[[100_000.0, 250_000.0], ["book_bps", "model_bps"]] < 1.0).all().all(), table
    # and about the shape: the model overcharges the smallest and undercharges the largest order
    assert table["model_over_book"].iloc[0] > 1.0 > table["model_over_book"].iloc[-1]


def test_the_old_default_fails_the_same_bound(walks: pd.DataFrame, bars: pd.DataFrame) -> None:
    old = compare_with_book(walks, bars, SIZES, OLD_DEFAULT)
    assert (old["factor"] > 2 * IMPACT_FACTOR).all(), old
    # the calibrated impact with the bar-estimated spread is still out for the 100k order
    cs_only = compare_with_book(walks, bars, SIZES, CostModel(spread_model="corwin_schultz"))
    assert cs_only["factor"].iloc[0] > IMPACT_FACTOR, cs_only


def test_real_taker_orders_cost_what_the_book_walks_say(walks: pd.DataFrame) -> None:
    # one taker order = the trades sharing a trade time and aggressor side; cost = VWAP vs its first price
    orders = taker_orders(load_book_sample("trades"))
    big = orders[(orders["notional"] > 100_000) & (orders["notional"] <= 250_000)]
    assert len(big) >= 20
    taker_bps = float(big["cost_bps"].mean())
    book_bps = float(walks[[100_000.0, 250_000.0]].mean().mean()) * 1e4
    assert _factor(taker_bps, book_bps) <= IMPACT_FACTOR, (taker_bps, book_bps)


def test_stress_scales_the_fixed_spread_and_the_impact(bars: pd.DataFrame) -> None:
    model = CostModel()
    inputs = BarCostInputs.from_bars(bars, model)
    at = len(bars) - 10
    for size in (0.0, 1_000_000.0):  # spread term alone, then spread and impact
        delta = np.full(len(bars), size)
        base = slippage_rates(inputs, delta, 1.0, model)[at]
        assert base > 0.0
        assert slippage_rates(inputs, delta, 1.0, model.stressed(3.0))[at] == pytest.approx(3.0 * base)


def test_walk_cost_by_hand() -> None:
    prices, qty = np.array([100.0, 101.0]), np.array([1.0, 1.0])
    # 150 USDT: 1 unit at 100, then 50 USDT at 101; VWAP = 150 / (1 + 50/101)
    vwap = 150.0 / (1.0 + 50.0 / 101.0)
    assert walk_cost(prices, qty, 99.5, 150.0) == pytest.approx((vwap - 99.5) / 99.5)
    assert walk_cost(prices, qty, 99.5, 50.0) == pytest.approx(0.5 / 99.5)  # inside the first level
    assert np.isnan(walk_cost(prices, qty, 99.5, 202.0))  # more than the levels hold
