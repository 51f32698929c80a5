"""Trading costs: exchange fees and a slippage model estimated from the bars themselves.

Slippage for an order executed at the open of bar ``t+1`` uses only bars up to
``t`` (no lookahead):

    slippage = spread_share · spread_t + impact_coef · σ_t · participation ** impact_exponent

``spread_t`` is a rolling median of the Corwin–Schultz (2012) high–low spread
estimator (relative to price); ``spread_share`` = 0.5 charges half of it.
``σ_t`` is the rolling standard deviation of bar log returns and
``participation`` the order's notional over the previous bar's quote volume:
with the default exponent 0.5 the impact term is the square-root law with
``impact_coef`` as its constant Y (about 1 in empirical studies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pydantic

from toolkit.data.store import quote_volume

__all__ = ["CostModel", "corwin_schultz_spread", "participation", "slippage_rates"]


class CostModel(pydantic.BaseModel):
    """Fees (fractions of notional) and the slippage model's parameters."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    taker_fee: float = pydantic.Field(0.001, ge=0.0, le=0.01, description="Binance spot VIP0 taker: 0.10%")
    maker_fee: float = pydantic.Field(0.001, ge=0.0, le=0.01, description="Binance spot VIP0 maker: 0.10%")
    spread_share: float = pydantic.Field(0.5, ge=0.0, le=2.0, description="share of the estimated spread paid")
    spread_window: int = pydantic.Field(96, ge=2, le=10_000, description="bars in the rolling median spread")
    impact_coef: float = pydantic.Field(1.0, ge=0.0, le=10.0, description="Y in Y·σ·participation^exponent")
    impact_exponent: float = pydantic.Field(0.5, gt=0.0, le=2.0, description="0.5 = square-root law")
    max_slippage: float = pydantic.Field(0.05, gt=0.0, le=0.5, description="cap per order (fraction)")

    def stressed(self, factor: float) -> CostModel:
        """Return this model with fees and slippage scaled by ``factor`` (cost stress tests)."""
        return self.model_copy(update={
            "taker_fee": self.taker_fee * factor,
            "maker_fee": self.maker_fee * factor,
            "spread_share": self.spread_share * factor,
            "impact_coef": self.impact_coef * factor,
        })


def corwin_schultz_spread(bars: pd.DataFrame) -> pd.Series:
    """Return the Corwin–Schultz relative spread estimate per bar (two-bar window, floored at 0)."""
    hi = np.log(bars["high"].to_numpy(dtype="float64"))
    lo = np.log(bars["low"].to_numpy(dtype="float64"))
    hl = (hi - lo) ** 2
    beta = hl + np.roll(hl, 1)
    gamma = (np.maximum(hi, np.roll(hi, 1)) - np.minimum(lo, np.roll(lo, 1))) ** 2
    k = 3.0 - 2.0 * np.sqrt(2.0)
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    spread = 2.0 * (np.exp(alpha) - 1.0) / (1.0 + np.exp(alpha))
    spread[0] = np.nan
    return pd.Series(np.clip(spread, 0.0, None), index=bars.index, name="spread")


@dataclass(frozen=True)
class BarCostInputs:
    """Per-bar inputs of the slippage model known at the previous close (computed once per sweep)."""

    spread: np.ndarray         # rolling-median Corwin–Schultz spread at t-1
    sigma: np.ndarray          # rolling std of log returns at t-1
    prev_quote_volume: np.ndarray  # quote volume of bar t-1 (NaN when zero or unknown)

    @classmethod
    def from_bars(cls, bars: pd.DataFrame, model: CostModel) -> BarCostInputs:
        spread = corwin_schultz_spread(bars).rolling(model.spread_window, min_periods=1).median()
        sigma = np.log(bars["close"]).diff().rolling(model.spread_window, min_periods=2).std()
        qv = quote_volume(bars).to_numpy()
        prev = np.concatenate([[np.nan], qv[:-1]])
        return cls(
            spread=spread.shift(1).fillna(0.0).to_numpy(),
            sigma=sigma.shift(1).fillna(0.0).to_numpy(),
            prev_quote_volume=np.where(prev > 0, prev, np.nan),
        )


def participation(inputs: BarCostInputs, order_notional: np.ndarray) -> np.ndarray:
    """Return each order's share of the previous closed bar's quote volume.

    ``order_notional`` is aligned to execution bars (shape T or T×N). An order
    after a zero-volume (halted) bar counts as full participation.
    """
    notional = np.asarray(order_notional, dtype="float64")
    prev = inputs.prev_quote_volume[:, None] if notional.ndim == 2 else inputs.prev_quote_volume
    share = notional / prev
    return np.where(np.isnan(share) & (notional > 0), 1.0, np.nan_to_num(share))


def slippage_rates(bars: pd.DataFrame | BarCostInputs, delta_positions: np.ndarray, capital: float,
                   model: CostModel) -> np.ndarray:
    """Return the slippage fraction for an order at each execution bar.

    Parameters
    ----------
    bars
        The bars (row ``i`` is the execution bar; orders fill at its open), or
        their precomputed ``BarCostInputs``.
    delta_positions
        |Δ target position| executed at each bar (T or T×N), in fractions of equity.
    capital
        Equity used to turn position changes into notional (the capital allocation).
    model
        The cost model.
    """
    inputs = bars if isinstance(bars, BarCostInputs) else BarCostInputs.from_bars(bars, model)
    delta = np.abs(np.asarray(delta_positions, dtype="float64"))
    part = participation(inputs, delta * capital)
    spread, sigma = inputs.spread, inputs.sigma
    if delta.ndim == 2:
        spread, sigma = spread[:, None], sigma[:, None]
    slip = model.spread_share * spread + model.impact_coef * sigma * np.power(part, model.impact_exponent)
    return np.minimum(slip, model.max_slippage)
