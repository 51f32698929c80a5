"""The strategy interface.

A strategy maps closed bars to a target direction in [-1, 1] (short, flat, long);
``toolkit.strategies.sizing.Sizing`` turns it into a position sized to a risk budget.
Spot strategies are long/flat: shorting is an explicit parameter (``allow_short``)
that the spot policy refuses.
``positions(bars)[t]`` is decided with bars up to and including bar ``t`` (its
close is known) and is executed at the open of bar ``t + 1``; nothing at ``t``
may depend on a later bar. The same code runs vectorised over a history for a
backtest and on a growing history bar by bar in the runner.

This package is self-contained (numpy, pandas, pydantic, relative imports only)
because it travels inside every registered MLflow model version.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
import pydantic

__all__ = ["ParameterError", "Strategy", "StrategyParams", "StrategyType"]

StrategyType = Literal["hft", "intraday", "swing"]


class ParameterError(ValueError):
    """A strategy parameter is unknown, malformed or out of range."""

    def __init__(self, field: str, expected: str, found: Any) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{field}: expected {expected}, found {found!r}")


class StrategyParams(pydantic.BaseModel):
    """Base of every strategy's parameter model: frozen, strict, no unknown keys."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=False)


class Strategy:
    """Base class; subclasses set ``name``, ``strategy_type``, ``Params`` and ``signal``."""

    name: ClassVar[str]
    strategy_type: ClassVar[StrategyType]
    description: ClassVar[str] = ""
    Params: ClassVar[type[StrategyParams]]

    def __init__(self, **params: Any) -> None:
        try:
            self.params = self.Params(**params)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"]) or "params"
            field = f"{self.name}.{loc}"
            if err["type"] == "extra_forbidden":
                known = ", ".join(self.Params.model_fields)
                raise ParameterError(field, f"one of the parameters {known}", err.get("input")) from None
            raise ParameterError(field, err["msg"].lower(), err.get("input")) from None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def param_names(cls) -> list[str]:
        """Return the parameter names in declaration order."""
        return list(cls.Params.model_fields)

    @property
    def warmup(self) -> int:
        """Return the number of bars needed before the first meaningful position."""
        raise NotImplementedError

    @property
    def required_history(self) -> int:
        """Return the closed bars a decision needs: the last decision on any history of at least
        this many bars equals the decision at the same bar on the full history (finite memory).
        """
        raise NotImplementedError

    @property
    def can_short(self) -> bool:
        """Return True when the strategy may decide a negative direction."""
        return bool(getattr(self.params, "allow_short", False))

    def signal(self, bars: pd.DataFrame) -> pd.Series:
        """Return the raw target position per bar (NaN allowed during warm-up).

        A subclass implements this or :meth:`signal_values` (the same numbers as an array, without a
        Series per step; the built-in strategies do, so a decision costs tens of microseconds).
        """
        return pd.Series(self.signal_values(bars), index=bars.index)

    def signal_values(self, bars: pd.DataFrame) -> np.ndarray:
        """Return :meth:`signal` as a float64 array."""
        if type(self).signal is Strategy.signal:
            raise NotImplementedError(f"{type(self).__name__} implements neither signal nor signal_values")
        return np.asarray(self.signal(bars), dtype="float64")

    def position_values(self, bars: pd.DataFrame) -> np.ndarray:
        """Return :meth:`positions` as a float64 array."""
        # a subclass that overrides `signal` (and not `signal_values`) is read through it
        raw = (self.signal_values(bars) if type(self).signal is Strategy.signal
               else np.asarray(self.signal(bars), dtype="float64"))
        out = np.clip(np.where(np.isnan(raw), 0.0, raw), -1.0, 1.0)
        out[: min(self.warmup, len(out))] = 0.0
        return out

    def positions(self, bars: pd.DataFrame) -> pd.Series:
        """Return target positions in [-1, 1], flat (0) during warm-up.

        Parameters
        ----------
        bars
            Closed bars indexed by open time, with open, high, low, close, volume.
        """
        return pd.Series(self.position_values(bars), index=bars.index, name="position")

    def last_position(self, bars: pd.DataFrame) -> float:
        """Return the decision at the last closed bar (the live runner's call)."""
        if bars.empty:
            return 0.0
        return float(self.position_values(bars)[-1])


def hold(events: pd.Series | np.ndarray, max_hold: int) -> np.ndarray:
    """Hold the last event level until the next event, for at most ``max_hold`` bars.

    ``events`` is NaN where nothing happens and the new target where an entry or
    an exit fires (0.0 for an exit). A level is held on the event's bar and the
    ``max_hold - 1`` bars after it, then the position goes flat unless a new event
    fired (a time stop; an entry that fires again renews it). The result starts
    flat. The time stop gives the strategy finite memory: the decision at a bar
    depends only on the events of the last ``max_hold`` bars. (``Series.ffill(limit=max_hold - 1)``
    then ``fillna(0.0)``, as an array.)
    """
    ev = np.asarray(events, dtype="float64")
    at = np.arange(len(ev))
    last = np.maximum.accumulate(np.where(np.isnan(ev), -1, at))
    held = (last >= 0) & (at - last <= max_hold - 1)
    return np.where(held, ev[np.maximum(last, 0)], 0.0)
