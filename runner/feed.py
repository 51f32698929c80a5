"""Closed bars from the exchange: the forming candle dropped, repeated, revised, missing and stale bars found.

A bar whose open time plus its length is after the exchange's time is still forming and is
never returned as a bar; its close is the last trade's price when the klines were read, which the
runner takes as an order's arrival price when that read is recent (:meth:`BarFeed.last_trade`).
The feed keeps a buffer of the last closed bars per deployment (enough for the version's
``required_history``) and fetches only what is new each cycle.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from decimal import Decimal

import pandas as pd

from toolkit.exchange import ExchangeSession

__all__ = ["BarFeed", "FeedIssue"]

PAGE = 1000  # Binance's largest klines page
COLUMNS = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class FeedIssue:
    """Something wrong with the bars seen: ``repeated_bar``, ``revised_bar``, ``missing_bar`` or ``stale_feed``."""

    kind: str
    message: str


@dataclass
class BarFeed:
    """The closed bars of one symbol and timeframe, kept up to date from the exchange."""

    session: ExchangeSession
    symbol: str
    timeframe: str
    bar_ms: int
    keep: int
    bars: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(COLUMNS), dtype="float64"))
    #: the forming bar of the last read: (its open time, its close, ``time.monotonic()`` when it was read)
    forming: tuple[int, float, float] | None = None

    def _fetch(self, since: int, now: int) -> tuple[list[list[float]], list[FeedIssue]]:
        rows: list[list[float]] = []
        issues: list[FeedIssue] = []
        cursor = since
        while True:
            page = self.session.fetch_ohlcv(self.symbol, self.timeframe, since=cursor, limit=PAGE)
            read_at = time.monotonic()
            rows.extend(page)
            if len(page) < PAGE or not page:
                break
            nxt = int(page[-1][0]) + self.bar_ms
            if nxt <= cursor or nxt > now:
                break
            cursor = nxt
        seen: set[int] = set()
        out: list[list[float]] = []
        self.forming = None
        for r in rows:
            t = int(r[0])
            if t + self.bar_ms > now:  # still forming: never a bar; its close is the last trade
                if t <= now and r[4] is not None and float(r[4]) > 0:
                    self.forming = (t, float(r[4]), read_at)
                continue
            if t in seen:
                issues.append(FeedIssue("repeated_bar", f"{self.symbol} {self.timeframe} bar {_iso(t)} sent twice"))
                continue
            seen.add(t)
            out.append([float(x) for x in r[:6]])
        return out, issues

    def update(self, now: int, since: int | None = None) -> list[FeedIssue]:
        """Fetch the closed bars after the buffer's last one (or from ``since``); return the issues found."""
        if since is None:
            since = (int(self.bars.index[-1]) if len(self.bars) else now - (self.keep + 1) * self.bar_ms)
        rows, issues = self._fetch(since, now)
        new: dict[int, list[float]] = {}
        for r in rows:
            t = int(r[0])
            if t in self.bars.index:
                old = self.bars.loc[t].to_numpy().tolist()
                if old != r[1:6]:
                    issues.append(FeedIssue("revised_bar", f"{self.symbol} bar {_iso(t)} changed after it closed: "
                                            f"{old} -> {r[1:6]} (the first one seen is kept)"))
                continue
            new[t] = r[1:6]
        if new:
            add = pd.DataFrame.from_dict(new, orient="index", columns=list(COLUMNS))
            frames = [f for f in (self.bars, add) if len(f)]
            self.bars = pd.concat(frames).sort_index() if len(frames) > 1 else add.sort_index()
            self.bars = self.bars.iloc[-self.keep:]
            times = self.bars.index.to_numpy()
            gaps = [(int(a), int(b)) for a, b in itertools.pairwise(times)
                    if b - a != self.bar_ms and b in new]
            for a, b in gaps:
                issues.append(FeedIssue("missing_bar", f"{self.symbol} {self.timeframe}: {(b - a) // self.bar_ms - 1} "
                                        f"bar(s) missing between {_iso(a)} and {_iso(b)}"))
        return issues

    def last_trade(self, now: int, max_age_ms: int) -> Decimal | None:
        """Return the last trade's price as the last klines read saw it: the close of the bar forming at ``now``.

        None when that read is older than ``max_age_ms`` of wall time, when it had no forming bar, or
        when that bar has closed since (``now`` is the exchange's time).
        """
        if self.forming is None:
            return None
        t, close, read_at = self.forming
        if not t <= now < t + self.bar_ms or (time.monotonic() - read_at) * 1000.0 > max_age_ms:
            return None
        return Decimal(repr(close))

    def expected_last(self, now: int) -> int:
        """Return the open time of the last bar that has closed at ``now``."""
        return (now // self.bar_ms) * self.bar_ms - self.bar_ms

    def behind(self, now: int) -> int:
        """Return how many closed bars the buffer lacks at its end (0: up to date)."""
        if not len(self.bars):
            return 10**9
        return max(0, (self.expected_last(now) - int(self.bars.index[-1])) // self.bar_ms)

    def frame(self) -> pd.DataFrame:
        """Return the buffer with a tz-aware UTC index (the strategies' input)."""
        out = self.bars.copy()
        out.index = pd.DatetimeIndex(pd.to_datetime(out.index.astype("int64"), unit="ms", utc=True), name="timestamp")
        return out


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
