"""The market at the time of an incident against what is normal in its hour-of-week bucket (the regime map).

:func:`market_context` measures the regime map (:mod:`toolkit.ops.regimes`) on the 1-minute bars of the
``regime_days`` before the incident's hour (the bar store: bundled data and the user cache) and compares
each hour of the report's window (the median over its 1-minute bars of the spread estimate, the quote
volume per minute and the volatility) with its bucket's quantiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from toolkit.errors import ToolkitError

__all__ = ["CONTEXT_METRICS", "DAYS", "MarketContext", "market_context"]

#: the figures of the market context: regime-map metric -> how the report names it
CONTEXT_METRICS = {"spread_bps": "spread estimate (bps)", "quote_volume_per_min": "quote volume per minute",
                   "volatility_bps": "volatility (bps per √min)"}
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_QUANTILE_NAMES = ("p1", "p10", "p50", "p90", "p99")


@dataclass(frozen=True)
class MarketContext:
    """The market at the incident's hour against what is normal in its hour-of-week bucket."""

    symbol: str
    hour: pd.Timestamp
    bucket: int
    bucket_label: str
    regime: str | None = None
    figures: dict[str, float] = field(default_factory=dict)              # metric -> the hour's median
    quantiles: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> p1 … p99 of the bucket
    bands: dict[str, str] = field(default_factory=dict)                  # metric -> "p50–p90" …
    hours: pd.DataFrame | None = None     # per hour of the window: medians and the bucket's p10/p50/p90
    map_sha256: str | None = None
    map_source: str = ""
    unavailable: str | None = None

    def sentence(self) -> str:
        if self.unavailable is not None:
            return f"{self.bucket_label} bucket; no market context ({self.unavailable})"
        parts = [f"{CONTEXT_METRICS[m].split(' (')[0]} {self.bands[m]}" for m in CONTEXT_METRICS if m in self.bands]
        return (f"{self.bucket_label} bucket, a {self.regime}-volume hour of the week; the hour's "
                + ", ".join(parts) + " of its bucket")


def _band(value: float, qs: dict[str, float]) -> str:
    names = list(_QUANTILE_NAMES)
    if not np.isfinite(value):
        return "unknown"
    if value < qs[names[0]]:
        return "below p1"
    if value > qs[names[-1]]:
        return "above p99"
    for a, b in pairwise(names):
        if qs[a] <= value <= qs[b]:
            return f"{a}–{b}"
    return "unknown"


def market_context(symbol: str, at: pd.Timestamp, lo: pd.Timestamp, hi: pd.Timestamp, regime_days: int = 28,
                   store: Any = None) -> MarketContext:
    """Return the market context of the hour of ``at`` (and of each hour in ``[lo, hi]``) from 1m bars.

    The regime map is measured on the ``regime_days`` before the hour of ``at``; the store's
    bars are read once. A store without those bars gives a context marked unavailable, with the reason.
    """
    from toolkit.data.store import BarStore
    from toolkit.ops.regimes import QUANTILES, bar_figures, bucket_of, regime_map

    hour = at.floor("h")
    bucket = int(bucket_of(hour))
    label = f"{DAYS[bucket // 24]} {bucket % 24:02d}:00 UTC"
    first = hour - pd.Timedelta(days=regime_days)
    try:
        bars = (store or BarStore()).load(symbol, "1m", first, max(hi, hour + pd.Timedelta(minutes=59)))
        history = bars[bars.index < hour]
        regimes = regime_map(history, symbol)
    except ToolkitError as exc:
        return MarketContext(symbol, hour, bucket, label, unavailable=f"{symbol} 1m bars {first:%Y-%m-%d} … "
                                                                      f"{hour:%Y-%m-%d %H:%M}: {exc}")
    figures = bar_figures(bars[bars.index >= lo.floor("h") - pd.Timedelta(minutes=1)])
    figures = figures[figures.index >= lo.floor("h")]
    per_hour = figures.groupby(figures.index.floor("h")).median()
    rows = []
    for t, r in per_hour.iterrows():
        b = int(bucket_of(pd.Timestamp(t)))
        row: dict[str, Any] = {"hour": t, "bucket": b, "regime": regimes.regime(b)}
        for m in CONTEXT_METRICS:
            row[m] = float(r[m])
            for q, name in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90")):
                row[f"{m}_{name}"] = regimes.quantile(m, b, q)
        rows.append(row)
    hours = pd.DataFrame(rows).set_index("hour") if rows else pd.DataFrame()
    if hour not in per_hour.index:
        return MarketContext(symbol, hour, bucket, label, regime=regimes.regime(bucket), hours=hours,
                             map_sha256=regimes.sha256, unavailable=f"no {symbol} 1m bars in the hour {hour:%H:%M}")
    quantiles = {m: {n: regimes.quantile(m, bucket, q) for n, q in zip(_QUANTILE_NAMES, QUANTILES, strict=True)}
                 for m in CONTEXT_METRICS}
    values = {m: float(per_hour.loc[hour, m]) for m in CONTEXT_METRICS}
    source = (f"{len(history):,} 1-minute bars {history.index[0]:%Y-%m-%d %H:%M} … {history.index[-1]:%Y-%m-%d %H:%M} "
              "UTC from the bar store")
    return MarketContext(symbol, hour, bucket, label, regime=regimes.regime(bucket), figures=values,
                         quantiles=quantiles, bands={m: _band(values[m], quantiles[m]) for m in CONTEXT_METRICS},
                         hours=hours, map_sha256=regimes.sha256, map_source=source)


