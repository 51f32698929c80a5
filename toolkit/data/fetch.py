"""The resumable OHLCV fetcher: pages bars from an exchange into the bar store.

It only fetches. The exchange is reached through ``toolkit.exchange.ExchangeSession``,
which builds the ccxt client, converts ccxt errors at the call and retries the
(idempotent) market-data reads with bounded backoff honouring ``Retry-After``; nothing
under ``toolkit.data`` imports ccxt.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from toolkit.clock import ms_to_timestamp, timestamp_to_ms
from toolkit.data.resample import timeframe_minutes
from toolkit.data.store import BarStore, parse_time
from toolkit.errors import ConfigurationError, DataError
from toolkit.exchange import ExchangeConfig, ExchangeSession, RetryEvent, RetryPolicy

__all__ = ["FetchResult", "fetch_ohlcv"]

#: A ``Retry-After`` longer than this is not waited for (a batch fetch can wait longer than a live bot).
MAX_RETRY_AFTER = 300.0


@dataclass
class FetchResult:
    """What a fetch did: ranges, counts, files written and the data-quality certificate."""

    exchange: str
    symbol: str
    timeframe: str
    since: str
    until: str
    resumed_from: str | None
    pages: int
    bars_fetched: int
    bars_written: int
    retries: int
    first: str | None
    last: str | None
    files: list[str] = field(default_factory=list)
    certificate: dict[str, Any] | None = None
    passed: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


def _certify(bars: pd.DataFrame, symbol: str, timeframe: str) -> Any:
    # THE single call site of the data-quality certificate (toolkit/data/quality.py).
    try:
        from toolkit.data.quality import certify
    except ImportError:
        return None
    return certify(bars, symbol, timeframe)


def _frame(rows: list[list[Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["timestamp", "open", "high", "low", "close", "volume"])
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("timestamp"), unit="ms", utc=True),
                                   name="timestamp").as_unit("ns")
    return frame.astype("float64")


def fetch_ohlcv(exchange_id: str, symbol: str, timeframe: str, since: object, until: object,
                url: str | None = None, store: BarStore | None = None, progress: bool = True, *,
                session: ExchangeSession | None = None, client: Any = None, page_limit: int | None = None,
                flush_bars: int = 5000, retries: int = 5, backoff: float = 0.5) -> FetchResult:
    """Fetch OHLCV bars through the exchange adapter into the bar store, fetching only the bars it lacks.

    The expected open times are the ``timeframe`` grid in ``[since, until)``;
    the fetch starts at the first of them missing from the store (a hole
    before stored bars included) and skips over stored runs, so an interrupted
    or partial earlier fetch is completed without duplicates. Bars the
    exchange does not have (a halt) are asked for again on every run.

    Parameters
    ----------
    exchange_id, symbol, timeframe
        ccxt exchange id, symbol (``BTC/USDT``) and timeframe (``1m``, ``1h`` …).
    since, until
        Bars with open time in ``[since, until)``; a bare date is its midnight UTC.
    url
        Base URL of a Binance-compatible server (e.g. the loopback emulator).
    store
        Target store (bars are written to its last root); default ``BarStore()``.
    progress
        Print one line per page to stderr.
    session
        An open exchange session to fetch through (left open; ``exchange_id``, ``url``,
        ``retries`` and ``backoff`` are then ignored). Otherwise one is opened and closed here.
    client
        An existing ccxt client for the session opened here (left open).
    page_limit
        Bars per request (default 1000 on binance, the exchange's default elsewhere).
    flush_bars
        Write to the store whenever this many new bars are buffered, so an
        interrupted fetch keeps what it got and the next run resumes after it.
    retries, backoff
        Further attempts per request after a temporary error, and the first backoff in seconds.

    Returns
    -------
    FetchResult, whose ``certificate`` is the data-quality certificate of the
    whole requested range as stored (None when ``toolkit.data.quality`` is absent)
    and whose ``resumed_from`` is the first missing bar when some were stored.

    Raises
    ------
    ConfigurationError
        Bad timeframe or dates; an unknown symbol (``UnknownSymbol``, field ``symbol``).
    TemporaryError
        The exchange stayed unreachable or rate-limited after the retries
        (``ExchangeTemporaryError``; what was fetched before is stored; run again to resume).
    ExchangeRejected, ExchangeOperationalError
        The exchange refused the request, or answered in a way only a human can fix.
    DataError
        The stored bars after the fetch do not reach from ``since`` to ``until`` minus
        one bar (e.g. a range before the listing or after the exchange's newest bar).
    """
    store = store or BarStore()
    step_ms = timeframe_minutes(timeframe) * 60_000
    t0, t1 = parse_time(since, "since"), parse_time(until, "until")
    if t0 is None or t1 is None:
        raise ConfigurationError("since/until", "both dates, e.g. --since 2024-04-01 --until 2024-04-08",
                                 (since, until))
    if t1 <= t0:
        raise ConfigurationError("until", f"a time after since {t0}", until)
    start_ms, end_ms = timestamp_to_ms(t0), timestamp_to_ms(t1)
    start_ms = -(-start_ms // step_ms) * step_ms
    grid = np.arange(start_ms, end_ms, step_ms, dtype="int64")
    if not len(grid):
        raise ConfigurationError("since/until", f"a range holding at least one {timeframe} bar open time",
                                 (since, until))
    missing = _missing(store, symbol, timeframe, t0, t1, grid)
    resumed_from = None
    if len(missing) < len(grid):
        first_gap = int(missing[0]) if len(missing) else end_ms
        resumed_from = ms_to_timestamp(first_gap).isoformat()
    exchange_name = session.exchange if session is not None else exchange_id
    limit = page_limit or (1000 if exchange_name == "binance" else None)

    def _note(event: RetryEvent) -> None:
        if progress:
            print(f"  retry in {event.wait:.1f}s after {event.error.ccxt_class or type(event.error).__name__}",
                  file=sys.stderr)

    what = f"{exchange_name} {symbol} {timeframe}"
    cursor = int(missing[0]) if len(missing) else end_ms
    wanted = set(missing.tolist())
    pages, fetched, written = 0, 0, 0
    buffer: dict[int, list[Any]] = {}
    files: set[str] = set()

    def _flush() -> None:
        nonlocal written
        if buffer:
            frame = _frame([buffer[k] for k in sorted(buffer)])
            files.update(str(p) for p in store.write(symbol, timeframe, frame))
            written += len(frame)
            buffer.clear()

    own = session is None
    retried_before = 0
    try:
        if session is None:  # opened inside the try, so a failing load_markets still closes it
            policy = RetryPolicy(attempts=retries + 1, initial_wait=backoff, max_retry_after=MAX_RETRY_AFTER)
            session = ExchangeSession(ExchangeConfig(exchange=exchange_id, url=url, retry=policy), client=client,
                                      on_retry=_note)
        retried_before = session.retrier.retries
        session.load_markets()
        while cursor < end_ms:
            page = session.fetch_ohlcv(symbol, timeframe, since=cursor, limit=limit, params={"until": end_ms - 1})
            pages += 1
            seen = [r for r in page if cursor <= r[0] < end_ms]
            if not seen:
                break
            rows = [r for r in seen if int(r[0]) in wanted and int(r[0]) not in buffer]
            for r in rows:
                buffer[int(r[0])] = r[:6]
            fetched += len(rows)
            # jump to the next bar still missing from the store (holes before stored bars included)
            later = missing[np.searchsorted(missing, int(seen[-1][0]), side="right"):]
            cursor = int(later[0]) if len(later) else end_ms
            if progress:
                print(f"  {what}: page {pages}, {fetched} bars, up to "
                      f"{pd.Timestamp(seen[-1][0], unit='ms', tz='UTC')}", file=sys.stderr)
            if len(buffer) >= flush_bars:
                _flush()
    finally:
        try:
            _flush()
        finally:
            if own and session is not None:
                session.close()
    retries_used = session.retrier.retries - retried_before
    try:
        bars = store.load(symbol, timeframe, t0, t1 - pd.Timedelta(milliseconds=1))
    except DataError as exc:
        raise DataError(f"{what}: expected bars between {t0} and {t1} after the fetch, found none") from exc
    first_ms, last_ms = timestamp_to_ms(bars.index[0]), timestamp_to_ms(bars.index[-1])
    if first_ms > int(grid[0]) or last_ms < int(grid[-1]):
        raise DataError(
            f"{what}: expected stored bars covering {_iso(int(grid[0]))} .. {_iso(int(grid[-1]))} (since .. "
            f"until - {timeframe}) after the fetch, found {bars.index[0].isoformat()} .. "
            f"{bars.index[-1].isoformat()} (the exchange has no bars for the rest)")
    cert = _certify(bars, symbol, timeframe)
    return FetchResult(
        exchange=exchange_name, symbol=symbol, timeframe=timeframe, since=t0.isoformat(), until=t1.isoformat(),
        resumed_from=resumed_from, pages=pages, bars_fetched=fetched, bars_written=written,
        retries=retries_used, first=bars.index[0].isoformat(), last=bars.index[-1].isoformat(),
        files=sorted(files), certificate=None if cert is None else cert.to_dict(),
        passed=None if cert is None else bool(cert.passed),
    )


def _iso(ms: int) -> str:
    return ms_to_timestamp(ms).isoformat()


def _missing(store: BarStore, symbol: str, timeframe: str, t0: pd.Timestamp, t1: pd.Timestamp,
             grid: np.ndarray) -> np.ndarray:
    """Return the open times on ``grid`` that the store does not hold yet (ascending)."""
    if timeframe not in _native(store, symbol):
        return grid
    try:
        have = store.load(symbol, timeframe, t0, t1 - pd.Timedelta(milliseconds=1))
    except DataError:
        return grid
    stored = have.index.as_unit("ms").asi8.astype("int64")
    return grid[~np.isin(grid, stored)]


def _native(store: BarStore, symbol: str) -> list[str]:
    try:
        return store.timeframes(symbol)
    except OSError:
        return []
