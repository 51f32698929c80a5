"""Real 1m bars held in memory as arrays, with Binance kline pages built from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.data.store import BarStore
from toolkit.emulator.errors import BinanceError

__all__ = ["INTERVALS", "AggTrade", "BarFeed", "bucket_end", "bucket_start", "load_feed"]

MINUTE = 60_000
DAY = 1440 * MINUTE
WEEK = 7 * DAY
#: Monday 1970-01-05 00:00 UTC: Binance's weeks open on Mondays.
_MONDAY = 4 * DAY
#: Binance intervals served, each with its longest length in ms (a month: 31 days).
INTERVALS: dict[str, int] = {
    "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE,
    "1h": 60 * MINUTE, "2h": 120 * MINUTE, "4h": 240 * MINUTE, "6h": 360 * MINUTE,
    "8h": 480 * MINUTE, "12h": 720 * MINUTE, "1d": DAY, "3d": 3 * DAY, "1w": WEEK, "1M": 31 * DAY,
}
#: Synthesised aggregate trades per 1m bar (open, two extremes, close) and their offsets in the minute.
AGG_PER_BAR = 4
_AGG_OFFSETS = (0, 20_000, 40_000, MINUTE - 1)


def bucket_start(t: np.ndarray, interval: str) -> np.ndarray:
    """Return the open time (epoch ms) of the ``interval`` kline containing each time in ``t``.

    Intervals up to 3d are aligned to the epoch, weeks open on Monday 00:00 UTC, months
    on the first of the month (UTC), as Binance's klines do.
    """
    t = np.asarray(t, dtype="int64")
    if interval == "1M":
        return t.astype("datetime64[ms]").astype("datetime64[M]").astype("datetime64[ms]").astype("int64")
    if interval == "1w":
        return (t - _MONDAY) // WEEK * WEEK + _MONDAY
    iv = INTERVALS[interval]
    return t // iv * iv


def bucket_end(start: np.ndarray, interval: str) -> np.ndarray:
    """Return the close time (the last ms) of the klines opening at ``start``."""
    start = np.asarray(start, dtype="int64")
    if interval == "1M":
        months = start.astype("datetime64[ms]").astype("datetime64[M]") + 1
        return months.astype("datetime64[ms]").astype("int64") - 1
    return start + INTERVALS[interval] - 1


@dataclass(frozen=True)
class AggTrade:
    """One synthesised aggregate trade: id, price, quantity, time (ms), and whether the buyer was the maker."""

    id: int
    price: float
    qty: float
    time: int
    buyer_maker: bool


@dataclass
class BarFeed:
    """The 1m bars of one symbol: open times in epoch ms and float columns."""

    symbol: str
    t: np.ndarray
    o: np.ndarray
    h: np.ndarray
    lo: np.ndarray
    c: np.ndarray
    v: np.ndarray
    qv: np.ndarray
    n: np.ndarray
    tbv: np.ndarray

    @property
    def first_ms(self) -> int:
        """Open time of the first bar."""
        return int(self.t[0])

    @property
    def last_ms(self) -> int:
        """Open time of the last bar."""
        return int(self.t[-1])

    def index_at(self, ms: int) -> int:
        """Return the index of the bar whose minute contains ``ms``, or -1 in a gap or outside the data."""
        i = int(np.searchsorted(self.t, ms, side="right")) - 1
        if i < 0 or ms >= int(self.t[i]) + MINUTE:
            return -1
        return i

    def last_closed(self, ms: int) -> int:
        """Return the index of the newest bar closed at replay time ``ms`` (-1 if none)."""
        return int(np.searchsorted(self.t, ms - MINUTE, side="right")) - 1

    def klines(self, interval: str, now_ms: int, start: int | None, end: int | None,
               limit: int) -> list[list[object]]:
        """Return Binance kline rows up to ``now_ms`` (ascending, at most ``limit``).

        The last row may be the kline still forming: it aggregates the closed 1m bars
        of its interval and the forming minute, of which only the open is known until
        it closes (open = high = low = close = the minute's open, no volume). Its close
        time lies in the future, as on Binance.
        """
        if interval not in INTERVALS:
            raise BinanceError(400, -1120, "Invalid interval.")
        span = INTERVALS[interval]
        closed_end = self.last_closed(now_ms) + 1
        forming = self.index_at(now_ms)
        n_end = closed_end + (1 if forming >= 0 else 0)
        if end is not None:
            last_bucket = int(bucket_start(np.array([end]), interval)[0])
            n_end = min(n_end, int(np.searchsorted(
                self.t, int(bucket_end(np.array([last_bucket]), interval)[0]), side="right")))
        if start is not None:
            first = int(bucket_start(np.array([start]), interval)[0])
            if first < start:
                first = int(bucket_end(np.array([first]), interval)[0]) + 1
            i0 = int(np.searchsorted(self.t, first, side="left"))
            n_end = min(n_end, int(np.searchsorted(self.t, first + limit * span, side="left")))
        else:
            if n_end <= 0:
                return []
            last_open = int(bucket_start(self.t[n_end - 1:n_end], interval)[0])
            i0 = int(np.searchsorted(self.t, last_open - (limit - 1) * span, side="left"))
        if n_end <= i0:
            return []
        sl = slice(i0, n_end)
        o, h, lo, c = self.o[sl], self.h[sl].copy(), self.lo[sl].copy(), self.c[sl].copy()
        v, qv, n, tbv = self.v[sl].copy(), self.qv[sl].copy(), self.n[sl].copy(), self.tbv[sl].copy()
        if 0 <= forming < n_end:  # the forming minute: only its open is known
            h[-1] = lo[-1] = c[-1] = o[-1]
            v[-1] = qv[-1] = n[-1] = tbv[-1] = 0
        keys_all = bucket_start(self.t[sl], interval)
        first_idx = np.flatnonzero(np.r_[True, keys_all[1:] != keys_all[:-1]])
        keys = keys_all[first_idx]
        last_idx = np.r_[first_idx[1:], n_end - i0] - 1
        ends = bucket_end(keys, interval)
        agg_h = np.maximum.reduceat(h, first_idx)
        agg_lo = np.minimum.reduceat(lo, first_idx)
        agg_v = np.add.reduceat(v, first_idx)
        agg_qv = np.add.reduceat(qv, first_idx)
        agg_n = np.add.reduceat(n, first_idx)
        agg_tbv = np.add.reduceat(tbv, first_idx)
        vwap = np.divide(agg_qv, agg_v, out=np.zeros_like(agg_qv), where=agg_v > 0)
        rows = [
            [int(k), f"{o[first_idx[i]]:.8f}", f"{agg_h[i]:.8f}", f"{agg_lo[i]:.8f}", f"{c[last_idx[i]]:.8f}",
             f"{agg_v[i]:.8f}", int(ends[i]), f"{agg_qv[i]:.8f}", int(agg_n[i]), f"{agg_tbv[i]:.8f}",
             f"{agg_tbv[i] * vwap[i]:.8f}", "0"]
            for i, k in enumerate(keys)
        ]
        if start is None:
            rows = rows[-limit:]
        return rows[:limit]

    def agg_trades(self, now_ms: int, from_id: int | None, start: int | None, end: int | None,
                   limit: int) -> list[AggTrade]:
        """Return synthesised aggregate trades of the closed bars (ascending id and time).

        Each closed 1m bar with volume gives four trades: at its open, its two extremes
        (low first in a rising bar, high first in a falling one) and its close, at 0, 20,
        40 and 59.999 s into the minute, each a quarter of the bar's volume. Ids are
        ``minute number x 4 + position``, so they increase with time and never change.
        """
        closed_end = self.last_closed(now_ms) + 1
        if from_id is not None or start is not None:  # forwards from an id or a time
            lo_ms = from_id // AGG_PER_BAR * MINUTE if from_id is not None else int(start or 0) - MINUTE + 1
            out: list[AggTrade] = []
            for j in range(int(np.searchsorted(self.t, lo_ms, side="left")), closed_end):
                if end is not None and int(self.t[j]) > end:
                    break
                out += [tr for tr in self._bar_trades(j) if (from_id is None or tr.id >= from_id)
                        and (start is None or tr.time >= start) and (end is None or tr.time <= end)]
                if len(out) >= limit:
                    break
            return out[:limit]
        # the most recent trades (before endTime): backwards until enough
        j = closed_end if end is None else min(closed_end, int(np.searchsorted(self.t, end, side="right")))
        chunks: list[list[AggTrade]] = []
        count = 0
        while j > 0 and count < limit:
            j -= 1
            chunk = [tr for tr in self._bar_trades(j) if end is None or tr.time <= end]
            chunks.append(chunk)
            count += len(chunk)
        return [tr for chunk in reversed(chunks) for tr in chunk][-limit:]

    def _bar_trades(self, j: int) -> list[AggTrade]:
        if self.v[j] <= 0:
            return []
        t_j = int(self.t[j])
        o, h, lo, c = self.o[j], self.h[j], self.lo[j], self.c[j]
        prices = (o, lo, h, c) if c >= o else (o, h, lo, c)
        quarter = round(float(self.v[j]) / AGG_PER_BAR, 8)
        qtys = [quarter, quarter, quarter, round(float(self.v[j]) - 3 * quarter, 8)]
        buy_heavy = self.tbv[j] * 2 >= self.v[j]
        out = []
        for m, (price, qty, offset) in enumerate(zip(prices, qtys, _AGG_OFFSETS, strict=True)):
            maker_buys = (price == lo and price != h) or (price != h and m in (0, 3) and not buy_heavy)
            out.append(AggTrade(t_j // MINUTE * AGG_PER_BAR + m, float(price), max(qty, 0.0), t_j + offset,
                                bool(maker_buys)))
        return out


def _column(frame: object, name: str, default: np.ndarray) -> np.ndarray:
    cols = getattr(frame, "columns", [])
    if name in cols:
        return np.nan_to_num(frame[name].to_numpy(dtype="float64"))  # type: ignore[index]
    return default


def load_feed(symbol: str, store: BarStore) -> BarFeed:
    """Load all 1m bars of ``symbol`` from ``store`` into a :class:`BarFeed`."""
    bars = store.load(symbol, "1m")
    t = (bars.index.as_unit("ms").asi8).astype("int64")
    v = bars["volume"].to_numpy(dtype="float64")
    close = bars["close"].to_numpy(dtype="float64")
    zeros = np.zeros_like(v)
    return BarFeed(
        symbol=symbol, t=t, o=bars["open"].to_numpy(dtype="float64"),
        h=bars["high"].to_numpy(dtype="float64"), lo=bars["low"].to_numpy(dtype="float64"), c=close, v=v,
        qv=_column(bars, "quote_volume", v * close), n=_column(bars, "trades", zeros),
        tbv=_column(bars, "taker_buy_base_volume", zeros),
    )
