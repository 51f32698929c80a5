"""The ccxt adapter of the data area: an exchange client factory and a resumable OHLCV fetcher.

This is the only module under ``toolkit.data`` that imports ccxt. ccxt errors are
converted at the call into ``toolkit.errors`` classes; only temporary ones
(network errors, timeouts, rate limits, maintenance) are retried, with a bounded
exponential backoff that honours the server's ``Retry-After``; ``InvalidNonce``
syncs the clock once (``load_time_difference``) and is retried once. Retrying is
for idempotent calls only.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import ccxt
import numpy as np
import pandas as pd

from toolkit.data.resample import timeframe_minutes
from toolkit.data.store import BarStore, parse_time
from toolkit.errors import ConfigurationError, DataError, TemporaryError, ToolkitError
from toolkit.exchange.client import exchange_client

__all__ = ["FetchResult", "call_with_retry", "fetch_ohlcv"]

TEMPORARY = (ccxt.NetworkError,)  # RequestTimeout, ExchangeNotAvailable, DDoSProtection, RateLimitExceeded…

T = TypeVar("T")


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


def _convert(exc: Exception, what: str) -> ToolkitError:
    if isinstance(exc, ccxt.InvalidNonce):
        return ConfigurationError("clock", "a local clock within recvWindow of the exchange's "
                                  "(call load_time_difference() or sync the clock)", f"{what}: {exc}")
    if isinstance(exc, TEMPORARY):
        return TemporaryError(f"{what}: temporary exchange failure ({type(exc).__name__}): {exc}")
    if isinstance(exc, ccxt.BadSymbol):
        return ConfigurationError("symbol", "a symbol listed by the exchange", f"{what}: {exc}")
    if isinstance(exc, ccxt.AuthenticationError):
        return ConfigurationError("credentials", "a valid API key and secret", f"{what}: {exc}")
    if isinstance(exc, ccxt.NotSupported):
        return ConfigurationError("exchange", "an exchange that supports fetch_ohlcv", f"{what}: {exc}")
    return DataError(f"{what}: the exchange refused ({type(exc).__name__}): {exc}")


def _retry_after(exchange: Any) -> float | None:
    """Return the ``Retry-After`` seconds of the client's last response (a 418/429), if any."""
    headers = getattr(exchange, "last_response_headers", None) or {}
    for key, value in dict(headers).items():
        if str(key).lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


def call_with_retry(fn: Callable[[], T], what: str, retries: int = 5, backoff: float = 0.5,
                    max_backoff: float = 8.0,
                    on_retry: Callable[[Exception, float], None] | None = None, *,
                    exchange: Any = None, max_retry_after: float = 300.0) -> T:
    """Call ``fn``; retry temporary ccxt errors with bounded exponential backoff.

    For **idempotent calls only** (market data, balances, order queries): a
    request that timed out may have been executed, so retrying an order
    placement or a cancel can act twice.

    Parameters
    ----------
    fn
        The call, without arguments.
    what
        What is being done, for error messages.
    retries, backoff, max_backoff
        Further attempts after the first, the first delay and the largest delay in seconds.
    on_retry
        Called with the error and the delay before each retry.
    exchange
        The ccxt client ``fn`` uses. With it, ``InvalidNonce`` calls
        ``exchange.load_time_difference()`` once and retries once at once (without
        it, ``InvalidNonce`` is not retried), and a 418/429 waits the server's
        ``Retry-After`` (from ``exchange.last_response_headers``) when longer than the backoff.
    max_retry_after
        A ``Retry-After`` longer than this many seconds is not waited for: the
        call fails with ``TemporaryError`` at once.

    Raises
    ------
    TemporaryError
        When every attempt failed temporarily, or the server asked for a longer wait than allowed.
    ConfigurationError
        ``InvalidNonce`` that a clock sync did not cure, bad symbol or credentials.
    DataError
        Other permanent failures (converted from ccxt at once, never retried).
    """
    delay = backoff
    synced = False
    attempt = 0
    while True:
        try:
            return fn()
        except ccxt.InvalidNonce as exc:
            if synced or exchange is None or not hasattr(exchange, "load_time_difference"):
                raise _convert(exc, what) from exc
            synced = True
            try:
                exchange.load_time_difference()
            except ccxt.BaseError as sync_exc:
                raise _convert(sync_exc, f"{what} load_time_difference") from sync_exc
        except ccxt.BaseError as exc:
            if not isinstance(exc, TEMPORARY) or attempt >= retries:
                raise _convert(exc, what) from exc
            wait = delay
            if isinstance(exc, ccxt.DDoSProtection) and exchange is not None:
                asked = _retry_after(exchange)
                if asked is not None and asked > max_retry_after:
                    raise TemporaryError(f"{what}: the exchange asks to wait {asked:.0f} s (Retry-After), "
                                         f"more than max_retry_after={max_retry_after:.0f} s: {exc}") from exc
                wait = max(wait, asked or 0.0)
            if on_retry is not None:
                on_retry(exc, wait)
            time.sleep(wait)
            attempt += 1
            delay = min(max_backoff, delay * 2)


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
                client: Any = None, page_limit: int | None = None, flush_bars: int = 5000,
                retries: int = 5, backoff: float = 0.5) -> FetchResult:
    """Fetch OHLCV bars with ccxt into the bar store, fetching only the bars it does not hold yet.

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
    client
        An existing ccxt client (otherwise one is built with :func:`exchange_client`).
    page_limit
        Bars per request (default 1000 on binance, the exchange's default elsewhere).
    flush_bars
        Write to the store whenever this many new bars are buffered, so an
        interrupted fetch keeps what it got and the next run resumes after it.
    retries, backoff
        Attempts per request for temporary errors and the first delay in seconds.

    Returns
    -------
    FetchResult, whose ``certificate`` is the data-quality certificate of the
    whole requested range as stored (None when ``toolkit.data.quality`` is absent)
    and whose ``resumed_from`` is the first missing bar when some were stored.

    Raises
    ------
    ConfigurationError
        Bad symbol, timeframe or dates.
    TemporaryError
        The exchange stayed unreachable or rate-limited after the retries (what
        was fetched before is stored; run again to resume).
    DataError
        The exchange refused the request, or the stored bars after the fetch do
        not reach from ``since`` to ``until`` minus one bar (e.g. a range
        before the listing or after the exchange's newest bar).
    """
    store = store or BarStore()
    step_ms = timeframe_minutes(timeframe) * 60_000
    t0, t1 = parse_time(since, "since"), parse_time(until, "until")
    if t0 is None or t1 is None:
        raise ConfigurationError("since/until", "both dates, e.g. --since 2024-04-01 --until 2024-04-08",
                                 (since, until))
    if t1 <= t0:
        raise ConfigurationError("until", f"a time after since {t0}", until)
    start_ms, end_ms = int(t0.value // 1_000_000), int(t1.value // 1_000_000)
    start_ms = -(-start_ms // step_ms) * step_ms
    grid = np.arange(start_ms, end_ms, step_ms, dtype="int64")
    if not len(grid):
        raise ConfigurationError("since/until", f"a range holding at least one {timeframe} bar open time",
                                 (since, until))
    missing = _missing(store, symbol, timeframe, t0, t1, grid)
    resumed_from = None
    if len(missing) < len(grid):
        first_gap = int(missing[0]) if len(missing) else end_ms
        resumed_from = pd.Timestamp(first_gap, unit="ms", tz="UTC").isoformat()
    ex: Any = client
    limit = page_limit or (1000 if exchange_id == "binance" else None)
    retries_used = 0

    def _note(exc: Exception, delay: float) -> None:
        nonlocal retries_used
        retries_used += 1
        if progress:
            print(f"  retry in {delay:.1f}s after {type(exc).__name__}", file=sys.stderr)

    what = f"{exchange_id} {symbol} {timeframe}"
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

    try:
        if ex is None:  # built inside the try, so a failing load_markets still closes it
            ex = exchange_client(exchange_id, url=url)
        call_with_retry(ex.load_markets, f"{what} load_markets", retries, backoff, on_retry=_note,
                        exchange=ex)
        while cursor < end_ms:
            def _page(c: int = cursor) -> list[list[Any]]:
                return ex.fetch_ohlcv(symbol, timeframe, since=c, limit=limit,  # type: ignore[no-any-return]
                                      params={"until": end_ms - 1})

            page = call_with_retry(_page, f"{what} fetch_ohlcv", retries, backoff, on_retry=_note, exchange=ex)
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
            if client is None and ex is not None and hasattr(ex, "close"):
                ex.close()
    try:
        bars = store.load(symbol, timeframe, t0, t1 - pd.Timedelta(milliseconds=1))
    except DataError as exc:
        raise DataError(f"{what}: expected bars between {t0} and {t1} after the fetch, found none") from exc
    first_ms, last_ms = int(bars.index[0].value // 1_000_000), int(bars.index[-1].value // 1_000_000)
    if first_ms > int(grid[0]) or last_ms < int(grid[-1]):
        raise DataError(
            f"{what}: expected stored bars covering {_iso(int(grid[0]))} .. {_iso(int(grid[-1]))} (since .. "
            f"until - {timeframe}) after the fetch, found {bars.index[0].isoformat()} .. "
            f"{bars.index[-1].isoformat()} (the exchange has no bars for the rest)")
    cert = _certify(bars, symbol, timeframe)
    return FetchResult(
        exchange=exchange_id, symbol=symbol, timeframe=timeframe, since=t0.isoformat(), until=t1.isoformat(),
        resumed_from=resumed_from, pages=pages, bars_fetched=fetched, bars_written=written,
        retries=retries_used, first=bars.index[0].isoformat(), last=bars.index[-1].isoformat(),
        files=sorted(files), certificate=None if cert is None else cert.to_dict(),
        passed=None if cert is None else bool(cert.passed),
    )


def _iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()


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
