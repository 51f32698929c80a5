"""Live slippage by hour-of-week bucket, next to what the version's regime map models for the bucket.

The regime map (:mod:`toolkit.ops.regimes`) holds, per hour of the week, the distribution of the
slippage the backtest's cost model charges an order of the reference notional. Once a version has traded
(paper or live), its journal says what execution actually cost at each hour: :func:`slippage_by_bucket`
takes the attribution's per-order shortfall frame (``toolkit.attribution.shortfall.shortfall_frame``) and
returns, per bucket the version traded in, the orders, their notional and the live slippage — the
trading cost against the arrival price (Perold's *trading* component: fills against the last trade
when the order was sent), notional-weighted and its per-order median and p90 — beside the modelled
median and p90 of the bucket and its regime. :func:`slippage_by_regime` sums the same by regime (low /
normal / high), the comparison an alert threshold rests on; :func:`slippage_document` is the JSON
artifact stored with the attribution run, next to the model version.

An order belongs to the bucket its decision bar **closed** in (the runner sends the order right after the
close): ``bar_time + bar_minutes``. Orders that filled nothing carry no slippage and are left out.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from toolkit.canonical import canonical_sha256
from toolkit.errors import ConfigurationError
from toolkit.ops.regimes import BUCKETS, RegimeMap, bucket_of

__all__ = ["COLUMNS", "slippage_by_bucket", "slippage_by_regime", "slippage_document", "slippage_table"]

#: the columns of :func:`slippage_by_bucket`
COLUMNS = ("bucket", "weekday", "hour", "regime", "orders", "notional", "live_bps", "live_p50_bps", "live_p90_bps",
           "model_p50_bps", "model_p90_bps", "excess_p50_bps")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_NEEDED = ("bar_time", "notional", "filled", "trading", "trading_bps")


def _check(frame: pd.DataFrame, bar_minutes: float) -> None:
    missing = [c for c in _NEEDED if c not in frame.columns]
    if missing:
        raise ConfigurationError(f"shortfall frame.{missing[0]}", "a column of shortfall_frame", "missing")
    if not (bar_minutes > 0 and np.isfinite(bar_minutes)):
        raise ConfigurationError("bar_minutes", "a positive bar length in minutes", bar_minutes)


def slippage_by_bucket(frame: pd.DataFrame, bar_minutes: float, regimes: RegimeMap | None = None) -> pd.DataFrame:
    """Return one row per hour-of-week bucket with filled orders (columns :data:`COLUMNS`, by bucket).

    ``live_bps`` is the notional-weighted trading cost of the bucket's orders in bps of their notional
    (Σ trading / Σ notional); ``live_p50_bps`` / ``live_p90_bps`` the median and p90 of the orders' own
    trading bps. Without a regime map the modelled columns are NaN and the regime ``unknown``.
    """
    if frame.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    _check(frame, bar_minutes)
    done = frame[frame["filled"] > 0]
    if done.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    closed = pd.DatetimeIndex(done["bar_time"]) + pd.Timedelta(minutes=float(bar_minutes))
    buckets = bucket_of(closed)
    rows = []
    for b in np.unique(buckets):
        part = done[buckets == b]
        bps = part["trading_bps"].to_numpy(dtype="float64")
        notional = float(part["notional"].sum())
        model_p50 = regimes.quantile("slippage_bps", int(b), 0.5) if regimes else float("nan")
        model_p90 = regimes.quantile("slippage_bps", int(b), 0.9) if regimes else float("nan")
        live_p50 = float(np.median(bps))
        rows.append({
            "bucket": int(b), "weekday": _DAYS[int(b) // 24], "hour": int(b) % 24,
            "regime": regimes.regime(int(b)) if regimes else "unknown",
            "orders": len(part), "notional": notional,
            "live_bps": float(part["trading"].sum()) / notional * 1e4 if notional > 0 else float("nan"),
            "live_p50_bps": live_p50, "live_p90_bps": float(np.quantile(bps, 0.9)),
            "model_p50_bps": model_p50, "model_p90_bps": model_p90, "excess_p50_bps": live_p50 - model_p50,
        })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def slippage_by_regime(table: pd.DataFrame) -> pd.DataFrame:
    """Sum :func:`slippage_by_bucket` by regime: orders, notional, notional-weighted live bps, and the
    modelled median of the buckets weighted by their orders (the same weighting as the live figure)."""
    cols = ["orders", "notional", "live_bps", "model_p50_bps"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    out = {}
    for regime, part in table.groupby("regime", sort=True):
        notional = float(part["notional"].sum())
        model = part["model_p50_bps"].to_numpy(dtype="float64")
        w = part["orders"].to_numpy(dtype="float64")
        ok = np.isfinite(model)
        live = float((part["live_bps"] * part["notional"]).sum()) / notional if notional else np.nan
        out[regime] = {"orders": int(part["orders"].sum()), "notional": notional, "live_bps": live,
                       "model_p50_bps": float(np.average(model[ok], weights=w[ok])) if ok.any() else np.nan}
    return pd.DataFrame.from_dict(out, orient="index", columns=cols)


def _value(x: Any) -> Any:
    if isinstance(x, float | np.floating):
        return None if not np.isfinite(x) else float(f"{float(x):.6g}")
    if isinstance(x, np.integer):
        return int(x)
    return x


def slippage_document(table: pd.DataFrame, *, model: str, version: str, bar_minutes: float,
                      regimes: RegimeMap | None) -> dict[str, Any]:
    """Return the JSON artifact of a version's live slippage by bucket (with its digest and the regime map's)."""
    doc = {
        "schema": 1, "model": model, "version": str(version), "bar_minutes": float(bar_minutes),
        "buckets": BUCKETS, "measure": "trading cost against the arrival price, bps of the order's notional",
        "regime_map_sha256": regimes.sha256 if regimes else None,
        "rows": [{k: _value(v) for k, v in row.items()} for row in table.to_dict(orient="records")],
    }
    doc["sha256"] = canonical_sha256(doc)
    return doc


def slippage_table(table: pd.DataFrame, by_regime: bool = False) -> pd.DataFrame:
    """Return :func:`slippage_by_bucket`'s table for a report: by weekday and hour (or summed by regime), rounded."""
    if by_regime:
        return slippage_by_regime(table).round(2)
    if table.empty:
        return table
    return table.set_index(["weekday", "hour"]).drop(columns=["bucket"]).round(2)
