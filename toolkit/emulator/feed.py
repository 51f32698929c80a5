"""Real 1m bars held in memory as arrays, with Binance kline pages built from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from toolkit.data.store import BarStore
from toolkit.emulator.errors import BinanceError

__all__ = ["INTERVALS", "BarFeed", "load_feed"]

MINUTE = 60_000
#: Binance intervals served, in milliseconds (weeks and months are not emulated).
INTERVALS: dict[str, int] = {
    "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "30m": 30 * MINUTE,
    "1h": 60 * MINUTE, "2h": 120 * MINUTE, "4h": 240 * MINUTE, "6h": 360 * MINUTE,
    "8h": 480 * MINUTE, "12h": 720 * MINUTE, "1d": 1440 * MINUTE,
}


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
        """Return Binance kline rows of bars closed by ``now_ms`` (ascending, at most ``limit``)."""
        if interval not in INTERVALS:
            raise BinanceError(400, -1120, "Invalid interval.")
        iv = INTERVALS[interval]
        # only buckets whose whole interval has closed are visible
        visible_end = (now_ms // iv) * iv  # first bucket not closed yet starts here
        hi_ms = visible_end if end is None else min(visible_end, (end // iv) * iv + iv)
        i1 = int(np.searchsorted(self.t, hi_ms, side="left"))
        if start is not None:
            i0 = int(np.searchsorted(self.t, -(-start // iv) * iv, side="left"))
            if iv == MINUTE:
                i1 = min(i1, i0 + limit)
        elif iv == MINUTE:
            i0 = max(0, i1 - limit)
        else:
            i0 = int(np.searchsorted(self.t, hi_ms - limit * iv, side="left"))
        if i1 <= i0:
            return []
        t = self.t[i0:i1]
        if iv == MINUTE:
            keys, first = t, np.arange(i1 - i0)
        else:
            buckets = t // iv
            first = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
            keys = buckets[first] * iv
        last = np.r_[first[1:], i1 - i0] - 1
        sl = slice(i0, i1)
        o = self.o[sl][first]
        c = self.c[sl][last]
        h = np.maximum.reduceat(self.h[sl], first)
        lo = np.minimum.reduceat(self.lo[sl], first)
        v = np.add.reduceat(self.v[sl], first)
        qv = np.add.reduceat(self.qv[sl], first)
        n = np.add.reduceat(self.n[sl], first)
        tbv = np.add.reduceat(self.tbv[sl], first)
        vwap = np.divide(qv, v, out=np.zeros_like(qv), where=v > 0)
        rows = [
            [int(k), f"{o[i]:.8f}", f"{h[i]:.8f}", f"{lo[i]:.8f}", f"{c[i]:.8f}", f"{v[i]:.8f}",
             int(k) + iv - 1, f"{qv[i]:.8f}", int(n[i]), f"{tbv[i]:.8f}", f"{tbv[i] * vwap[i]:.8f}", "0"]
            for i, k in enumerate(keys)
        ]
        if start is None:
            rows = rows[-limit:]
        return rows[:limit]


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
