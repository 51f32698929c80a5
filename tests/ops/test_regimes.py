"""The liquidity regime map on the bundled Binance BTC/USDT bars: buckets, figures re-computed by hand,
the week's known shape (quiet weekend nights, busy US-open weekdays), re-derivation and bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from toolkit.backtest.costs import CostModel
from toolkit.data import load_bars
from toolkit.errors import ConfigurationError, DataError
from toolkit.ops.regimes import BUCKETS, QUANTILES, RegimeMap, bucket_of, regime_map, verify_regime_map

TUE_14, SAT_03 = 1 * 24 + 14, 5 * 24 + 3


@pytest.fixture(scope="module")
def minute_bars() -> pd.DataFrame:
    return load_bars("BTC/USDT", "1m", "2024-01-01", "2024-04-30")


@pytest.fixture(scope="module")
def minute_map(minute_bars: pd.DataFrame) -> RegimeMap:
    return regime_map(minute_bars, "BTC/USDT")


def test_buckets_are_utc_hours_of_the_week_from_monday() -> None:
    assert bucket_of(pd.Timestamp("2024-01-01 00:00", tz="UTC")) == 0  # a Monday
    assert bucket_of(pd.Timestamp("2024-01-07 23:59", tz="UTC")) == BUCKETS - 1  # the Sunday after
    assert bucket_of(pd.Timestamp("2024-01-02 14:30")) == TUE_14  # tz-naive is UTC
    assert bucket_of(pd.Timestamp("2024-01-02 16:30", tz="Europe/Berlin")) == 1 * 24 + 15
    index = pd.date_range("2024-01-01", periods=BUCKETS * 2, freq="1h", tz="UTC")
    assert bucket_of(index).tolist() == list(range(BUCKETS)) * 2


def test_quantiles_equal_a_computation_by_hand(minute_bars: pd.DataFrame, minute_map: RegimeMap) -> None:
    bars = minute_bars
    in_bucket = (bars.index.dayofweek == 1) & (bars.index.hour == 14)
    volume = bars.loc[in_bucket, "quote_volume"].to_numpy()  # per 1-minute bar: per minute
    hi, lo = np.log(bars["high"].to_numpy()), np.log(bars["low"].to_numpy())
    beta = (hi - lo) ** 2 + np.roll((hi - lo) ** 2, 1)
    gamma = (np.maximum(hi, np.roll(hi, 1)) - np.minimum(lo, np.roll(lo, 1))) ** 2
    k = 3 - 2 * np.sqrt(2)
    alpha = (np.sqrt(2 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    spread = np.clip(2 * (np.exp(alpha) - 1) / (1 + np.exp(alpha)), 0, None)[in_bucket] * 1e4
    for q in QUANTILES:
        assert minute_map.quantile("quote_volume_per_min", TUE_14, q) == pytest.approx(
            np.quantile(volume, q), rel=1e-5)
        assert minute_map.quantile("spread_bps", TUE_14, q) == pytest.approx(np.quantile(spread, q), rel=1e-5, abs=1e-9)
    assert minute_map.document["samples"][TUE_14] == int(in_bucket.sum()) > 1000


def test_the_map_shows_the_weeks_shape(minute_map: RegimeMap) -> None:
    volume = minute_map.frame("quote_volume_per_min")
    weekend_nights = volume.loc[["Sat", "Sun"], 0:6].to_numpy().mean()
    weekday_us_open = volume.loc[["Mon", "Tue", "Wed", "Thu", "Fri"], 13:16].to_numpy().mean()
    assert weekday_us_open > 2.5 * weekend_nights
    assert minute_map.regime(SAT_03) == "low" and minute_map.regime(TUE_14) == "high"
    labels = minute_map.document["regime"]
    assert {r: labels.count(r) for r in ("low", "normal", "high")} == {"low": 56, "normal": 56, "high": 56}
    # realised volatility per √minute is higher in the busy hour too
    assert minute_map.quantile("volatility_bps", TUE_14, 0.5) > minute_map.quantile("volatility_bps", SAT_03, 0.5)


def test_slippage_follows_the_cost_model_and_the_order_size(minute_bars: pd.DataFrame) -> None:
    model = CostModel(impact_coef=0.5)
    small = regime_map(minute_bars, "BTC/USDT", model, reference_notional=10_000)
    large = regime_map(minute_bars, "BTC/USDT", model, reference_notional=2_000_000)
    for bucket in (TUE_14, SAT_03):
        # half the one-tick spread plus square-root impact: 200 times the size, about √200 times the cost
        half_spread = model.spread_share * model.spread_bps
        ratio = ((large.quantile("slippage_bps", bucket, 0.5) - half_spread)
                 / (small.quantile("slippage_bps", bucket, 0.5) - half_spread))
        assert ratio == pytest.approx(np.sqrt(200), rel=1e-3)


def test_the_map_re_derives_from_its_bars_and_names_a_forged_figure(minute_bars: pd.DataFrame,
                                                                     minute_map: RegimeMap) -> None:
    again = RegimeMap.from_json(minute_map.to_json())
    verify_regime_map(again, minute_bars)
    assert again.sha256 == minute_map.sha256

    doc = json.loads(minute_map.to_json())
    doc["metrics"]["spread_bps"][TUE_14][3] *= 0.5  # a looser threshold, re-hashed by whoever forged it
    from toolkit.canonical import canonical_sha256
    doc["sha256"] = canonical_sha256({k: v for k, v in doc.items() if k != "sha256"})
    with pytest.raises(DataError, match=rf"metrics\.spread_bps\[{TUE_14}\]"):
        verify_regime_map(RegimeMap.from_json(json.dumps(doc)), minute_bars)

    doc["metrics"]["spread_bps"][TUE_14][3] *= 2.0  # not re-hashed
    with pytest.raises(ConfigurationError, match="sha256"):
        RegimeMap.from_json(json.dumps(doc))
    with pytest.raises(DataError, match="data_hash"):
        verify_regime_map(minute_map, minute_bars.iloc[1:])


def test_bad_input_is_named() -> None:
    hourly = load_bars("BTC/USDT", "1h", "2024-01-01", "2024-01-20")  # under three weeks: thin buckets
    with pytest.raises(DataError, match="at least 8 bars in each of the 168 hours"):
        regime_map(hourly, "BTC/USDT")
    daily = load_bars("BTC/USDT", "1d", "2022-01-01", "2024-12-31")
    with pytest.raises(ConfigurationError, match="bars: expected bars of one hour or shorter"):
        regime_map(daily, "BTC/USDT")
    with pytest.raises(ConfigurationError, match="reference_notional"):
        regime_map(hourly, "BTC/USDT", reference_notional=-1.0)
    with pytest.raises(ConfigurationError, match="schema"):
        RegimeMap.from_json('{"schema": 7}')
    m = regime_map(load_bars("BTC/USDT", "1h", "2023-01-01", "2023-12-31"), "BTC/USDT")
    with pytest.raises(ConfigurationError, match="metric: expected one of"):
        m.quantile("funding", 0, 0.5)
    with pytest.raises(ConfigurationError, match="quantile"):
        m.quantile("spread_bps", 0, 0.75)
