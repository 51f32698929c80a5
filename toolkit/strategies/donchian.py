"""Donchian breakout: enter on a close beyond the prior channel, exit on the opposite shorter channel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydantic

from .base import Strategy, StrategyParams, hold


def channel(bars: pd.DataFrame, n: int) -> tuple[pd.Series, pd.Series]:
    """Return the highest high and the lowest low of the ``n`` bars *before* each bar (NaN before).

    The fused sweep kernel (``toolkit.backtest.fused``) reads the same series.
    """
    upper = bars["high"].rolling(n, min_periods=n).max().shift(1)
    lower = bars["low"].rolling(n, min_periods=n).min().shift(1)
    return upper, lower


class DonchianParams(StrategyParams):
    window: int = pydantic.Field(20, ge=2, le=5000, description="entry channel length (bars)")
    exit_window: int = pydantic.Field(10, ge=1, le=5000, description="exit channel length (bars)")
    allow_short: bool = pydantic.Field(False, description="also trade downside breakouts (needs margin)")
    max_hold: int = pydantic.Field(500, ge=1, le=100_000,
                                   description="bars a breakout is held without a new one (time stop)")

    @pydantic.model_validator(mode="after")
    def _exit_not_longer(self) -> DonchianParams:
        if self.exit_window > self.window:
            raise ValueError(f"exit_window ({self.exit_window}) must not exceed window ({self.window})")
        return self


class Donchian(Strategy):
    """Breakout of the highest high / lowest low of the previous ``window`` bars."""

    name = "donchian"
    strategy_type = "swing"
    description = "Donchian channel breakout with a shorter exit channel and a time stop"
    Params = DonchianParams
    params: DonchianParams

    @property
    def warmup(self) -> int:
        return self.params.window

    @property
    def required_history(self) -> int:
        # an event at bar s needs the `window` bars before it; the decision holds events of `max_hold` bars
        return self.params.window + self.params.max_hold

    def signal_values(self, bars: pd.DataFrame) -> np.ndarray:
        p = self.params
        close = bars["close"].to_numpy()
        # channels of the *previous* bars: the current bar is compared against them
        upper, lower = (s.to_numpy() for s in channel(bars, p.window))
        exit_high, exit_low = (s.to_numpy() for s in channel(bars, p.exit_window))
        long_entry = close > upper  # False against NaN, as pandas compares
        long_exit = close < exit_low
        if not p.allow_short:
            return hold(_events(long_entry, 1.0, long_exit), p.max_hold)
        short_entry = close < lower
        short_exit = close > exit_high
        # a long entry closes a short and vice versa, so the two legs never overlap
        long_leg = hold(_events(long_entry, 1.0, long_exit | short_entry), p.max_hold)
        short_leg = hold(_events(short_entry, -1.0, short_exit | long_entry), p.max_hold)
        return long_leg + short_leg


def _events(entry: np.ndarray, level: float, exit_: np.ndarray) -> np.ndarray:
    """Return ``level`` where ``entry`` fires, 0 where only ``exit_`` fires, NaN elsewhere."""
    return np.where(entry, level, np.where(exit_, 0.0, np.nan))
