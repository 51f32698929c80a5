"""A restarted emulator continues where it stopped: a real second process on the same state file."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
from pathlib import Path
from typing import Any

import ccxt
import pytest
from emulator_support import spawn_emulator

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET
from toolkit.emulator.testing import FollowerClock, admin, free_port, step_clock
from toolkit.errors import ConfigurationError
from toolkit.exchange import exchange_client


def _client(port: int, clock: FollowerClock | None = None) -> Any:
    """A ccxt client of an emulator in another process, signing with a follower of its replay clock."""
    url = f"http://127.0.0.1:{port}"
    return exchange_client(url=url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET,
                           clock=clock or FollowerClock(url), enableRateLimit=False, timeout=60_000)


def test_killed_process_restarts_with_the_same_state(tmp_path: Path, procs: list[Any]) -> None:
    state, cache = tmp_path / "state.sqlite", tmp_path / "cache"
    port = free_port()
    spawn_emulator(state, port, cache, procs)
    url = f"http://127.0.0.1:{port}"
    follower = FollowerClock(url)
    ex = _client(port, follower)
    buy = ex.create_order("BTC/USDT", "market", "buy", 0.05)
    step_clock(url, 30, follower)
    rest = ex.create_order("BTC/USDT", "limit", "sell", 0.02, 99_000, {"clientOrderId": "keep-me"})
    before = ex.fetch_balance()["info"]["balances"]
    replay = admin(url, "GET", "/admin/status")["replay_ms"]
    procs[0].send_signal(signal.SIGKILL)  # no clean shutdown: durability comes from per-request commits
    procs[0].wait(timeout=60)

    port2 = free_port()
    spawn_emulator(state, port2, cache, procs)
    ex2 = _client(port2)
    assert admin(f"http://127.0.0.1:{port2}", "GET", "/admin/status")["replay_ms"] == replay
    assert ex2.fetch_balance()["info"]["balances"] == before
    assert [o["id"] for o in ex2.fetch_open_orders("BTC/USDT")] == [rest["id"]]
    assert ex2.fetch_order(buy["id"], "BTC/USDT")["status"] == "closed"
    assert [t["order"] for t in ex2.fetch_my_trades("BTC/USDT")] == [buy["id"]]
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate"):
        ex2.create_order("BTC/USDT", "limit", "sell", 0.01, 99_000, {"clientOrderId": "keep-me"})
    newer = ex2.create_order("BTC/USDT", "market", "sell", 0.01)
    assert int(newer["id"]) > int(rest["id"])
    procs[1].send_signal(signal.SIGINT)
    procs[1].wait(timeout=60)
    log = (tmp_path / f"emulator-{port2}.log").read_text(errors="replace")
    assert procs[1].returncode == 0, log
    assert "Traceback" not in log


def test_in_process_restart_keeps_orders_and_clock(make_emulator: Any) -> None:
    emu = make_emulator()
    ex = _client(emu.port)
    ex.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, {"clientOrderId": "stay"})
    step_clock(emu.url, 90)
    emu.stop()
    again = make_emulator()  # same state file, same --start: the saved clock wins
    assert again.status()["replay_time"] == "2024-03-01T01:30:00Z"
    ex2 = _client(again.port)
    assert [o["clientOrderId"] for o in ex2.fetch_open_orders("BTC/USDT")] == ["stay"]
    assert ex2.fetch_balance()["USDT"]["used"] == 500  # price x qty


def test_a_busy_port_or_bad_faults_file_never_opens_the_state_file(make_emulator: Any, tmp_path: Path) -> None:
    state = tmp_path / "never.sqlite"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ConfigurationError, match="port: expected a free TCP port"):
            make_emulator(port=busy.getsockname()[1], state_path=state)
    assert not state.exists()
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"faults": [{"kind": "no-such-fault"}]}))
    with pytest.raises(ConfigurationError, match=r"faults\[0\]"):
        make_emulator(faults_path=faults, state_path=state)
    assert not state.exists()


def test_a_failed_start_closes_the_state_file_and_the_port(make_emulator: Any, tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite"
    make_emulator(state_path=state).stop()
    with contextlib.closing(sqlite3.connect(state)) as db:  # a damaged state file: the clock is not a number
        db.execute("UPDATE meta SET value='garbage' WHERE key='replay_ms'")
        db.commit()
    assert not Path(f"{state}-wal").exists()  # SQLite removes the WAL when the last connection closes
    port = free_port()
    with pytest.raises(ValueError, match="garbage"):
        make_emulator(state_path=state, port=port)
    assert not Path(f"{state}-wal").exists()  # so the failed start closed its connection
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # and released the port


def test_credentials_from_the_environment_stay_out_of_the_command_line(tmp_path: Path, procs: list[Any]) -> None:
    key, secret = "desk-key-from-env", "desk-secret-from-env-7f3a"
    port = free_port()
    proc = spawn_emulator(tmp_path / "state.sqlite", port, tmp_path / "cache", procs,
                  {"EMULATOR_API_KEY": key, "EMULATOR_API_SECRET": secret})
    assert secret not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()  # what `ps` shows
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(ccxt.AuthenticationError):
        _client(port).fetch_balance()  # the default credentials are no longer accepted
    ex = exchange_client(url=url, api_key=key, secret=secret, clock=FollowerClock(url), enableRateLimit=False)
    assert ex.fetch_balance()["USDT"]["free"] == 50_000
