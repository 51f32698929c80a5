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


_OLD_ORDERS = """CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY, symbol TEXT NOT NULL, client_order_id TEXT NOT NULL,
    side TEXT NOT NULL, type TEXT NOT NULL, time_in_force TEXT NOT NULL, price TEXT NOT NULL,
    orig_qty TEXT NOT NULL, executed_qty TEXT NOT NULL, cum_quote TEXT NOT NULL, status TEXT NOT NULL,
    time INTEGER NOT NULL, update_time INTEGER NOT NULL, locked TEXT NOT NULL, lock_asset TEXT NOT NULL,
    orig_quote_qty TEXT NOT NULL)"""


def test_a_state_file_of_the_previous_release_is_migrated(make_emulator: Any, tmp_path: Path) -> None:
    state = tmp_path / "old.sqlite"
    with contextlib.closing(sqlite3.connect(state)) as db:  # the schema before stop orders and order lists
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("CREATE TABLE balances (asset TEXT PRIMARY KEY, free TEXT NOT NULL, locked TEXT NOT NULL)")
        db.execute(_OLD_ORDERS)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("replay_ms", "1709251200000"),
                                                          ("processed_ms", "1709251200000")])
        db.executemany("INSERT INTO balances VALUES (?, ?, ?)", [("USDT", "99500", "500"), ("BTC", "0", "0")])
        db.execute("INSERT INTO orders VALUES (1000001, 'BTCUSDT', 'old', 'BUY', 'LIMIT', 'GTC', '50000', '0.01', "
                   "'0', '0', 'NEW', 1709251200000, 1709251200000, '500', 'USDT', '0')")
        db.commit()
    emu = make_emulator(state_path=state)
    ex = _client(emu.port)
    (order,) = ex.fetch_open_orders("BTC/USDT")
    assert order["clientOrderId"] == "old" and order["info"]["isWorking"] is True
    assert order["info"]["workingTime"] == 1709251200000 and order["info"]["orderListId"] == -1
    assert ex.cancel_order(order["id"], "BTC/USDT")["status"] == "canceled"
    assert ex.fetch_balance()["USDT"]["free"] == 100000


def test_stop_orders_and_order_lists_survive_a_restart(make_emulator: Any) -> None:
    emu = make_emulator(balances={"USDT": 100000, "BTC": 1})
    ex = _client(emu.port)
    last = ex.fetch_ticker("BTC/USDT")["last"]
    stop = ex.create_order("BTC/USDT", "limit", "sell", 0.1, round(last * 0.98, 2),
                           {"stopLossPrice": round(last * 0.99, 2)})
    oco = ex.privatePostOrderListOco({
        "symbol": "BTCUSDT", "side": "SELL", "quantity": "0.2", "aboveType": "LIMIT_MAKER",
        "abovePrice": f"{last * 1.05:.2f}", "belowType": "STOP_LOSS_LIMIT", "belowStopPrice": f"{last * 0.95:.2f}",
        "belowPrice": f"{last * 0.94:.2f}", "belowTimeInForce": "GTC"})
    emu.stop()
    again = make_emulator(balances={"USDT": 1})
    ex2 = _client(again.port)
    assert sorted(o["id"] for o in ex2.fetch_open_orders("BTC/USDT")) == sorted(
        [stop["id"], *(str(o["orderId"]) for o in oco["orders"])])
    assert ex2.fetch_balance()["BTC"]["used"] == 0.3  # 0.1 for the stop, 0.2 once for the OCO
    assert ex2.privateGetOpenOrderList()[0]["orderListId"] == oco["orderListId"]
    ex2.privateDeleteOrderList({"symbol": "BTCUSDT", "orderListId": oco["orderListId"]})
    assert ex2.fetch_balance()["BTC"]["used"] == 0.1
