"""Save and load a backtest's evidence bundle: a directory of Parquet and JSON files.

The bundle is what gets logged to MLflow under ``evidence/`` and what the gates
evaluate. Layout::

    backtest.json        config, ids, hashes, chosen parameters, metrics, walk-forward folds,
                         the deployed version's required history, the sweep engine and the
                         kernel-vs-vectorbt difference on the chosen record
    returns.parquet      timestamp, return, position (sized), direction (the walk-forward record)
    trades.parquet       out-of-sample trades
    orders.parquet       fills with slippage and participation
    sweep.parquet        one row per combination of this run
    trial_returns.parquet  every combination's returns at max(bar, 1h) (for PBO)
    trials.parquet       the trial ledger for this strategy and market, this run included
    bars.parquet         the exact bars evaluated (their sha256 is ``data_hash``)
    data_certificate.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from toolkit.backtest.config import BacktestConfig
from toolkit.errors import DataError

if TYPE_CHECKING:  # the engine (and vectorbt behind it) is not needed to read a bundle
    from toolkit.backtest.engine import BacktestResult

__all__ = ["BUNDLE_FILES", "Bundle", "bundle_sha256", "clean_json", "load_bundle", "save_bundle"]

BUNDLE_FILES = ("backtest.json", "returns.parquet", "trades.parquet", "orders.parquet", "sweep.parquet",
                "trial_returns.parquet", "trials.parquet", "bars.parquet", "data_certificate.json")


def clean_json(value: Any) -> Any:
    """Return ``value`` with NaN/inf replaced by None and numpy scalars by Python ones."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(clean_json(data), indent=2, sort_keys=True) + "\n")


def save_bundle(result: BacktestResult, bars: pd.DataFrame, certificate: dict[str, Any],
                directory: str | Path) -> Path:
    """Write ``result`` (with the bars and their certificate) to ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    _write_json(d / "backtest.json", {
        "config": cfg.model_dump(mode="json"),
        "config_sha256": cfg.sha256(),
        "backtest_id": result.backtest_id,
        "created_at": result.created_at.isoformat(),
        "data_hash": result.data_hash,
        "split_at": result.split_at.isoformat(),
        "chosen": result.chosen,
        "chosen_index": result.chosen_index,
        "metrics": result.metrics,
        "metrics_is": result.metrics_is,
        "benchmark": result.benchmark,
        "n_trials": result.n_trials,
        "n_trials_run": len(result.sweep),
        "model_name": cfg.model_name_or_default,
        "strategy_type": _strategy_type(cfg.strategy),
        "folds": result.folds,
        "required_history": result.required_history,
        "engine": result.engine,
    })
    directions = result.directions if result.directions is not None else result.positions
    pd.DataFrame({"return": result.returns, "position": result.positions,
                  "direction": directions}).to_parquet(d / "returns.parquet")
    result.trades.to_parquet(d / "trades.parquet")
    result.orders.to_parquet(d / "orders.parquet")
    result.sweep.to_parquet(d / "sweep.parquet")
    result.trial_returns.to_parquet(d / "trial_returns.parquet")
    result.ledger.to_parquet(d / "trials.parquet")
    bars.to_parquet(d / "bars.parquet")
    _write_json(d / "data_certificate.json", certificate)
    return d


def _strategy_type(name: str) -> str:
    from toolkit.strategies import get_strategy

    return get_strategy(name).strategy_type


@dataclass(frozen=True, eq=False)
class Bundle:
    """A backtest's evidence read back from its directory (``backtest.json`` fields and the Parquet tables)."""

    config: BacktestConfig
    config_sha256: str
    backtest_id: str
    created_at: str
    data_hash: str
    split_at: str
    chosen: dict[str, Any]
    chosen_index: int
    metrics: dict[str, Any]
    metrics_is: dict[str, Any]
    benchmark: dict[str, Any]
    n_trials: int
    n_trials_run: int
    model_name: str
    strategy_type: str
    folds: list[dict[str, Any]]
    required_history: int
    certificate: dict[str, Any]
    returns: pd.DataFrame
    trades: pd.DataFrame
    orders: pd.DataFrame
    sweep: pd.DataFrame
    trial_returns: pd.DataFrame
    trials: pd.DataFrame
    bars: pd.DataFrame
    engine: dict[str, Any] = dataclasses.field(default_factory=dict)  # sweep engine and the kernel check


_JSON_FIELDS = ("config_sha256", "backtest_id", "created_at", "data_hash", "split_at", "chosen", "chosen_index",
                "metrics", "metrics_is", "benchmark", "n_trials", "n_trials_run", "model_name", "strategy_type",
                "folds", "required_history")


def load_bundle(directory: str | Path) -> Bundle:
    """Read a bundle back; raise ``DataError`` naming what is missing or malformed."""
    d = Path(directory)
    missing = [f for f in BUNDLE_FILES if not (d / f).is_file()]
    if missing:
        raise DataError(f"evidence bundle {d}: expected files {list(BUNDLE_FILES)}, missing {missing}")
    try:
        doc: dict[str, Any] = json.loads((d / "backtest.json").read_text())
        certificate = json.loads((d / "data_certificate.json").read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"evidence bundle {d}: expected JSON documents, found invalid JSON ({exc})") from exc
    absent = [k for k in ("config", *_JSON_FIELDS) if k not in doc]
    if absent:
        raise DataError(f"evidence bundle {d}: backtest.json expected fields {absent}, found none")
    tables = {f.removesuffix(".parquet"): pd.read_parquet(d / f) for f in BUNDLE_FILES if f.endswith(".parquet")}
    return Bundle(config=BacktestConfig(**doc["config"]), certificate=certificate, engine=doc.get("engine") or {},
                  **{k: doc[k] for k in _JSON_FIELDS}, **tables)


def bundle_sha256(directory: str | Path) -> str:
    """Return one sha256 over the bundle's files (name and bytes, in a fixed order)."""
    h = hashlib.sha256()
    d = Path(directory)
    for f in BUNDLE_FILES:
        h.update(f.encode() + b"\0")
        h.update(hashlib.sha256((d / f).read_bytes()).digest())
    return h.hexdigest()
