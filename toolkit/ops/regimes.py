"""Liquidity regimes by hour of the week, measured on bars: what is normal at this hour.

A 24/7 market is not one market: Saturday 03:00 UTC trades a fraction of Tuesday 14:00's volume, at a
wider spread. An alert threshold that ignores the hour pages all weekend or sleeps through a weekday
incident. :func:`regime_map` measures, for each of the week's 168 UTC hours (Monday 00:00 = bucket 0),
the distribution of four per-bar quantities over a history of bars:

``quote_volume_per_min``
    quote volume traded per minute of the bar (``quote_volume``, or ``volume × close``);
``spread_bps``
    the Corwin–Schultz spread estimate of the bar and the one before (``toolkit.backtest.costs``), bps;
``volatility_bps``
    the absolute log return close to close, per square-root minute of the bar (so 1m and 1h bars give
    comparable figures), bps;
``slippage_bps``
    the backtest's slippage model (the version's cost model: spread share plus square-root impact) for
    an order of ``reference_notional`` at that bar, bps — what the runner's fills are compared with.

Each bucket keeps the quantiles :data:`QUANTILES` of each quantity and its sample count; a bucket's
**regime** is the tercile of its median volume among the 168 (``low`` / ``normal`` / ``high``).
Thresholds of the runner's alert rules may be quantiles of the current bucket ("spread above the
bucket's p99").

The map is a JSON document (:meth:`RegimeMap.to_json`) with the data hash of the bars it came from and
every setting, so :func:`verify_regime_map` re-derives it from the same bars and names the first
figure that differs: the evidence behind a threshold is recomputed, not trusted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from toolkit.backtest.costs import BarCostInputs, CostModel, bar_minutes, corwin_schultz_spread, slippage_rates
from toolkit.canonical import canonical_sha256
from toolkit.data.quality import data_hash
from toolkit.errors import ConfigurationError, DataError

__all__ = ["BUCKETS", "METRICS", "QUANTILES", "SCHEMA", "RegimeMap", "bar_figures", "bucket_of", "regime_map",
           "verify_regime_map"]

SCHEMA = 1
BUCKETS = 168  # hours of the week, Monday 00:00 UTC = 0
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)
METRICS = {
    "quote_volume_per_min": "quote currency per minute",
    "spread_bps": "bps (Corwin–Schultz, two bars)",
    "volatility_bps": "bps per √minute (|log return| / √bar minutes)",
    "slippage_bps": "bps (the cost model, an order of reference_notional)",
}
REGIMES = ("low", "normal", "high")
#: fewest bars a bucket needs for its quantiles to mean something
MIN_SAMPLES = 8


def bucket_of(ts: pd.Timestamp | pd.DatetimeIndex) -> Any:
    """Return the hour-of-week bucket (Monday 00:00 UTC = 0 … Sunday 23:00 = 167) of a time or index."""
    t = pd.DatetimeIndex([ts]) if isinstance(ts, pd.Timestamp) else pd.DatetimeIndex(ts)
    t = t.tz_localize("UTC") if t.tz is None else t.tz_convert("UTC")
    out = np.asarray(t.dayofweek * 24 + t.hour, dtype=np.int64)
    return int(out[0]) if isinstance(ts, pd.Timestamp) else out


def _per_bar(bars: pd.DataFrame, model: CostModel, reference_notional: float) -> dict[str, np.ndarray]:
    minutes = bar_minutes(pd.DatetimeIndex(bars.index))
    if minutes is None or minutes <= 0:
        raise DataError(f"regime map: expected at least 2 evenly spaced bars, found {len(bars)}")
    close = bars["close"].to_numpy(dtype="float64")
    qv = (bars["quote_volume"].to_numpy(dtype="float64") if "quote_volume" in bars
          else bars["volume"].to_numpy(dtype="float64") * close)
    log_ret = np.diff(np.log(close), prepend=np.nan)
    inputs = BarCostInputs.from_bars(bars, model, minutes)
    capital = float(reference_notional)
    slip = slippage_rates(inputs, np.ones(len(bars)), capital, model)
    slip[: inputs.horizon_bars] = np.nan  # no volume history before the horizon
    return {
        "quote_volume_per_min": qv / minutes,
        "spread_bps": corwin_schultz_spread(bars).to_numpy() * 1e4,
        "volatility_bps": np.abs(log_ret) / math.sqrt(minutes) * 1e4,
        "slippage_bps": slip * 1e4,
    }


def bar_figures(bars: pd.DataFrame, cost_model: CostModel | None = None,
                reference_notional: float = 10_000.0) -> pd.DataFrame:
    """Return the per-bar figures the map is measured on (:data:`METRICS`, one column each) for ``bars``.

    The first bar has no spread or volatility (they need the bar before), the first horizon no slippage.
    """
    per_bar = _per_bar(bars, cost_model or CostModel(), reference_notional)
    return pd.DataFrame(per_bar, index=bars.index, columns=list(METRICS))


@dataclass(frozen=True)
class RegimeMap:
    """The measured regime map (see the module docstring); ``document`` is its JSON form."""

    document: dict[str, Any]

    @property
    def sha256(self) -> str:
        return str(self.document["sha256"])

    def quantile(self, metric: str, bucket: int, q: float) -> float:
        """Return quantile ``q`` (one of :data:`QUANTILES`) of ``metric`` in ``bucket`` (NaN: too few bars)."""
        if metric not in METRICS:
            raise ConfigurationError("metric", f"one of {list(METRICS)}", metric)
        if q not in QUANTILES:
            raise ConfigurationError("quantile", f"one of {list(QUANTILES)}", q)
        if not 0 <= int(bucket) < BUCKETS:
            raise ConfigurationError("bucket", f"an hour of the week in 0..{BUCKETS - 1}", bucket)
        value = self.document["metrics"][metric][int(bucket)][QUANTILES.index(q)]
        return float("nan") if value is None else float(value)

    def regime(self, bucket: int) -> str:
        """Return ``low``, ``normal`` or ``high``: the tercile of the bucket's median volume."""
        return str(self.document["regime"][int(bucket)])

    def frame(self, metric: str, q: float = 0.5) -> pd.DataFrame:
        """Return quantile ``q`` of ``metric`` as a weekday (rows, Monday first) × UTC hour table."""
        values = [self.quantile(metric, b, q) for b in range(BUCKETS)]
        return pd.DataFrame(np.array(values).reshape(7, 24),
                            index=["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], columns=range(24))

    def to_json(self) -> str:
        return json.dumps(self.document, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "regime map") -> RegimeMap:
        """Read a map back; raise ``ConfigurationError`` naming the field that is wrong."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(source, "JSON", f"invalid JSON ({exc.msg} at line {exc.lineno})") from None
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            found = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
            raise ConfigurationError(f"{source}.schema", f"{SCHEMA}", found)
        for key in ("metrics", "regime", "samples", "sha256", "settings", "data"):
            if key not in doc:
                raise ConfigurationError(f"{source}.{key}", "present", "missing")
        for metric in METRICS:
            rows = doc["metrics"].get(metric)
            if not (isinstance(rows, list) and len(rows) == BUCKETS
                    and all(isinstance(r, list) and len(r) == len(QUANTILES) for r in rows)):
                raise ConfigurationError(f"{source}.metrics.{metric}",
                                         f"{BUCKETS} rows of {len(QUANTILES)} quantiles", "another shape")
        if _digest(doc) != doc["sha256"]:
            raise ConfigurationError(f"{source}.sha256", "the digest of the document", doc["sha256"])
        return cls(doc)


def _digest(doc: dict[str, Any]) -> str:
    return canonical_sha256({k: v for k, v in doc.items() if k != "sha256"})


def _round(x: float) -> float | None:
    return None if not math.isfinite(x) else float(f"{x:.6g}")


def regime_map(bars: pd.DataFrame, symbol: str, cost_model: CostModel | None = None,
               reference_notional: float = 10_000.0) -> RegimeMap:
    """Measure the regime map of ``bars`` (UTC-indexed, evenly spaced, any bar length up to one hour).

    Parameters
    ----------
    bars
        Closed bars with open, high, low, close, volume (and ``quote_volume`` when known).
    symbol
        The market, recorded in the map.
    cost_model
        The version's cost model (its slippage model gives ``slippage_bps``); the default model otherwise.
    reference_notional
        The order size, in quote currency, whose modelled slippage is measured (the deployment's
        typical order).
    """
    if reference_notional <= 0 or not math.isfinite(reference_notional):
        raise ConfigurationError("reference_notional", "a positive amount of quote currency", reference_notional)
    minutes = bar_minutes(pd.DatetimeIndex(bars.index))
    if minutes is not None and minutes > 60:
        raise ConfigurationError("bars", "bars of one hour or shorter (a bucket is an hour)",
                                 f"{minutes:g}-minute bars")
    model = cost_model or CostModel()
    per_bar = _per_bar(bars, model, reference_notional)
    buckets = bucket_of(pd.DatetimeIndex(bars.index))
    metrics: dict[str, list[list[float | None]]] = {}
    samples = np.bincount(buckets, minlength=BUCKETS)
    order = np.argsort(buckets, kind="stable")
    edges = np.searchsorted(buckets[order], np.arange(BUCKETS + 1))
    for name, values in per_bar.items():
        rows: list[list[float | None]] = []
        for b in range(BUCKETS):
            v = values[order[edges[b]:edges[b + 1]]]
            v = v[np.isfinite(v)]
            rows.append([_round(float(x)) for x in np.quantile(v, QUANTILES)] if len(v) >= MIN_SAMPLES
                        else [None for _ in QUANTILES])
        metrics[name] = rows
    median_volume = np.array([np.nan if r[2] is None else r[2] for r in metrics["quote_volume_per_min"]])
    known = median_volume[np.isfinite(median_volume)]
    if len(known) < BUCKETS:
        thin = int(np.count_nonzero(samples < MIN_SAMPLES))
        raise DataError(f"regime map: expected at least {MIN_SAMPLES} bars in each of the {BUCKETS} hours of the "
                        f"week, found {thin} hours with fewer (bars {bars.index[0]} … {bars.index[-1]}); "
                        "use a longer history")
    lo, hi = np.quantile(known, [1 / 3, 2 / 3])
    regime = [REGIMES[0] if v <= lo else REGIMES[2] if v > hi else REGIMES[1] for v in median_volume]
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "liquidity_regime_map",
        "symbol": symbol,
        "data": {"data_hash": data_hash(bars), "first_bar": pd.Timestamp(bars.index[0]).isoformat(),
                 "last_bar": pd.Timestamp(bars.index[-1]).isoformat(), "bars": len(bars), "bar_minutes": minutes},
        "settings": {"reference_notional": float(reference_notional), "cost_model": model.model_dump(mode="json"),
                     "quantiles": list(QUANTILES), "min_samples": MIN_SAMPLES,
                     "bucket": "hour of the week, Monday 00:00 UTC = 0",
                     "regime": "tercile of the bucket's median quote volume per minute"},
        "units": dict(METRICS),
        "samples": samples.tolist(),
        "metrics": metrics,
        "regime": regime,
    }
    doc["sha256"] = _digest(doc)
    return RegimeMap(doc)


def verify_regime_map(stored: RegimeMap, bars: pd.DataFrame) -> None:
    """Re-derive ``stored`` from ``bars``; raise ``DataError`` naming the first field that differs."""
    doc = stored.document
    found = data_hash(bars)
    if found != doc["data"]["data_hash"]:
        raise DataError(f"regime map: data.data_hash: expected {doc['data']['data_hash']}, found {found} "
                        "(not the bars it was measured on)")
    settings = doc["settings"]
    again = regime_map(bars, doc["symbol"], CostModel(**settings["cost_model"]), settings["reference_notional"])
    for key in ("samples", "regime", "metrics"):
        if again.document[key] != doc[key]:
            if key == "metrics":
                for metric in METRICS:
                    for b in range(BUCKETS):
                        if again.document[key][metric][b] != doc[key][metric][b]:
                            raise DataError(f"regime map: metrics.{metric}[{b}]: expected {doc[key][metric][b]}, "
                                            f"re-derived {again.document[key][metric][b]}")
            raise DataError(f"regime map: {key}: the stored figures differ from the re-derived ones")
    if again.sha256 != stored.sha256:
        raise DataError(f"regime map: sha256: expected {stored.sha256}, re-derived {again.sha256}")
