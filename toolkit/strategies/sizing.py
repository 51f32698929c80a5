"""Volatility-targeted sizing: a strategy's direction becomes a position sized to a risk budget.

A strategy decides a direction in [-1, 1] on each closed bar; the sizing turns it
into a position (a fraction of equity) that aims at ``target_vol_annual_pct`` of
annual volatility:

    raw_t = direction_t · min(max_position, target_vol / σ̂_t)

where σ̂_t is the annualised standard deviation of the last ``vol_window_days``
of bar log returns (365-day years, known at bar ``t``'s close; floored at
``min_vol_annual_pct`` so that a quiet week cannot lever the position up). The
estimate has finite memory, so the sized target on ``required_history`` bars
equals the target on the full history.

A continuous target would trade on every bar. The rebalancing band keeps the
current position unless the new target differs from it by more than
``rebalance_band`` of the current position (relative), changes side, or goes to
zero::

    rebalance(raw, held) = raw   if held == 0 or raw == 0 or sign(raw) != sign(held)
                                  or |raw - held| > band · |held|
                           held  otherwise

The band acts on the position actually held: the backtest applies it to its
simulated position bar by bar (``size_positions``); the runner applies the same
``rebalance`` to the account's position. This module travels inside every
registered model version (numpy, pandas and pydantic only).
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
import pandas as pd
import pydantic

__all__ = ["Sizing", "rebalance"]

_MINUTES_PER_YEAR = 365 * 24 * 60


class Sizing(pydantic.BaseModel):
    """Volatility targeting with a rebalancing band (part of the backtest config and the version)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    target_vol_annual_pct: float = pydantic.Field(
        15.0, gt=0.0, le=200.0, description="annualised volatility the position aims at, % (365-day years)")
    max_position: float = pydantic.Field(1.0, gt=0.0, le=10.0, description="largest |position| / equity")
    vol_window_days: float = pydantic.Field(
        30.0, gt=0.0, le=365.0, description="days of bar returns in the volatility estimate")
    min_vol_annual_pct: float = pydantic.Field(
        10.0, gt=0.0, le=500.0, description="floor of the volatility estimate, % a year")
    rebalance_band: float = pydantic.Field(
        0.25, ge=0.0, le=10.0, description="resize only when the target moves this share of the position")

    def window_bars(self, bar_minutes: float) -> int:
        """Return the bars in the volatility window for bars of ``bar_minutes``."""
        return max(2, math.ceil(self.vol_window_days * 1440.0 / bar_minutes))

    def required_history(self, bar_minutes: float) -> int:
        """Return the closed bars the sized target needs (the window of returns plus one price)."""
        return self.window_bars(bar_minutes) + 1

    def scale(self, close: pd.Series, bar_minutes: float) -> pd.Series:
        """Return the position per unit of direction at each bar: min(max_position, target / σ̂_t).

        NaN while fewer than the window's returns are known (the position is then flat).
        """
        return pd.Series(self.scale_values(close.to_numpy(dtype="float64"), bar_minutes), index=close.index,
                         name=close.name)

    def scale_values(self, close: np.ndarray, bar_minutes: float) -> np.ndarray:
        """Return :meth:`scale` as a float64 array (the runner's call: no Series per step).

        The rolling standard deviation is pandas' (the same numbers as the backtest's, to the bit);
        the rest is numpy, which keeps NaN where pandas' ``clip`` keeps it.
        """
        n = self.window_bars(bar_minutes)
        r = np.empty(len(close), dtype="float64")
        r[:1] = np.nan
        r[1:] = np.diff(np.log(close))
        sd = pd.Series(r).rolling(n, min_periods=n).std(ddof=1).to_numpy()
        sigma = np.maximum(sd * math.sqrt(_MINUTES_PER_YEAR / bar_minutes), self.min_vol_annual_pct / 100.0)
        return np.minimum(self.target_vol_annual_pct / 100.0 / sigma, self.max_position)

    def targets(self, direction: pd.Series | np.ndarray, close: pd.Series, bar_minutes: float) -> np.ndarray:
        """Return the raw sized targets (T, or T×N for T×N directions), 0 where the scale is unknown."""
        s = self.scale(close, bar_minutes).fillna(0.0).to_numpy()
        d = np.asarray(direction, dtype="float64")
        return d * (s[:, None] if d.ndim == 2 else s)

    def apply_band(self, raw: np.ndarray, start: np.ndarray | float = 0.0) -> np.ndarray:
        """Return the positions held after the band, bar by bar, from the ``start`` position (T or T×N)."""
        raw = np.asarray(raw, dtype="float64")
        two_d = raw.ndim == 2
        x = np.ascontiguousarray(raw if two_d else raw[:, None])
        held = np.broadcast_to(np.asarray(start, dtype="float64"), x.shape[1:]).copy()
        out = _band_loop(x, held, float(self.rebalance_band))
        return out if two_d else out[:, 0]

    def positions(self, direction: pd.Series | np.ndarray, close: pd.Series, bar_minutes: float,
                  start: np.ndarray | float = 0.0) -> np.ndarray:
        """Return the sized, banded positions for a direction series (the backtest's and the runner's code)."""
        return self.apply_band(self.targets(direction, close, bar_minutes), start)


def band_step(r: float, h: float, band: float) -> float:
    """Return the position to hold after one bar: ``rebalance`` for one position (scalar).

    The only statement of the band rule in loops: the backtest's loop below and the fused
    sweep kernel (``toolkit.backtest.fused``) both call it.
    """
    if h == 0.0 or r == 0.0 or (r > 0.0) != (h > 0.0) or abs(r - h) > band * abs(h):
        return r
    return h


def _band_loop_py(x: np.ndarray, held: np.ndarray, band: float) -> np.ndarray:
    """``band_step`` applied bar by bar to every column of ``x`` (T×N), from ``held`` (N)."""
    out = np.empty_like(x)
    for j in range(x.shape[1]):
        h = held[j]
        for t in range(x.shape[0]):
            h = band_step(x[t, j], h, band)
            out[t, j] = h
    return out


_compiled: list[Any] = []  # the compiled band loop, made on first use (importing numba costs ~0.7 s)


def _band_loop(x: np.ndarray, held: np.ndarray, band: float) -> np.ndarray:
    """``_band_loop_py`` compiled by numba (installed with vectorbt; loaded from its on-disk cache after the
    first compilation), or the same Python loop in a model environment without numba."""
    if not _compiled:
        try:
            from numba import njit
        except ImportError:  # pragma: no cover - a model environment without numba
            _compiled.append(_band_loop_py)
        else:
            # the same code object, its `band_step` resolved to the compiled step (inlined by numba)
            step = njit(cache=True, nogil=True, inline="always")(band_step)
            loop = types.FunctionType(_band_loop_py.__code__, {**globals(), "band_step": step}, "_band_loop")
            _compiled.append(njit(cache=True, nogil=True)(loop))
    return _compiled[0](x, held, band)  # type: ignore[no-any-return]


def rebalance(raw: np.ndarray | float, held: np.ndarray | float, band: float) -> np.ndarray:
    """Return the position to hold given the new sized target ``raw`` and the position ``held`` (vectorised)."""
    raw = np.asarray(raw, dtype="float64")
    held = np.asarray(held, dtype="float64")
    move = ((held == 0.0) | (raw == 0.0) | (np.sign(raw) != np.sign(held))
            | (np.abs(raw - held) > band * np.abs(held)))
    return np.where(move, raw, held)
