"""Built-in strategies and the name -> class registry.

Self-contained on purpose (numpy, pandas, pydantic and relative imports only; numba when
installed compiles the sizing band):
this package is copied into every registered model version.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import ParameterError, Strategy, StrategyParams, StrategyType
from .bollinger import Bollinger
from .donchian import Donchian
from .ma_cross import MACross
from .sizing import Sizing, rebalance

__all__ = [
    "BUILTINS",
    "Bollinger",
    "Donchian",
    "MACross",
    "ParameterError",
    "Sizing",
    "Strategy",
    "StrategyParams",
    "StrategyType",
    "get_strategy",
    "make_strategy",
    "rebalance",
]

BUILTINS: dict[str, type[Strategy]] = {cls.name: cls for cls in (MACross, Donchian, Bollinger)}


def get_strategy(name: str) -> type[Strategy]:
    """Return the strategy class registered as ``name``."""
    try:
        return BUILTINS[name]
    except KeyError:
        raise ParameterError("strategy", f"one of {sorted(BUILTINS)}", name) from None


def make_strategy(name: str, params: Mapping[str, object] | None = None) -> Strategy:
    """Build a strategy from its name and parameters (validated)."""
    return get_strategy(name)(**(params or {}))
