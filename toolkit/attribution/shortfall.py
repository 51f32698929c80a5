"""Implementation shortfall per order (Perold 1988), exact, with its aggregates.

One *order* here is the execution of one decision: every leg the runner sent for the bar
(``<deployment>-<bar open ms>-<leg>``), so a leg that was never placed and re-sent as the
next leg is not counted twice. With side s (+1 buy, −1 sell), order size X (the first
leg's amount: what the decision asked for after rounding), decision price P_d (the
decision bar's close), arrival price P_0 (the first leg's arrival price), fills x_j at p_j
over every leg (x = Σ x_j), P_n the price when the order ended unfilled (the close of the
first journaled bar closing at or after the last leg's terminal event; the last close
when none has, or while it is still open), and fees F in the quote currency::

    delay       = s · x · (P_0 − P_d)
    trading     = s · (Σ x_j · p_j − x · P_0)
    opportunity = s · (X − x) · (P_n − P_d)
    fees        = F                       (a fee in the base asset valued at its fill's price)
    IS          = delay + trading + opportunity + fees

in the quote currency, and in bps of X · P_d. Positive is a cost. The arithmetic is exact
(``Decimal``); only the bps and the aggregates are floats.

Where quotes exist (a frame of bid/ask by time, e.g. the real Binance book-ticker
sample), the trading cost is split into **half-spread** (Σ x_j · (ask − bid)/2 of the
quote in force at the fill) and **impact** (the rest: the walk beyond the touch and the
drift from the arrival price to the mid). A fill without a quote younger than
``max_quote_age`` leaves its order unsplit (None), never guessed.

Aggregates (:func:`aggregate`): notional-weighted bps by hour of day (UTC), weekday /
weekend, liquidity regime (the decision bar's quote volume against the median of the 30
days before it: thin < 0.67×, busy > 1.5×) and order-size bucket (notional in quote).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from toolkit.attribution.errors import JournalError
from toolkit.attribution.journal import Fill, Order

__all__ = [
    "COMPONENTS",
    "SIZE_BUCKETS",
    "OrderShortfall",
    "aggregate",
    "frame_from_columns",
    "liquidity_regime",
    "order_shortfall",
    "shortfall_frame",
    "shortfalls",
]

COMPONENTS = ("delay", "trading", "opportunity", "fees")
#: order notional buckets in the quote currency (lower bounds)
SIZE_BUCKETS = ((0.0, "< 1k"), (1_000.0, "1k-10k"), (10_000.0, "10k-100k"), (100_000.0, ">= 100k"))
_ZERO = Decimal(0)


@dataclass(frozen=True)
class OrderShortfall:
    """The shortfall of one decision's execution, exact (quote currency)."""

    bar_time: int
    side: int
    size: Decimal              # X
    filled: Decimal            # x
    decision_price: Decimal    # P_d
    arrival_price: Decimal     # P_0
    end_price: Decimal         # P_n
    average_price: Decimal | None
    delay: Decimal
    trading: Decimal
    opportunity: Decimal
    fees: Decimal
    half_spread: Decimal | None
    impact: Decimal | None
    legs: int
    state: str
    version: str

    @property
    def total(self) -> Decimal:
        return self.delay + self.trading + self.opportunity + self.fees

    @property
    def benchmark(self) -> Decimal:
        """X · P_d, the paper notional the bps are relative to."""
        return self.size * self.decision_price

    def bps(self, value: Decimal | None) -> float | None:
        return None if value is None else float(value / self.benchmark * 10_000)


def _fee_in_quote(f: Fill, base: str, quote: str, where: str) -> Decimal:
    if f.fee == 0 or f.fee_asset == quote:
        return f.fee
    if f.fee_asset == base:
        return f.fee * f.price
    raise JournalError(f"fills[trade_id={f.trade_id}].fee_asset", f"{base} or {quote} (of {where})", f.fee_asset)


def order_shortfall(legs: Sequence[Order], decision_price: Decimal, end_price: Decimal,
                    quotes: QuoteBook | None = None) -> OrderShortfall:
    """Return the Perold shortfall of one decision executed by ``legs`` (its orders, first leg first).

    ``end_price`` is P_n, used only for the part left unfilled.
    """
    first = legs[0]
    s = first.sign
    for o in legs:
        if o.sign != s:
            raise JournalError(f"orders[{o.client_order_id}].side", f"{first.side} (as leg 0 of its bar)", o.side)
    base, _, quote = first.symbol.partition("/")
    fills = [f for o in legs for f in o.fills]
    x = sum((f.amount for f in fills), _ZERO)
    px = sum((f.amount * f.price for f in fills), _ZERO)
    p0, pd_ = first.arrival_price, decision_price
    fees = sum((_fee_in_quote(f, base, quote, first.symbol) for f in fills), _ZERO)
    trading = s * (px - x * p0)
    half = impact = None
    if quotes is not None and fills:
        spreads = quotes.half_spreads([f.at for f in fills])
        if all(h is not None for h in spreads):
            half = sum((f.amount * h for f, h in zip(fills, spreads, strict=True) if h is not None), _ZERO)
            impact = trading - half
    return OrderShortfall(
        bar_time=first.bar_time, side=s, size=first.amount, filled=x, decision_price=pd_, arrival_price=p0,
        end_price=end_price, average_price=(px / x) if x else None,
        delay=s * x * (p0 - pd_), trading=trading, opportunity=s * (first.amount - x) * (end_price - pd_), fees=fees,
        half_spread=half, impact=impact, legs=len(legs), state=legs[-1].state, version=first.version)


class QuoteBook:
    """Best bid and ask by time (exact), for the half-spread at a fill.

    Parameters
    ----------
    quotes
        A frame with a UTC ``timestamp`` (index or column) and ``bid``/``ask`` (or
        ``bid_price``/``ask_price``) columns.
    max_age_ms
        A quote older than this at a fill is not used (the fill's order stays unsplit).
    """

    def __init__(self, quotes: pd.DataFrame, max_age_ms: int = 5_000) -> None:
        q = quotes.reset_index() if "timestamp" not in quotes.columns else quotes
        bid = "bid" if "bid" in q.columns else "bid_price"
        ask = "ask" if "ask" in q.columns else "ask_price"
        for col in ("timestamp", bid, ask):
            if col not in q.columns:
                raise JournalError(f"quotes.{col}", "a column of the quotes frame", sorted(map(str, q.columns)))
        q = q.sort_values("timestamp")
        self.ms = (pd.DatetimeIndex(q["timestamp"]).as_unit("ms").asi8).astype(np.int64)
        self.half = [(Decimal(str(a)) - Decimal(str(b))) / 2 for a, b in zip(q[ask], q[bid], strict=True)]
        self.half_f = np.array([float(h) for h in self.half], dtype=np.float64)
        self.max_age_ms = int(max_age_ms)

    def half_spreads(self, times_ms: Iterable[int]) -> list[Decimal | None]:
        t = np.asarray(list(times_ms), dtype=np.int64)
        i = np.searchsorted(self.ms, t, side="right") - 1
        return [None if k < 0 or tt - self.ms[k] > self.max_age_ms else self.half[k]
                for k, tt in zip(i.tolist(), t.tolist(), strict=True)]

    def half_spread_array(self, times_ms: np.ndarray) -> np.ndarray:
        """Return the half-spread in force at each time (float64; NaN where no quote is fresh enough)."""
        t = np.asarray(times_ms, dtype=np.int64)
        i = np.searchsorted(self.ms, t, side="right") - 1
        ok = (i >= 0) & (t - self.ms[np.maximum(i, 0)] <= self.max_age_ms) if len(self.ms) else np.zeros(len(t), bool)
        return np.where(ok, self.half_f[np.maximum(i, 0)] if len(self.ms) else np.nan, np.nan)

    def covers(self, t_ms: int) -> bool:
        return len(self.ms) > 0 and self.ms[0] <= t_ms <= self.ms[-1] + self.max_age_ms


def _end_prices(ends: list[int | None], bars: list[dict[str, object]], bar_ms: int,
                last: list[Decimal]) -> list[Decimal]:
    """P_n per order: the close of the first journaled bar closing at or after the order ended (else ``last``)."""
    closes_at = np.array([int(b["open_time"]) + bar_ms for b in bars], dtype=np.int64)  # type: ignore[call-overload]
    closes = [Decimal(repr(float(b["close"]))) for b in bars]  # type: ignore[arg-type]
    out = []
    for e, fallback in zip(ends, last, strict=True):
        k = len(closes) if e is None else int(np.searchsorted(closes_at, e, side="left"))
        out.append(closes[k] if k < len(closes) else fallback)
    return out


def shortfalls(orders: Sequence[Order], decisions: Sequence[dict[str, object]], bars: Sequence[dict[str, object]],
               bar_ms: int, quotes: QuoteBook | None = None) -> list[OrderShortfall]:
    """Return the shortfall of every decision that sent at least one order, in bar order.

    Raises
    ------
    JournalError
        An order whose bar has no journaled decision (its decision price is unknown).
    """
    by_bar: dict[int, list[Order]] = {}
    for o in orders:
        by_bar.setdefault(o.bar_time, []).append(o)
    price = {int(d["bar_time"]): d["decision_price"] for d in decisions}  # type: ignore[call-overload]
    last = Decimal(repr(float(bars[-1]["close"]))) if bars else None  # type: ignore[arg-type]
    keys = sorted(by_bar)
    for t in keys:
        if t not in price:
            o = by_bar[t][0]
            raise JournalError(f"orders[{o.client_order_id}].bar_time", "the bar of a journaled decision", t)
    groups = [sorted(by_bar[t], key=lambda o: o.leg) for t in keys]
    ends = [g[-1].ended_at for g in groups]
    fallback = [last if last is not None else g[0].arrival_price for g in groups]
    p_n = _end_prices(ends, list(bars), bar_ms, fallback)
    return [order_shortfall(g, price[t], pn, quotes)  # type: ignore[arg-type]
            for t, g, pn in zip(keys, groups, p_n, strict=True)]


def liquidity_regime(bars: pd.DataFrame, days: float = 30.0) -> pd.Series:
    """Label each bar thin / normal / busy: its quote volume against the median of the ``days`` before it."""
    qv = bars["quote_volume"] if "quote_volume" in bars.columns else bars["volume"] * bars["close"]
    minutes = max((bars.index[1] - bars.index[0]).total_seconds() / 60.0, 1.0) if len(bars) > 1 else 60.0
    window = max(int(days * 1440 / minutes), 2)
    med = qv.shift(1).rolling(window, min_periods=max(window // 10, 2)).median()
    ratio = qv / med
    out = pd.Series("normal", index=bars.index, dtype=object)
    out[ratio < 0.67] = "thin"
    out[ratio > 1.5] = "busy"
    out[ratio.isna()] = "unknown"
    return out


def shortfall_frame(items: Sequence[OrderShortfall], regime: pd.Series | None = None) -> pd.DataFrame:
    """Return one row per order: times, sizes, components in quote and in bps, and the grouping keys."""
    if not items:
        return pd.DataFrame()

    def col(get: object) -> np.ndarray:
        return np.array([get(o) for o in items], dtype=np.float64)  # type: ignore[operator]

    return frame_from_columns({
        "bar_time": np.array([o.bar_time for o in items], dtype=np.int64),
        "side": np.array([o.side for o in items], dtype=np.int64), "size": col(lambda o: o.size),
        "filled": col(lambda o: o.filled), "decision_price": col(lambda o: o.decision_price),
        "arrival_price": col(lambda o: o.arrival_price), "end_price": col(lambda o: o.end_price),
        "average_price": col(lambda o: np.nan if o.average_price is None else o.average_price),
        "notional": col(lambda o: o.benchmark), **{c: col(lambda o, c=c: getattr(o, c)) for c in COMPONENTS},
        "half_spread": col(lambda o: np.nan if o.half_spread is None else o.half_spread),
        "impact": col(lambda o: np.nan if o.impact is None else o.impact),
        "legs": np.array([o.legs for o in items], dtype=np.int64), "state": [o.state for o in items],
        "version": [o.version for o in items],
        "total": col(lambda o: o.total),  # the exact sum, rounded once
    }, regime)


def frame_from_columns(cols: dict[str, Any], regime: pd.Series | None = None) -> pd.DataFrame:
    """Return the per-order frame of :func:`shortfall_frame` from its columns (one entry per order).

    ``cols`` holds ``bar_time`` (epoch ms), ``side`` (+1/−1), ``size``, ``filled``, the prices,
    ``notional``, the components, ``half_spread``/``impact`` (NaN: unsplit), ``legs``, ``state``,
    ``version`` and ``total``; the exact and the vectorised paths both build their frame here.
    """
    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(cols["bar_time"], dtype=np.int64), unit="ms", utc=True))
    bench = np.asarray(cols["notional"], dtype=np.float64)
    frame = pd.DataFrame({
        "bar_time": t, "side": np.where(np.asarray(cols["side"]) > 0, "buy", "sell").astype(object),
        **{c: np.asarray(cols[c], dtype=np.float64) for c in ("size", "filled", "decision_price", "arrival_price",
                                                                "end_price", "average_price")},
        "notional": bench, **{c: np.asarray(cols[c], dtype=np.float64) for c in (*COMPONENTS, "half_spread",
                                                                                  "impact")},
        "legs": np.asarray(cols["legs"], dtype=np.int64), "state": np.asarray(cols["state"], dtype=object),
        "version": np.asarray(cols["version"], dtype=object), "total": np.asarray(cols["total"], dtype=np.float64),
    })
    frame["fill_ratio"] = frame["filled"] / frame["size"]
    for c in (*COMPONENTS, "total", "half_spread", "impact"):
        frame[f"{c}_bps"] = frame[c] / frame["notional"] * 10_000
    frame["hour"] = t.hour
    frame["weekday"] = np.array(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])[t.dayofweek]
    frame["weekend"] = np.where(t.dayofweek >= 5, "weekend", "weekday")
    edges = [lo for lo, _ in SIZE_BUCKETS]
    names = np.array([name for _, name in SIZE_BUCKETS])
    frame["size_bucket"] = names[np.clip(np.searchsorted(edges, bench, side="right") - 1, 0, len(names) - 1)]
    frame["regime"] = regime.reindex(t).fillna("unknown").astype(str).to_numpy() if regime is not None else "unknown"
    return frame


def aggregate(frame: pd.DataFrame, by: str) -> pd.DataFrame:
    """Return per group: orders, notional, IS in quote and notional-weighted bps per component."""
    if frame.empty:
        return pd.DataFrame(columns=["orders", "notional", "total", "total_bps"])
    g = frame.groupby(by, sort=True)
    out = pd.DataFrame({"orders": g.size(), "notional": g["notional"].sum()})
    for c in (*COMPONENTS, "total"):
        out[c] = g[c].sum()
        out[f"{c}_bps"] = out[c] / out["notional"] * 10_000
    return out
