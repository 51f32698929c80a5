"""Trading costs: exchange fees and a slippage model calibrated on real Binance BTC/USDT book data.

Slippage for an order executed at the open of bar ``t`` uses only bars up to
``t − 1`` (no lookahead):

    slippage = spread_share · spread + impact_coef · σ_h · participation ** impact_exponent

* ``spread`` is the relative quoted spread (ask − bid)/mid; ``spread_share`` = 0.5
  charges half of it (a market order crosses from the mid to the touch).
  ``spread_model="fixed"`` (the default) uses ``spread_bps``;
  ``spread_model="corwin_schultz"`` uses a rolling median (``spread_window`` bars)
  of the Corwin–Schultz (2012) high–low estimator, for markets without book
  data. On BTC/USDT that estimator is far off: a median of 13–14 bps on the
  bundled 1h bars of 2024 (about 7 bps charged a side), 1.1 bps on the 1m bars
  around the capture, while the book shows one tick, 0.0016 bps (see below);
  so it is not the default.
* ``participation`` = order notional / quote volume of the last ``k`` closed bars
  before the order, ``k = max(1, ceil(execution_horizon_minutes / bar minutes))``
  (fewer bars at the very start of the data): the order's share of the volume
  traded over the horizon it is worked over. A horizon with no volume counts as
  full participation (1.0). The capacity gate measures participation the same
  way (``horizon_quote_volume``) over the *policy's* horizon
  (``capital.execution_horizon_minutes``); both default to 60 minutes.
* ``σ_h`` = σ_bar · √k, the rolling std (``spread_window`` bars) of bar log
  returns scaled to the horizon. With volume and variance both linear in time,
  σ_h·√(Q/V_h) does not depend on the bar length: the same order costs the same
  on 1m and 1h bars. With ``impact_exponent`` = 0.5 this is the square-root law,
  ``impact_coef`` its constant Y.

Measured constants (``toolkit.backtest.calibration``, ``notebooks/cost_calibration.ipynb``;
data: the bundled Binance spot BTC/USDT capture of 2024-08-08 23:54 → 2024-08-09
00:05 UTC, ``toolkit/data/bundled/book/``):

* ``spread_bps`` = 0.0016: the median relative spread of the 73,174 book-ticker
  updates (one tick, 0.01 USDT at ~61,800 USDT; one tick 99.3 % of the time,
  time-weighted mean 0.0044 bps). The 2021-01-08 quote sample (46 s) also has
  a one-tick median (0.0025 bps at ~39,400 USDT) but was wider 45 % of the
  time (time-weighted mean 0.50 bps): the book is not always this tight, yet
  even then the spread term is a small fraction of the 10 bps taker fee.
* ``impact_coef`` = 0.18 (fit: 0.179): the geometric mean, over orders of 100k,
  250k, 500k and 1M USDT, of (mean cost of walking the rebuilt L2 book, both
  sides, once a second, 651 states − the half-spread term) / mean of
  σ_h·√participation at the capture's minutes (60-minute horizon: σ_h ≈ 106 bps,
  horizon volume ≈ 230M USDT). Mean book-walk costs vs mid: 0.21, 0.54, 1.13 and
  2.14 bps; the model charges 0.40, 0.63, 0.89 and 1.26 bps (factors 1.9, 1.2,
  1.3, 1.7). The book's cost grows about linearly with size where the
  square-root law is concave, so the model overcharges small orders and
  undercharges large ones: within 100k–1M USDT the two agree within 2×, outside
  it less well (10k: 0.13 vs 0.02 bps, 5×; 50k: 2.5× over; 2.5M: 2.0 vs 4.7 bps,
  2.4× under). Real taker orders in the trades sample agree with the book
  walks (mean 0.26 bps vs the touch for 100k–250k USDT, 27 orders). A 100k–250k
  USDT order costs well under 1 bp here (the 10 bps taker fee dominates). One
  11-minute sample of one busy evening: treat Y as an order of magnitude, and
  keep the cost-stress gate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pydantic

from toolkit.data.store import quote_volume

__all__ = [
    "BarCostInputs",
    "CostModel",
    "bar_minutes",
    "corwin_schultz_spread",
    "horizon_bars",
    "horizon_quote_volume",
    "participation",
    "slippage_rates",
]

#: median relative spread (bps) of the bundled BTC/USDT book ticker, 2024-08-08/09 (one tick)
BOOK_SPREAD_BPS = 0.0016
#: Y of the square-root law fitted to book walks of 100k–1M USDT on the same capture
BOOK_IMPACT_COEF = 0.18


class CostModel(pydantic.BaseModel):
    """Fees (fractions of notional) and the slippage model's parameters (see the module docstring)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    taker_fee: float = pydantic.Field(0.001, ge=0.0, le=0.01, description="Binance spot VIP0 taker: 0.10%")
    maker_fee: float = pydantic.Field(0.001, ge=0.0, le=0.01, description="Binance spot VIP0 maker: 0.10%")
    spread_model: Literal["fixed", "corwin_schultz"] = pydantic.Field(
        "fixed", description="fixed: spread_bps (measured on the book); corwin_schultz: estimated from the bars")
    spread_bps: float = pydantic.Field(
        BOOK_SPREAD_BPS, ge=0.0, le=1000.0,
        description="quoted spread (ask-bid)/mid in bps for spread_model=fixed: BTC/USDT book median, one tick")
    spread_share: float = pydantic.Field(0.5, ge=0.0, le=2.0, description="share of the spread paid")
    spread_window: int = pydantic.Field(
        96, ge=2, le=10_000, description="bars in the rolling windows: Corwin-Schultz median and sigma")
    impact_coef: float = pydantic.Field(
        BOOK_IMPACT_COEF, ge=0.0, le=10.0, description="Y in Y·σ_h·participation^exponent (BTC/USDT book: 0.18)")
    impact_exponent: float = pydantic.Field(0.5, gt=0.0, le=2.0, description="0.5 = square-root law")
    execution_horizon_minutes: int = pydantic.Field(
        60, ge=1, description="participation = notional / quote volume of the bars covering this horizon")
    max_slippage: float = pydantic.Field(0.05, gt=0.0, le=0.5, description="cap per order (fraction)")

    def stressed(self, factor: float) -> CostModel:
        """Return this model with fees and slippage (spread and impact terms) scaled by ``factor``."""
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


def bar_minutes(index: pd.DatetimeIndex) -> float | None:
    """Return the bar length in minutes: the median spacing of ``index`` (None below two bars)."""
    if len(index) < 2:
        return None
    return float(np.median(np.diff(index.asi8))) / 60e9


def horizon_bars(horizon_minutes: int, minutes_per_bar: float | None) -> int:
    """Return ``k = max(1, ceil(horizon / bar minutes))``, the closed bars an order's horizon covers."""
    if minutes_per_bar is None or minutes_per_bar <= 0:
        return 1
    return max(1, math.ceil(horizon_minutes / minutes_per_bar - 1e-9))


def horizon_quote_volume(bars: pd.DataFrame, k: int) -> np.ndarray:
    """Return, for each bar ``t``, the quote volume of bars ``t−k … t−1`` (fewer at the start).

    NaN where that total is not positive (no earlier bar, or only zero-volume
    bars): participation there is unbounded. Zero-volume bars inside a horizon
    with volume elsewhere are fine.
    """
    qv = quote_volume(bars).fillna(0.0)
    total = qv.rolling(int(k), min_periods=1).sum().shift(1).to_numpy(dtype="float64")
    return np.where(total > 0, total, np.nan)


@dataclass(frozen=True)
class BarCostInputs:
    """Per-bar inputs of the slippage model known at the previous close (computed once per sweep)."""

    spread: np.ndarray               # relative spread at t-1 (fixed, or rolling-median Corwin–Schultz)
    sigma: np.ndarray                # σ_h: rolling std of bar log returns at t-1, times √k
    horizon_quote_volume: np.ndarray  # quote volume of bars t-k..t-1 (NaN when not positive)
    horizon_bars: int                # k
    horizon_minutes: int             # the cost model's execution horizon

    @classmethod
    def from_bars(cls, bars: pd.DataFrame, model: CostModel, minutes_per_bar: float | None = None) -> BarCostInputs:
        """Compute the inputs; the bar length is the index's median spacing unless given."""
        minutes = bar_minutes(pd.DatetimeIndex(bars.index)) if minutes_per_bar is None else minutes_per_bar
        k = horizon_bars(model.execution_horizon_minutes, minutes)
        if model.spread_model == "fixed":
            spread = np.full(len(bars), model.spread_bps * 1e-4)
        else:
            cs = corwin_schultz_spread(bars).rolling(model.spread_window, min_periods=1).median()
            spread = cs.shift(1).fillna(0.0).to_numpy()
        sigma = np.log(bars["close"]).diff().rolling(model.spread_window, min_periods=2).std()
        return cls(
            spread=spread,
            sigma=sigma.shift(1).fillna(0.0).to_numpy() * math.sqrt(k),
            horizon_quote_volume=horizon_quote_volume(bars, k),
            horizon_bars=k,
            horizon_minutes=model.execution_horizon_minutes,
        )


def participation(inputs: BarCostInputs, order_notional: np.ndarray) -> np.ndarray:
    """Return each order's share of the quote volume traded over its horizon (the ``k`` bars before it).

    ``order_notional`` is aligned to execution bars (shape T or T×N). An order
    whose horizon had no volume (halted market) counts as full participation.
    """
    notional = np.asarray(order_notional, dtype="float64")
    vol = inputs.horizon_quote_volume[:, None] if notional.ndim == 2 else inputs.horizon_quote_volume
    share = notional / vol
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
