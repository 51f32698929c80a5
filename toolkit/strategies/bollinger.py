"""Bollinger mean reversion: fade closes outside the band, exit at the mean."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic

from .base import Strategy, StrategyParams, hold


class BollingerParams(StrategyParams):
    window: int = pydantic.Field(20, ge=2, le=5000, description="band mean/std length (bars)")
    k: float = pydantic.Field(2.0, gt=0.0, le=10.0, description="band width in standard deviations")
    allow_short: bool = pydantic.Field(True, description="also fade closes above the upper band")


class Bollinger(Strategy):
    """Long below the lower band until the close regains the mean (short: mirror)."""

    name = "bollinger"
    strategy_type = "intraday"
    description = "Bollinger-band mean reversion with exit at the moving average"
    Params = BollingerParams
    params: BollingerParams

    @property
    def warmup(self) -> int:
        return self.params.window - 1

    def signal(self, bars: pd.DataFrame) -> pd.Series:
        p = self.params
        close = bars["close"]
        mean = close.rolling(p.window, min_periods=p.window).mean()
        std = close.rolling(p.window, min_periods=p.window).std(ddof=0)
        z = (close - mean) / std.where(std > 0)
        long_entry = z < -p.k
        long_exit = z >= 0.0
        if not p.allow_short:
            events = np.where(long_entry, 1.0, np.where(long_exit, 0.0, np.nan))
            return hold(pd.Series(events, index=bars.index))
        short_entry = z > p.k
        short_exit = z <= 0.0
        idx = bars.index
        long_leg = hold(pd.Series(np.where(long_entry, 1.0, np.where(long_exit | short_entry, 0.0, np.nan)), idx))
        short_leg = hold(pd.Series(np.where(short_entry, -1.0, np.where(short_exit | long_entry, 0.0, np.nan)), idx))
        return long_leg + short_leg
