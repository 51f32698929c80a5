"""Measure trading costs on the bundled real order-book samples (what ``CostModel``'s defaults come from).

The samples (``toolkit/data/bundled/book/``, see ``SOURCES.md`` there) are a
Binance spot BTC/USDT websocket capture of 2024-08-08 23:54:13 → 2024-08-09
00:05:05 UTC: every book-ticker change, the L2 depth (a 1,000-level REST
snapshot and every 100 ms diff after it) and every trade, plus the 1m bars
around it. Two measurements:

* the relative quoted spread ``(ask − bid) / mid`` of the book ticker;
* the cost of walking the rebuilt L2 book with a market order of ``Q`` USDT:
  ``|VWAP of the fill − mid| / mid``, on both sides, at regular instants.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from toolkit.backtest.costs import BarCostInputs, CostModel, slippage_rates
from toolkit.config import BUNDLED_DIR
from toolkit.data.store import read_bars_file

__all__ = [
    "BOOK_DIR",
    "BOOK_SAMPLE",
    "BookState",
    "book_states",
    "book_walk_costs",
    "compare_with_book",
    "fit_impact_coef",
    "load_book_sample",
    "load_sample_bars",
    "relative_spread",
    "spread_summary",
    "taker_orders",
    "walk_cost",
]

BOOK_DIR = BUNDLED_DIR / "book"
#: file of each table of the 2024-08-08/09 capture
BOOK_SAMPLE = {
    "bookticker": "binance_BTCUSDT_bookticker_2024-08-08T2354Z_2024-08-09T0005Z.parquet",
    "depth": "binance_BTCUSDT_depth_2024-08-08T2354Z_2024-08-09T0005Z.parquet",
    "trades": "binance_BTCUSDT_trades_2024-08-08T2354Z_2024-08-09T0005Z.parquet",
    "bars_1m": "binance_BTCUSDT_1m_2024-08-08T0000Z_2024-08-09T0059Z.parquet",
    "quotes_2021": "binance_BTCUSDT_quotes_2021-01-08T0000Z_46s.parquet",
    "trades_2021": "binance_BTCUSDT_trades_2021-01-08T0000Z_46s.parquet",
}
#: the capture's clock ran this far behind Binance's (event_time − local_time, 1.250–1.277 s; SOURCES.md)
LOCAL_CLOCK_LAG = pd.Timedelta(milliseconds=1264)


def load_book_sample(table: str, directory: Path = BOOK_DIR) -> pd.DataFrame:
    """Return one bundled table (a key of ``BOOK_SAMPLE``) as stored."""
    return pd.read_parquet(Path(directory) / BOOK_SAMPLE[table])


def load_sample_bars(directory: Path = BOOK_DIR) -> pd.DataFrame:
    """Return the bundled 1m bars around the capture (tz-aware UTC index, validated)."""
    return read_bars_file(Path(directory) / BOOK_SAMPLE["bars_1m"])


def relative_spread(quotes: pd.DataFrame) -> pd.Series:
    """Return ``(ask − bid) / mid`` of each quote (a fraction)."""
    bid = quotes["bid_price"].to_numpy(dtype="float64")
    ask = quotes["ask_price"].to_numpy(dtype="float64")
    return pd.Series((ask - bid) / (0.5 * (ask + bid)), index=quotes.index, name="relative_spread")


def spread_summary(quotes: pd.DataFrame, tick: float = 0.01) -> dict[str, float]:
    """Return the relative spread's median and mean in bps, per quote and weighted by time held, and the one-tick share.

    Time weights are the gaps to the next quote (``local_time``, else ``timestamp``).
    """
    rs = relative_spread(quotes).to_numpy() * 1e4
    t = pd.DatetimeIndex(quotes["local_time"] if "local_time" in quotes else quotes["timestamp"]).asi8
    w, x = np.diff(t).astype("float64"), rs[:-1]
    order = np.argsort(x)
    cum = np.cumsum(w[order]) / w.sum()
    one_tick = (quotes["ask_price"] - quotes["bid_price"]).to_numpy()[:-1] < 1.5 * tick
    return {
        "median_bps": float(np.median(rs)),
        "mean_bps": float(rs.mean()),
        "time_weighted_median_bps": float(x[order][np.searchsorted(cum, 0.5)]),
        "time_weighted_mean_bps": float((w * x).sum() / w.sum()),
        "one_tick_time_share": float(w[one_tick].sum() / w.sum()),
        "quotes": float(len(rs)),
    }


def taker_orders(trades: pd.DataFrame) -> pd.DataFrame:
    """Group trades into taker orders (same trade time, same aggressor side) with their walk cost.

    Columns: ``notional`` (quote), ``first`` (first fill price), ``vwap``,
    ``fills``, ``cost_bps`` = |VWAP − first price| / first price (vs the touch,
    so half a spread below the cost vs mid; one tick here).
    """
    t = trades.assign(notional=trades["price"] * trades["qty"])
    g = t.groupby(["timestamp", "is_buyer_maker"])
    out = pd.DataFrame({"notional": g["notional"].sum(), "first": g["price"].first(),
                        "vwap": g["notional"].sum() / g["qty"].sum(), "fills": g.size()})
    out["cost_bps"] = (out["vwap"] - out["first"]).abs() / out["first"] * 1e4
    return out.reset_index()


@dataclass(frozen=True)
class BookState:
    """The L2 book at one instant: bids best first (descending), asks best first (ascending)."""

    time: pd.Timestamp            # exchange event time of the last diff applied
    bid_price: np.ndarray
    bid_qty: np.ndarray
    ask_price: np.ndarray
    ask_qty: np.ndarray

    @property
    def mid(self) -> float:
        return 0.5 * (float(self.bid_price[0]) + float(self.ask_price[0]))


def _side(levels: dict[float, float], descending: bool) -> tuple[np.ndarray, np.ndarray]:
    prices = np.array(sorted(levels, reverse=descending), dtype="float64")
    return prices, np.array([levels[p] for p in prices], dtype="float64")


def book_states(depth: pd.DataFrame, every: str = "1s") -> Iterator[BookState]:
    """Rebuild the L2 book from the snapshot and the diffs; yield it once per ``every`` of event time.

    Binance's rule: drop diffs with ``u`` ≤ the snapshot's ``lastUpdateId``,
    then apply every diff in order (a quantity of 0 removes the level). The
    book is yielded after the last diff of each ``every`` interval.
    """
    snap = depth[depth["kind"] == "snapshot"]
    last_id = int(snap["final_update_id"].iloc[0])
    books: dict[str, dict[float, float]] = {"bid": {}, "ask": {}}
    for side, price, qty in zip(snap["side"], snap["price"], snap["qty"], strict=True):
        books[str(side)][float(price)] = float(qty)
    diffs = depth[(depth["kind"] == "update") & (depth["final_update_id"] > last_id)]
    step = pd.Timedelta(every)
    bucket = diffs["event_time"].dt.floor(step).to_numpy()
    ends = np.flatnonzero(np.append(bucket[1:] != bucket[:-1], True))  # last row of each interval
    sides, prices, qtys = diffs["side"].to_numpy(), diffs["price"].to_numpy(), diffs["qty"].to_numpy()
    times = diffs["event_time"].to_numpy()
    start = 0
    for end in ends:
        for i in range(start, end + 1):
            levels = books[str(sides[i])]
            if qtys[i] == 0.0:
                levels.pop(float(prices[i]), None)
            else:
                levels[float(prices[i])] = float(qtys[i])
        start = int(end) + 1
        bp, bq = _side(books["bid"], descending=True)
        ap, aq = _side(books["ask"], descending=False)
        if bp.size and ap.size and bp[0] < ap[0]:
            at = pd.Timestamp(times[end])
            yield BookState(at.tz_localize("UTC") if at.tz is None else at, bp, bq, ap, aq)


def walk_cost(prices: np.ndarray, qty: np.ndarray, mid: float, notional: float) -> float:
    """Return ``|VWAP − mid| / mid`` of a market order for ``notional`` (quote) walking these levels.

    ``prices``/``qty`` are one side of the book, best first. NaN when the
    levels hold less than ``notional``.
    """
    level_notional = prices * qty
    cum = np.cumsum(level_notional)
    if cum.size == 0 or cum[-1] < notional:
        return float("nan")
    k = int(np.searchsorted(cum, notional))  # the level where the order ends
    filled_before = cum[k - 1] if k else 0.0
    base = qty[:k].sum() + (notional - filled_before) / prices[k]
    vwap = notional / base
    return abs(vwap - mid) / mid


def book_walk_costs(states: Sequence[BookState], sizes: Sequence[float]) -> pd.DataFrame:
    """Return the walk cost of a buy and a sell of each size (quote) at each book state.

    Rows: one per state and side (``time``, ``side``); columns: the sizes.
    """
    rows: list[dict[object, object]] = []
    for s in states:
        mid = s.mid
        for side, p, q in (("buy", s.ask_price, s.ask_qty), ("sell", s.bid_price, s.bid_qty)):
            row: dict[object, object] = {"time": s.time, "side": side}
            row.update({float(n): walk_cost(p, q, mid, float(n)) for n in sizes})
            rows.append(row)
    return pd.DataFrame(rows)


def _model_terms(bars: pd.DataFrame, times: pd.Series, sizes: Sequence[float],
                 model: CostModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (half-spread term, unit impact σ_h·participation^exponent per size, total slippage per size).

    Each instant is priced as an order at the open of the 1m bar that contains it
    (inputs up to the previous close); arrays are instants × sizes.
    """
    inputs = BarCostInputs.from_bars(bars, model)
    pos = bars.index.get_indexer(pd.DatetimeIndex(times).floor("1min"))
    if (pos < 0).any():
        raise ValueError("every instant must fall inside a bar of ``bars``")
    sizes_ = np.asarray(sizes, dtype="float64")
    notional = np.broadcast_to(sizes_, (len(bars), len(sizes_)))
    total = slippage_rates(inputs, notional, 1.0, model)[pos]
    unit = inputs.sigma[pos, None] * np.power(notional[pos] / inputs.horizon_quote_volume[pos, None],
                                              model.impact_exponent)
    half = model.spread_share * inputs.spread[pos]
    return half, unit, total


def fit_impact_coef(walks: pd.DataFrame, bars: pd.DataFrame, sizes: Sequence[float],
                    model: CostModel | None = None) -> float:
    """Return Y making the model's mean impact match the book's mean walk cost net of the half spread.

    Per size ``Q``: ``Y_Q = (mean walk cost − mean half-spread term) / mean(σ_h·participation^exponent)``;
    the fit is the geometric mean of the ``Y_Q`` (each size weighs the same in log terms).
    """
    model = model or CostModel()
    half, unit, _ = _model_terms(bars, walks["time"], sizes, model)
    book = walks[[float(q) for q in sizes]].mean().to_numpy()
    per_size = (book - half.mean()) / unit.mean(axis=0)
    return float(np.exp(np.log(per_size).mean()))


def compare_with_book(walks: pd.DataFrame, bars: pd.DataFrame, sizes: Sequence[float],
                      model: CostModel | None = None) -> pd.DataFrame:
    """Return, per order size (quote), the book's and the model's mean cost in bps and their ratio.

    ``walks`` is ``book_walk_costs``; the model prices an order of each size at
    every instant of ``walks`` (see ``_model_terms``). Columns: ``book_bps``,
    ``model_bps``, ``model_over_book``, and ``factor`` = max(ratio, 1/ratio).
    """
    model = model or CostModel()
    _, _, total = _model_terms(bars, walks["time"], sizes, model)
    book = walks[[float(q) for q in sizes]].mean().to_numpy() * 1e4
    mod = total.mean(axis=0) * 1e4
    ratio = mod / book
    return pd.DataFrame({"book_bps": book, "model_bps": mod, "model_over_book": ratio,
                         "factor": np.maximum(ratio, 1.0 / ratio)},
                        index=pd.Index([float(q) for q in sizes], name="order_usdt"))
