"""The backtest configuration: one frozen, validated object; its sha256 is its identity."""

from __future__ import annotations

import itertools
from typing import Any, Literal

import pydantic

from toolkit.backtest.costs import CostModel
from toolkit.canonical import canonical_sha256
from toolkit.data.resample import timeframe_minutes
from toolkit.data.store import parse_time, symbol_key
from toolkit.errors import ConfigurationError, from_pydantic
from toolkit.naming import validate_model_name
from toolkit.strategies import ParameterError, Sizing, get_strategy

__all__ = ["BacktestConfig", "Fold", "WalkForward", "config_from_params", "parse_grid"]

#: fewest bars in an in-sample window or an out-of-sample block
MIN_BLOCK_BARS = 30


class WalkForward(pydantic.BaseModel):
    """Walk-forward selection: choose in-sample, trade the next block out-of-sample, repeat.

    The first ``train_share`` of the bars is the first in-sample window; the rest is
    cut into ``folds`` equal out-of-sample blocks. Before each block the combination
    with the highest in-sample Sharpe is chosen on every bar before it (``anchored``)
    or on the ``train_share`` of bars just before it (rolling).
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    train_share: float = pydantic.Field(0.1, gt=0.0, lt=1.0, description="share of the bars in the first window")
    folds: int = pydantic.Field(9, ge=1, le=520, description="out-of-sample blocks after the first window")
    anchored: bool = pydantic.Field(True, description="in-sample window grows from the start (else it rolls)")


class Fold(pydantic.BaseModel):
    """One walk-forward step in bar positions: choose on [train_lo, test_lo), trade [test_lo, test_hi)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    train_lo: int
    test_lo: int
    test_hi: int

GridValue = int | float | bool | str


class BacktestConfig(pydantic.BaseModel):
    """Everything that determines a backtest's result."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    strategy: str
    symbol: str = "BTC/USDT"
    timeframe: str = "15m"
    start: str | None = None
    end: str | None = None
    params: dict[str, GridValue] = pydantic.Field(default_factory=dict)
    grid: dict[str, list[GridValue]] = pydantic.Field(default_factory=dict)
    costs: CostModel = pydantic.Field(default_factory=lambda: CostModel())
    capital: float = pydantic.Field(100_000.0, gt=0.0, description="capital allocation (quote currency)")
    split: float = pydantic.Field(0.7, gt=0.0, lt=1.0, description="in-sample share of the bars (selection=split)")
    selection: Literal["walk_forward", "split"] = pydantic.Field(
        "walk_forward", description="walk-forward selection, or one in-sample/out-of-sample split")
    walk_forward: WalkForward = pydantic.Field(default_factory=lambda: WalkForward())
    sizing: Sizing = pydantic.Field(default_factory=lambda: Sizing())
    borrow_rate_annual_pct: float = pydantic.Field(
        10.0, ge=0.0, le=200.0, description="margin model: cost of borrowing for a short position, % a year")
    experiment: str = "backtests"
    model_name: str | None = None
    bars_file: str | None = None

    @pydantic.field_validator("strategy")
    @classmethod
    def _known_strategy(cls, v: str) -> str:
        get_strategy(v)
        return v

    @pydantic.field_validator("symbol")
    @classmethod
    def _symbol(cls, v: str) -> str:
        return symbol_key(v).replace("-", "/")

    @pydantic.field_validator("model_name")
    @classmethod
    def _model_name(cls, v: str | None) -> str | None:
        return None if v is None else validate_model_name(v)

    @pydantic.field_validator("timeframe")
    @classmethod
    def _timeframe(cls, v: str) -> str:
        timeframe_minutes(v)
        return v

    @pydantic.model_validator(mode="after")
    def _check(self) -> BacktestConfig:
        t0 = parse_time(self.start, "start")
        t1 = parse_time(self.end, "end", end=True)
        if t0 is not None and t1 is not None and t1 <= t0:
            raise ConfigurationError("end", f"a date after start ({self.start})", self.end)
        names = get_strategy(self.strategy).param_names()
        both = sorted(set(self.params) & set(self.grid))
        if both:
            raise ConfigurationError(f"params.{both[0]}", "a parameter either fixed (params/--param) or swept "
                                     "(grid/--grid), not both", {"params": self.params[both[0]],
                                                                "grid": self.grid[both[0]]})
        for key in [*self.params, *self.grid]:
            if key not in names:
                raise ConfigurationError(f"grid/params.{key}", f"a parameter of {self.strategy}: {names}", key)
        for key, values in self.grid.items():
            if not values:
                raise ConfigurationError(f"grid.{key}", "at least one value", values)
        if not self.combinations():
            raise ConfigurationError("grid", "at least one valid parameter combination", dict(self.grid))
        return self

    @property
    def model_name_or_default(self) -> str:
        """Return the registered model name, e.g. ``ma_cross.BTC-USDT.15m``."""
        return self.model_name or f"{self.strategy}.{symbol_key(self.symbol)}.{self.timeframe}"

    def sha256(self) -> str:
        """Return the sha256 of the canonical JSON form (the config's identity)."""
        return canonical_sha256(self.model_dump(mode="json"), ascii_only=True)

    def folds(self, n_bars: int) -> list[Fold]:
        """Return the selection's folds over ``n_bars`` bars (one fold for ``selection=split``).

        Raises ``DataError`` when a window or block would hold fewer than ``MIN_BLOCK_BARS`` bars.
        """
        from toolkit.errors import DataError

        if self.selection == "split":
            cut = int(n_bars * self.split)
            folds = [Fold(train_lo=0, test_lo=cut, test_hi=n_bars)]
        else:
            wf = self.walk_forward
            first = int(n_bars * wf.train_share)
            edges = [first + round(k * (n_bars - first) / wf.folds) for k in range(wf.folds + 1)]
            folds = [Fold(train_lo=0 if wf.anchored else max(0, lo - first), test_lo=lo, test_hi=hi)
                     for lo, hi in itertools.pairwise(edges)]
        short = [f for f in folds if f.test_lo - f.train_lo < MIN_BLOCK_BARS or f.test_hi - f.test_lo < MIN_BLOCK_BARS]
        if short:
            f = short[0]
            raise DataError(
                f"{self.symbol} {self.timeframe}: expected at least {MIN_BLOCK_BARS} bars in every in-sample window "
                f"and out-of-sample block ({self.selection}), found {f.test_lo - f.train_lo} and "
                f"{f.test_hi - f.test_lo} (of {n_bars} bars); use a longer period or fewer folds")
        return folds

    def bar_minutes(self) -> float:
        """Return the bar length in minutes."""
        return float(timeframe_minutes(self.timeframe))

    def required_history(self, params: dict[str, GridValue]) -> int:
        """Return the closed bars a decision of this version needs (strategy and sizing)."""
        strategy = get_strategy(self.strategy)(**params)
        return max(int(strategy.required_history), self.sizing.required_history(self.bar_minutes()))

    def combinations(self) -> list[dict[str, GridValue]]:
        """Return the valid parameter sets of the grid, in grid order.

        A value that is invalid on its own (out of range, wrong type) is an error;
        a combination that is only inconsistent (fast >= slow) is skipped.
        """
        cls = get_strategy(self.strategy)
        keys = list(self.grid)
        combos = []
        for values in itertools.product(*(self.grid[k] for k in keys)) if keys else [()]:
            params = {**self.params, **dict(zip(keys, values, strict=True))}
            try:
                cls(**params)
            except ParameterError as exc:
                if exc.field.endswith(".params"):
                    continue  # cross-field inconsistency: not a trial
                raise ConfigurationError(exc.field, exc.expected, exc.found) from None
            combos.append(params)
        return combos


def parse_grid(items: list[str] | dict[str, Any] | None) -> dict[str, list[GridValue]]:
    """Parse ``["fast=5,10,20", "slow=50,100"]`` (CLI form) or a dict into a grid."""
    if not items:
        return {}
    if isinstance(items, dict):
        return {k: list(v) if isinstance(v, list | tuple) else [v] for k, v in items.items()}
    grid: dict[str, list[GridValue]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise ConfigurationError("grid", "NAME=V1,V2,... such as fast=5,10,20", item)
        key = name.strip()
        if key in grid:
            raise ConfigurationError(f"grid.{key}", "each name once (list every value in one NAME=V1,V2,...)",
                                     item)
        raw = [v.strip() for v in values.split(",")]
        if any(not v for v in raw):
            raise ConfigurationError(f"grid.{key}", "comma-separated values without empty entries", item)
        grid[key] = [_scalar(v) for v in raw]
    return grid


def _scalar(text: str) -> GridValue:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(text)  # type: ignore[no-any-return]
        except ValueError:
            pass
    return text


def config_from_params(**params: Any) -> BacktestConfig:
    """Build a config from flat template parameters, converting validation errors to clear ones.

    Accepts the template's flat cost names (``taker_fee``, ``maker_fee``,
    ``spread_share``, ``impact_coef``, ``impact_exponent``) besides ``costs``.
    """
    flat_costs = {k: params.pop(k) for k in list(params) if k in CostModel.model_fields}
    if flat_costs:
        params["costs"] = {**dict(params.get("costs") or {}), **flat_costs}
    if "grid" in params:
        params["grid"] = parse_grid(params["grid"])
    try:
        return BacktestConfig(**params)
    except pydantic.ValidationError as exc:
        known = set(BacktestConfig.model_fields) | set(CostModel.model_fields)
        raise from_pydantic(exc, known=known) from None
