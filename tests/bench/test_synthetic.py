"""bench/synthetic.py: deterministic, valid bars; no edge in noise; the calibrated edge in trend."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import synthetic as sy  # noqa: E402

from toolkit.data.quality import certify  # noqa: E402
from toolkit.data.store import quote_volume, validate_bars  # noqa: E402

MARKETS = [
    sy.MarketParams("noise", 0.45, None, None, 0.0, n_bars=2000),
    sy.MarketParams("noise", 0.85, 3.0, None, 0.0, n_bars=2000),
    sy.MarketParams("trend", 0.60, 4.0, 300.0, 0.07, n_bars=2000),
]


@pytest.mark.parametrize("market", MARKETS, ids=lambda m: f"{m.design}-{m.tail_df}")
def test_bars_are_deterministic_for_a_seed(market: sy.MarketParams) -> None:
    a = sy.make_bars(market, np.random.default_rng(7))
    pd.testing.assert_frame_equal(a, sy.make_bars(market, np.random.default_rng(7)))
    assert not a["close"].equals(sy.make_bars(market, np.random.default_rng(8))["close"])


@pytest.mark.parametrize("market", MARKETS, ids=lambda m: f"{m.design}-{m.tail_df}")
def test_bars_are_valid_hourly_utc_ohlcv(market: sy.MarketParams) -> None:
    bars = sy.make_bars(market, np.random.default_rng(1))
    assert list(bars.columns) == ["open", "high", "low", "close", "volume"]
    assert all(dt == np.float64 for dt in bars.dtypes)
    assert str(bars.index.tz) == "UTC" and bars.index.name == "timestamp"
    assert len(bars) == market.n_bars
    assert (np.diff(bars.index.asi8) == 3_600 * 10**9).all()  # hourly, no gap
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    assert (bars["low"] > 0).all() and (bars["volume"] > 0).all()
    assert (bars["open"].to_numpy()[1:] == bars["close"].to_numpy()[:-1]).all()
    validate_bars(bars, "synthetic")
    assert certify(bars, "BTC/USDT", "1h").passed
    daily = quote_volume(bars).resample("1D").sum().iloc[1:-1]
    assert 0.3e9 < daily.median() < 10e9  # BTC-like turnover, USDT per day


def test_noise_has_no_edge_for_a_long_flat_crossover() -> None:
    years = 40
    market = sy.MarketParams("noise", 0.7, 3.0, None, 0.0, n_bars=years * sy.HOURS_PER_YEAR)
    r, _ = sy.simulate_returns(market, np.random.default_rng(11))
    for fast, slow in ((8, 75), (30, 300)):
        gross = sy.long_flat_returns(r, fast, slow, fee=0.0)
        t = gross.mean() / gross.std(ddof=1) * math.sqrt(gross.size)
        assert abs(t) < 3.0, (fast, slow, t)  # zero expected return before costs
        assert sy.long_flat_returns(r, fast, slow).mean() < 0.0  # fees make it a loser
    assert abs(r.mean() / r.std(ddof=1) * math.sqrt(r.size)) < 3.0  # the asset itself has no drift


def test_trend_has_the_calibrated_sharpe_between_calibration_points() -> None:
    doc = json.loads(sy.CALIBRATION_FILE.read_text())
    settings = sy.CalibrationSettings()
    assert doc["settings_sha256"] == settings.sha256(), "re-run: .venv/bin/python bench/synthetic.py"
    cal = sy.load_calibration(settings=settings)
    vol, persistence = 0.65, 350.0  # off the calibration grid: the interpolation is checked too
    market = sy.MarketParams("trend", vol, None, persistence, cal.snr(vol, persistence))
    sharpe, se = sy.true_sharpe(market, np.random.default_rng(5), years=150)
    assert se < 0.15
    assert abs(sharpe - sy.TARGET_SHARPE) < 0.3, (sharpe, se)  # about 3 standard errors
    buy_hold = sy.simulate_returns(market, np.random.default_rng(6))[0]
    assert abs(buy_hold.mean()) < 3.0 * buy_hold.std() / math.sqrt(buy_hold.size)  # the edge is in the timing
