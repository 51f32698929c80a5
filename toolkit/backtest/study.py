"""A study file: strategies' grids × markets, read into one backtest configuration per cell.

``toolkit study STUDY.yaml`` sweeps it on Dask (``toolkit.backtest.cluster.run_study``)::

    study_id: btc-q1          # optional: a re-run with the same id adds no trial twice
    grids:                    # strategy -> its grid (each parameter a list of values)
      ma_cross: {fast: [10, 20], slow: [50, 100]}
      donchian: {window: [24, 48]}
    markets:                  # every strategy runs on every market
      - {symbol: BTC/USDT, timeframe: 1h, start: "2024-01-01", end: "2024-04-30"}
    params: {taker_fee: 0.001, capital: 10000}   # optional: passed to every cell

Unknown keys are errors; each cell is validated as ``toolkit backtest`` validates its parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import yaml

from toolkit.backtest.config import BacktestConfig, config_from_params
from toolkit.errors import ConfigurationError, from_pydantic

__all__ = ["Market", "StudyFile", "load_study"]


class Market(pydantic.BaseModel):
    """One market of a study: symbol, timeframe and the period (days, UTC)."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    symbol: str
    timeframe: str
    start: str | None = None
    end: str | None = None


class StudyFile(pydantic.BaseModel):
    """The content of a study file."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    study_id: str | None = None
    grids: dict[str, dict[str, list[Any]]] = pydantic.Field(min_length=1)
    markets: list[Market] = pydantic.Field(min_length=1)
    params: dict[str, Any] = pydantic.Field(default_factory=dict)


def load_study(path: str | Path) -> tuple[StudyFile, list[BacktestConfig]]:
    """Read a study file; return it and its cells (strategy × market), each a validated backtest configuration.

    Raises
    ------
    ConfigurationError
        The file is missing, not YAML, has an unknown or missing key, or a cell's parameters are invalid
        (the field names the cell: ``grids.<strategy> @ <symbol> <timeframe>: <parameter>``).
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError("study", "a readable study file (YAML)", f"{p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError("study", "a YAML study file", f"{p}: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigurationError("study", "a mapping with grids and markets", type(raw).__name__)
    unknown = sorted(set(map(str, raw)) - set(StudyFile.model_fields))
    if unknown:  # before pydantic, which would first report the key it misspells as missing
        raise ConfigurationError(unknown[0], f"a known key: {sorted(StudyFile.model_fields)}", raw[unknown[0]])
    try:
        study = StudyFile(**raw)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, known=StudyFile.model_fields, root="study") from None
    for key in ("strategy", "grid", "symbol", "timeframe", "start", "end"):
        if key in study.params:
            raise ConfigurationError(f"params.{key}", "parameters other than strategy, grid and the market "
                                     "(those come from grids and markets)", study.params[key])
    configs = []
    for strategy, grid in study.grids.items():
        for m in study.markets:
            try:
                configs.append(config_from_params(strategy=strategy, grid=grid, **m.model_dump(), **study.params))
            except ConfigurationError as exc:
                raise ConfigurationError(f"grids.{strategy} @ {m.symbol} {m.timeframe}: {exc.field}", exc.expected,
                                         exc.found) from None
    return study, configs
