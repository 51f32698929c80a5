"""Bollinger mean reversion: fade closes outside the band, exit at the mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic

from .base import Strategy, StrategyParams, hold


def band(close: pd.Series, n: int) -> tuple[pd.Series, pd.Series]:
    """Return the rolling mean and population standard deviation of the last ``n`` closes.

    The fused sweep kernel (``toolkit.backtest.fused``) reads the same series.
    """
    return close.rolling(n, min_periods=n).mean(), close.rolling(n, min_periods=n).std(ddof=0)


class BollingerParams(StrategyParams):
    window: int = pydantic.Field(20, ge=2, le=5000, description="band mean/std length (bars)")
    k: float = pydantic.Field(2.0, gt=0.0, le=10.0, description="band width in standard deviations")
    allow_short: bool = pydantic.Field(False, description="also fade closes above the upper band (needs margin)")
    max_hold: int = pydantic.Field(100, ge=1, le=100_000,
                                   description="bars a reversion trade is held at most (time stop)")


class Bollinger(Strategy):
    """Long below the lower band until the close regains the mean or the time stop (short: mirror)."""

    name = "bollinger"
    strategy_type = "intraday"
    description = "Bollinger-band mean reversion with exit at the moving average"
    Params = BollingerParams
    params: BollingerParams

    @property
    def warmup(self) -> int:
        return self.params.window - 1

    @property
    def required_history(self) -> int:
        # an event at bar s needs the `window` bars ending at s; the decision holds events of `max_hold` bars
        return self.params.window + self.params.max_hold - 1

    def signal_values(self, bars: pd.DataFrame) -> np.ndarray:
        p = self.params
        close = bars["close"]
        mean, std = (s.to_numpy() for s in band(close, p.window))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = (close.to_numpy() - mean) / np.where(std > 0, std, np.nan)
        long_entry = z < -p.k  # False against NaN, as pandas compares
        long_exit = z >= 0.0
        if not p.allow_short:
            return hold(np.where(long_entry, 1.0, np.where(long_exit, 0.0, np.nan)), p.max_hold)
        short_entry = z > p.k
        short_exit = z <= 0.0
        long_ev = np.where(long_entry, 1.0, np.where(long_exit | short_entry, 0.0, np.nan))
        short_ev = np.where(short_entry, -1.0, np.where(short_exit | long_entry, 0.0, np.nan))
        return hold(long_ev, p.max_hold) + hold(short_ev, p.max_hold)
