"""Retries of idempotent reads against the emulator's faults: attempts seen by the server, waits asked for.

Sleep is injected (it records and returns at once), so no test waits for a backoff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from exchange_support import Probe, fault_counts, faults, forget_requests, requests_seen

from toolkit.emulator import Emulator
from toolkit.emulator.testing import step_clock
from toolkit.exchange import ExchangeSession, Retrier, RetryEvent, RetryPolicy
from toolkit.exchange.errors import (
    ClockOutOfSync,
    ExchangeMaintenance,
    ExchangeTemporaryError,
    OrderNotFoundRejected,
    RateLimited,
    UnknownSymbol,
)

Connect = Callable[..., ExchangeSession]
KLINES = "/api/v3/klines"


def test_backoff_doubles_up_to_the_cap_and_attempts_are_bounded(emu: Emulator, connect: Connect,
                                                                 probe: Probe) -> None:
    session = connect(retry=RetryPolicy(attempts=5, initial_wait=1, max_wait=4, jitter=0))
    session.load_markets()
    faults(emu, {"kind": "http_5xx", "path": KLINES})
    with pytest.raises(ExchangeTemporaryError) as info:
        session.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    assert probe.sleeps == [1, 2, 4, 4]
    assert len(requests_seen(emu, "GET", KLINES)) == 5 and info.value.attempts == 5
    assert "after 5 attempts" in str(info.value) and "ExchangeNotAvailable" in str(info.value)
    assert [e.attempt for e in probe.events] == [1, 2, 3, 4]
    assert all(e.operation == "fetch_ohlcv BTC/USDT 1m" for e in probe.events)


def test_jitter_stays_within_the_initial_wait_and_the_cap(emu: Emulator, connect: Connect, probe: Probe) -> None:
    session = connect(retry=RetryPolicy(attempts=6, initial_wait=0.5, max_wait=1.0, jitter=0.3))
    session.load_markets()
    faults(emu, {"kind": "http_5xx", "path": KLINES})
    with pytest.raises(ExchangeTemporaryError):
        session.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    assert len(probe.sleeps) == 5
    assert 0.5 <= probe.sleeps[0] <= 0.8 and all(0.5 <= s <= 1.0 for s in probe.sleeps)


def test_a_temporary_failure_then_success(emu: Emulator, connect: Connect, probe: Probe) -> None:
    session = connect()
    session.load_markets()
    faults(emu, {"kind": "http_5xx", "path": KLINES, "times": 2})
    rows = session.fetch_ohlcv("BTC/USDT", "1m", limit=3)
    assert len(rows) == 3 and len(probe.sleeps) == 2 and session.retrier.retries == 2
    assert [r["status"] for r in requests_seen(emu, "GET", KLINES)] == [503, 503, 200]


@pytest.mark.parametrize(("kind", "status"), [("rate_limit", 429), ("ban", 418)])
def test_retry_after_is_honoured(emu: Emulator, connect: Connect, probe: Probe, kind: str, status: int) -> None:
    session = connect()  # backoff 0.01 s: the server's 3 s must win
    session.load_markets()
    faults(emu, {"kind": kind, "path": KLINES, "times": 1, "retry_after": 3})
    assert len(session.fetch_ohlcv("BTC/USDT", "1m", limit=2)) == 2
    assert probe.sleeps == [3.0]
    error = probe.events[0].error
    assert isinstance(error, RateLimited) and (error.status, error.retry_after) == (status, 3.0)
    assert [r["status"] for r in requests_seen(emu, "GET", KLINES)] == [status, 200]


def test_retry_after_longer_than_allowed_fails_at_once(emu: Emulator, connect: Connect, probe: Probe) -> None:
    session = connect(retry=RetryPolicy(attempts=5, initial_wait=0.01, max_retry_after=60))
    session.load_markets()
    faults(emu, {"kind": "ban", "path": KLINES, "retry_after": 120})
    with pytest.raises(RateLimited) as info:
        session.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    assert info.value.retry_after == 120 and info.value.status == 418 and info.value.exit_code == 75
    assert probe.sleeps == [] and len(requests_seen(emu, "GET", KLINES)) == 1


def test_the_deadline_stops_retrying_on_the_injected_clock(emu: Emulator, connect: Connect) -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    session = connect(retry=RetryPolicy(attempts=10, initial_wait=1, max_wait=8, jitter=0, deadline=3),
                      sleep=sleep, monotonic=lambda: now[0])
    session.load_markets()
    faults(emu, {"kind": "http_5xx", "path": KLINES})
    with pytest.raises(ExchangeTemporaryError) as info:
        session.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    assert sleeps == [1, 2] and info.value.attempts == 3  # failed at t=0, 1, 3: the deadline is reached
    assert len(requests_seen(emu, "GET", KLINES)) == 3


def test_a_client_timeout_is_retried(emu: Emulator, connect: Connect, probe: Probe) -> None:
    session = connect(timeout_ms=200)
    session.load_markets()
    faults(emu, {"kind": "timeout", "path": KLINES, "times": 1, "seconds": 0.6})
    assert len(session.fetch_ohlcv("BTC/USDT", "1m", limit=2)) == 2
    assert [e.error.ccxt_class for e in probe.events] == ["RequestTimeout"]
    assert fault_counts(emu) == {"timeout": 1}


def test_maintenance_is_retried_until_it_ends(emu: Emulator, connect: Connect, probe: Probe) -> None:
    faults(emu, {"kind": "maintenance", "start": "2024-03-01T00:00:00Z", "end": "2024-03-01T00:05:00Z"})
    ended: list[RetryEvent] = []

    def end_maintenance(event: RetryEvent) -> None:  # the replay clock moves past the window while we wait
        ended.append(event)
        step_clock(emu.url, 10)

    session = connect(on_retry=end_maintenance)
    balance = session.fetch_balance()
    assert balance["USDT"]["free"] == 100_000
    assert len(ended) == 1 and isinstance(ended[0].error, ExchangeMaintenance)
    assert fault_counts(emu) == {"maintenance": 1}


def test_maintenance_that_outlasts_the_attempts(emu: Emulator, connect: Connect, probe: Probe) -> None:
    faults(emu, {"kind": "maintenance"})
    session = connect()
    with pytest.raises(ExchangeMaintenance) as info:
        session.fetch_time()
    assert info.value.attempts == 3 and len(requests_seen(emu, "GET", "/api/v3/time")) == 3


def test_permanent_errors_are_not_retried(emu: Emulator, connect: Connect, probe: Probe) -> None:
    session = connect()
    session.load_markets()
    forget_requests(emu)
    with pytest.raises(OrderNotFoundRejected):
        session.fetch_order("BTC/USDT", "424242")
    with pytest.raises(UnknownSymbol):
        session.fetch_ohlcv("DOGE/USDT")
    assert len(requests_seen(emu, "GET", "/api/v3/order")) == 1 and probe.sleeps == [] and probe.events == []


def test_invalid_nonce_resyncs_the_clock_once_then_retries_once(emu: Emulator, connect: Connect,
                                                                probe: Probe) -> None:
    session = connect()
    session.load_markets()
    faults(emu, {"kind": "clock_skew", "skew_ms": -30_000})  # the server's clock runs 30 s behind
    forget_requests(emu)
    balance = session.fetch_balance()
    assert balance["USDT"]["free"] == 100_000
    assert [r["path"] for r in requests_seen(emu)] == ["/api/v3/account", "/api/v3/time", "/api/v3/account"]
    assert probe.sleeps == []  # a clock problem is not an outage: no backoff sleep
    assert len(probe.events) == 1 and isinstance(probe.events[0].error, ClockOutOfSync)
    assert probe.events[0].wait == 0.0
    assert session.client.options["timeDifference"] >= 29_000


def test_retries_are_logged_without_the_secret(emu: Emulator, connect: Connect,
                                               caplog: pytest.LogCaptureFixture) -> None:
    session = connect()
    session.load_markets()
    faults(emu, {"kind": "http_5xx", "path": "/api/v3/account", "times": 1})
    with caplog.at_level(logging.WARNING, logger="toolkit.exchange"):
        session.fetch_balance()
    messages = [r.getMessage() for r in caplog.records if r.name == "toolkit.exchange"]
    assert messages == ["fetch_balance: attempt 1 failed (ExchangeNotAvailable), retrying in 0.01 s"]
    assert "emulator-api-secret" not in caplog.text


def test_a_retrier_without_a_client_converts_and_retries(emu: Emulator) -> None:
    """The retrier on its own: any idempotent call, here one that fails twice before succeeding."""
    calls: list[int] = []

    def flaky() -> str:
        import ccxt

        calls.append(1)
        if len(calls) < 3:
            raise ccxt.RequestTimeout("binance GET http://127.0.0.1/api/v3/time")
        return "ok"

    sleeps: list[float] = []
    retrier = Retrier(RetryPolicy(attempts=3, initial_wait=0.2, jitter=0), sleep=sleeps.append)
    assert retrier.call(flaky, "flaky", exchange="binance") == "ok"
    assert sleeps == [0.2, 0.4] and retrier.retries == 2
