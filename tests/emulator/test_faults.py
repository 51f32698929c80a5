"""Every fault kind, as ccxt sees it, and the counters that expose it."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import ccxt
import pytest

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator, load_faults
from toolkit.emulator.testing import FollowerClock, admin, step_clock
from toolkit.errors import ConfigurationError
from toolkit.exchange import exchange_client


def _faults(emu: Emulator, *rules: dict[str, Any]) -> None:
    admin(emu.url, "POST", "/admin/faults", {"faults": list(rules), "replace": True})


def _counts(emu: Emulator) -> dict[str, int]:
    return admin(emu.url, "GET", "/admin/faults")["counts"]  # type: ignore[no-any-return]


def test_latency_is_added(emu: Emulator, client: Any) -> None:
    _faults(emu, {"kind": "latency", "ms": 300, "path": "/api/v3/klines", "times": 1})
    t0 = time.perf_counter()
    client.fetch_ohlcv("BTC/USDT", "1m", limit=1)
    assert time.perf_counter() - t0 >= 0.3  # at least the injected delay (its size is measured by the benchmark)
    client.fetch_ohlcv("BTC/USDT", "1m", limit=1)
    assert _counts(emu) == {"latency": 1}  # once: the second request was not delayed


@pytest.mark.parametrize(("status", "exc"), [(503, ccxt.ExchangeNotAvailable),
                                             (502, ccxt.ExchangeNotAvailable), (504, ccxt.RequestTimeout)])
def test_http_5xx(emu: Emulator, client: Any, status: int, exc: type[Exception]) -> None:
    _faults(emu, {"kind": "http_5xx", "status": status, "times": 1})
    with pytest.raises(exc):
        client.fetch_balance()
    assert client.fetch_balance()["USDT"]["free"] == 100000  # next request passes
    assert _counts(emu) == {"http_5xx": 1}


@pytest.mark.parametrize(("kind", "code"), [("rate_limit", 429), ("ban", 418)])
def test_rate_limit_and_ban_with_retry_after(emu: Emulator, client: Any, kind: str, code: int) -> None:
    _faults(emu, {"kind": kind, "retry_after": 7, "path": "/api/v3/ping"},
            {"kind": kind, "path": "/api/v3/order", "method": "POST", "times": 1})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(emu.url + "/api/v3/ping", timeout=60)
    assert info.value.code == code and info.value.headers["Retry-After"] == "7"
    assert json.loads(info.value.read())["code"] == -1003
    with pytest.raises(ccxt.DDoSProtection):
        client.create_order("BTC/USDT", "market", "buy", 0.001)
    assert client.fetch_orders("BTC/USDT") == []  # the refused order does not exist
    assert _counts(emu) == {kind: 2}


def test_timeout(emu: Emulator) -> None:
    ex = exchange_client(url=emu.url, enableRateLimit=False, timeout=300)
    ex.load_markets()
    _faults(emu, {"kind": "timeout", "seconds": 1.0, "path": "/api/v3/klines", "times": 1})
    with pytest.raises(ccxt.RequestTimeout):
        ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)
    patient = exchange_client(url=emu.url, enableRateLimit=False, timeout=60_000)
    assert len(patient.fetch_ohlcv("BTC/USDT", "1m", limit=1)) == 1  # the fault fired once
    assert _counts(emu) == {"timeout": 1}


def test_drop_after_order_accepted(emu: Emulator, client: Any) -> None:
    _faults(emu, {"kind": "drop_after_order", "path": "/api/v3/order", "times": 1})
    with pytest.raises(ccxt.NetworkError) as info:
        client.create_order("BTC/USDT", "market", "buy", 0.002, None, {"clientOrderId": "lost-ack"})
    assert not isinstance(info.value, ccxt.ExchangeError)
    order = client.fetch_order(None, "BTC/USDT", {"clientOrderId": "lost-ack"})  # it exists and filled
    assert order["status"] == "closed" and order["filled"] == 0.002
    assert client.fetch_balance()["BTC"]["total"] == 0.002 - 0.000002  # the buyer's 0.1 % fee, in BTC
    assert _counts(emu) == {"drop_after_order": 1}


def test_drop_only_after_an_accepted_order(emu: Emulator, client: Any) -> None:
    _faults(emu, {"kind": "drop_after_order", "times": 1})
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "sell", 1)  # rejected: answered normally
    assert _counts(emu) == {}


def test_clock_skew_then_a_follower_resync_recovers(emu: Emulator) -> None:
    follower = FollowerClock(emu.url)
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=follower,
                         enableRateLimit=False)
    assert ex.fetch_balance()["USDT"]["free"] == 100000
    _faults(emu, {"kind": "clock_skew", "skew_ms": -30_000})  # the server's clock runs 30 s behind
    with pytest.raises(ccxt.InvalidNonce):
        ex.fetch_balance()
    assert ex.fetch_time() == emu.clock.now_ms() - 30_000  # /api/v3/time shows the skewed clock
    follower.sync()  # what load_time_difference() does for a wall-clock client
    assert ex.fetch_balance()["USDT"]["free"] == 100000
    assert _counts(emu)["clock_skew"] >= 4


def test_maintenance_window_on_the_replay_clock(emu: Emulator, client: Any) -> None:
    _faults(emu, {"kind": "maintenance", "start": "2024-03-01T00:10:00Z", "end": "2024-03-01T00:20:00Z"})
    assert client.fetch_status()["status"] == "ok"
    step_clock(emu.url, 12)
    assert client.fetch_status()["status"] == "maintenance"
    with pytest.raises(ccxt.OnMaintenance):
        client.fetch_balance()
    with pytest.raises(ccxt.OnMaintenance):
        client.fetch_ohlcv("BTC/USDT", "1m", limit=1)
    step_clock(emu.url, 10)
    assert client.fetch_balance()["USDT"]["free"] == 100000
    assert client.fetch_status()["status"] == "ok"
    assert _counts(emu) == {"maintenance": 3}  # the status request is counted but answered


def test_stale_klines(emu: Emulator, client: Any) -> None:
    fresh = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][0]
    _faults(emu, {"kind": "stale_klines", "lag_minutes": 15, "path": "/api/v3/klines"})
    stale = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][0]
    assert fresh - stale == 15 * 60_000
    assert _counts(emu) == {"stale_klines": 1}


def test_skip_times_and_totals(emu: Emulator, client: Any) -> None:
    _faults(emu, {"kind": "http_5xx", "path": "/api/v3/klines", "skip": 2, "times": 2})
    outcomes = []
    for _ in range(6):
        try:
            client.fetch_ohlcv("BTC/USDT", "1m", limit=1)
            outcomes.append("ok")
        except ccxt.ExchangeNotAvailable:
            outcomes.append("5xx")
    assert outcomes == ["ok", "ok", "5xx", "5xx", "ok", "ok"]
    snap = admin(emu.url, "GET", "/admin/faults")
    assert snap["rules"][0]["seen"] == 6 and snap["rules"][0]["fired"] == 2 and snap["total"] == 2
    assert admin(emu.url, "GET", "/admin/status")["faults"] == {"http_5xx": 2}


def test_faults_file(make_emulator: Any, tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"seed": 3, "faults": [{"kind": "rate_limit", "path": "/api/v3/time"}]}))
    emu = make_emulator(faults_path=path)
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False)
    with pytest.raises(ccxt.DDoSProtection):
        ex.fetch_time()
    assert _counts(emu) == {"rate_limit": 1}


def test_bad_faults_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"faults": [{"kind": "latency", "ms": 5}, {"kind": "meteor"}]}))
    with pytest.raises(ConfigurationError, match=r"faults\[1\]\.kind"):
        load_faults(path)
    with pytest.raises(ConfigurationError, match="an existing JSON file"):
        load_faults(tmp_path / "missing.json")


def test_async_client_sees_dropped_order_and_rate_limit(emu: Emulator) -> None:
    _faults(emu, {"kind": "drop_after_order", "times": 1},
            {"kind": "rate_limit", "path": "/api/v3/account", "times": 1})

    async def run() -> dict[str, Any]:
        ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, async_=True,
                             clock=emu.clock,
                             enableRateLimit=False)
        try:
            await ex.load_markets()
            with pytest.raises(ccxt.NetworkError):
                await ex.create_order("BTC/USDT", "market", "buy", 0.001, None, {"clientOrderId": "a-lost"})
            with pytest.raises(ccxt.DDoSProtection):
                await ex.fetch_balance()
            return await ex.fetch_order(None, "BTC/USDT", {"clientOrderId": "a-lost"})
        finally:
            await ex.close()

    assert asyncio.run(run())["status"] == "closed"
    assert _counts(emu) == {"drop_after_order": 1, "rate_limit": 1}
