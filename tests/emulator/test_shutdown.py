"""Stopping the emulator: in process (connections closed, no handler thread left, no 500 for a racing request)
and as a real child process stopped by SIGTERM or SIGINT (state saved, exit status 0)."""

from __future__ import annotations

import http.client
import json
import logging
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import ccxt
import pytest
from emulator_support import PROCESS_TIMEOUT_S, spawn_emulator

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET
from toolkit.emulator.testing import FollowerClock, admin, free_port, step_clock
from toolkit.exchange import exchange_client


def _emulator_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("emulator")]


def _closed(conn: http.client.HTTPConnection) -> bool:
    """True when the server has ended the keep-alive connection: a further request gets no answer."""
    try:
        conn.request("GET", "/api/v3/ping")
        conn.getresponse().read()
    except (ConnectionError, http.client.HTTPException, OSError):
        return True
    return False


def test_stop_closes_keep_alive_connections_and_leaves_no_handler_thread(make_emulator: Any) -> None:
    before = set(threading.enumerate())
    emu = make_emulator()
    conns = [http.client.HTTPConnection("127.0.0.1", emu.port, timeout=60) for _ in range(3)]
    for conn in conns:
        conn.request("GET", "/api/v3/ping")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") != "close"
        resp.read()  # the connection stays open (HTTP/1.1 keep-alive)
    assert sum(name.startswith("emulator-handler") for name in _emulator_threads()) == 3
    port = emu.port
    emu.stop()
    assert all(_closed(conn) for conn in conns)
    assert not set(threading.enumerate()) - before  # no handler thread (nor the server's) left serving
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # and the port is free
    emu.stop()  # idempotent


def test_requests_racing_a_stop_get_no_500(make_emulator: Any, caplog: pytest.LogCaptureFixture) -> None:
    before = set(threading.enumerate())
    emu = make_emulator()
    statuses: list[int] = []
    failures: list[str] = []
    lock = threading.Lock()
    go = threading.Event()

    def hammer(path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=60)
        go.wait()
        for _ in range(400):
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                with lock:
                    statuses.append(resp.status)
                if resp.status not in (200, 400):
                    with lock:
                        failures.append(f"{resp.status} {body!r}")
            except (ConnectionError, http.client.HTTPException, OSError):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=60)
        conn.close()

    paths = ["/api/v3/ping", "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5",
             "/api/v3/depth?symbol=BTCUSDT", "/api/v3/ticker/24hr?symbol=BTCUSDT"]
    threads = [threading.Thread(target=hammer, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    caplog.set_level(logging.ERROR, logger="toolkit.emulator")
    go.set()
    time.sleep(0.15)
    emu.stop()
    for t in threads:
        t.join(timeout=PROCESS_TIMEOUT_S)
    assert statuses.count(200) > 20  # the stop really raced live traffic
    assert all(s in (200, 503) for s in statuses), failures  # served, or refused cleanly while stopping
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback logged
    assert not set(threading.enumerate()) - before  # no thread of its own left


def test_a_request_after_stopping_began_is_a_retryable_503(make_emulator: Any) -> None:
    emu = make_emulator()
    ex = exchange_client(url=emu.url, enableRateLimit=False, timeout=60_000)
    assert ex.fetch_time() == emu.clock.now_ms()
    assert emu.gate.close(PROCESS_TIMEOUT_S)  # what stop() does first: refuse new requests
    with pytest.raises(ccxt.ExchangeNotAvailable):  # a 503 without a Binance code: ccxt's retryable error
        ex.fetch_time()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_the_state_closes_connections_and_exits_0(tmp_path: Path, procs: list[Any],
                                                                  sig: signal.Signals) -> None:
    state, cache = tmp_path / "state.sqlite", tmp_path / "cache"
    port = free_port()
    proc = spawn_emulator(state, port, cache, procs)
    url = f"http://127.0.0.1:{port}"
    follower = FollowerClock(url)
    ex = exchange_client(url=url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=follower,
                         enableRateLimit=False, timeout=60_000)
    ex.create_order("BTC/USDT", "market", "buy", 0.01)
    step_clock(url, 45, follower)
    resting = ex.create_order("BTC/USDT", "limit", "buy", 0.01, 40_000)
    before = admin(url, "GET", "/admin/status")["replay_ms"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/api/v3/ping")
    conn.getresponse().read()  # a keep-alive connection open across the shutdown
    proc.send_signal(sig)
    assert proc.wait(timeout=PROCESS_TIMEOUT_S) == 0
    log = (tmp_path / f"emulator-{port}.log").read_text(errors="replace")
    assert "Traceback" not in log and "state saved" in log
    assert _closed(conn)
    port2 = free_port()
    spawn_emulator(state, port2, cache, procs)  # the saved state comes back
    url2 = f"http://127.0.0.1:{port2}"
    assert admin(url2, "GET", "/admin/status")["replay_ms"] == before
    ex2 = exchange_client(url=url2, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=FollowerClock(url2),
                          enableRateLimit=False, timeout=60_000)
    assert [o["id"] for o in ex2.fetch_open_orders("BTC/USDT")] == [resting["id"]]
    assert json.loads(json.dumps(ex2.fetch_balance()["BTC"]))["total"] == 0.00999


def test_a_child_stopped_while_busy_exits_0(tmp_path: Path, procs: list[Any]) -> None:
    port = free_port()
    proc = spawn_emulator(tmp_path / "state.sqlite", port, tmp_path / "cache", procs)
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1000")
                conn.getresponse().read()
                conn.close()
            except (ConnectionError, http.client.HTTPException, OSError):
                return

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=PROCESS_TIMEOUT_S) == 0
    finally:
        stop.set()
        worker.join(timeout=PROCESS_TIMEOUT_S)
    log = (tmp_path / f"emulator-{port}.log").read_text(errors="replace")
    assert "Traceback" not in log and "unexpected error" not in log
