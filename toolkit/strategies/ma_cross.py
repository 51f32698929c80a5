"""Moving-average crossover: long while the fast mean is above the slow one."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic

from .base import Strategy, StrategyParams


def sma(close: pd.Series, n: int) -> pd.Series:
    """Return the simple moving average of the last ``n`` closes (NaN before ``n`` bars).

    The fused sweep kernel (``toolkit.backtest.fused``) reads the same series.
    """
    return close.rolling(n, min_periods=n).mean()


class MACrossParams(StrategyParams):
    fast: int = pydantic.Field(10, ge=2, le=1000, description="fast SMA length (bars)")
    slow: int = pydantic.Field(50, ge=3, le=5000, description="slow SMA length (bars)")
    allow_short: bool = pydantic.Field(False, description="go short when fast < slow (needs margin)")

    @pydantic.model_validator(mode="after")
    def _fast_below_slow(self) -> MACrossParams:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be less than slow ({self.slow})")
        return self


class MACross(Strategy):
    """Long (or short) on the side of the fast simple moving average."""

    name = "ma_cross"
    strategy_type = "intraday"
    description = "Simple moving-average crossover on closes"
    Params = MACrossParams
    params: MACrossParams

    @property
    def warmup(self) -> int:
        return self.params.slow - 1

    @property
    def required_history(self) -> int:
        return self.params.slow

    def signal_values(self, bars: pd.DataFrame) -> np.ndarray:
        close = bars["close"]
        fast = sma(close, self.params.fast).to_numpy()
        slow = sma(close, self.params.slow).to_numpy()
        short = -1.0 if self.params.allow_short else 0.0
        return np.where(np.isnan(slow), np.nan, np.where(fast > slow, 1.0, short))
