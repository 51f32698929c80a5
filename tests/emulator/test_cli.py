"""Bad input to ``toolkit emulator serve``: a ConfigurationError naming the field, a non-zero exit, nothing left
running (no thread, no bound port, no process), and a first emulator left unharmed."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from emulator_support import PROCESS_TIMEOUT_S
from typer.testing import CliRunner

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator, EmulatorConfig
from toolkit.emulator.cli import app
from toolkit.emulator.testing import free_port
from toolkit.errors import ConfigurationError
from toolkit.exchange import exchange_client


def _serve(tmp_path: Path, *args: str) -> Any:
    """Run ``serve`` in process through typer's runner with a fresh state file and ``args``."""
    before = set(threading.enumerate())
    result = CliRunner().invoke(app, ["serve", "--speed", "0", "--state", str(tmp_path / "state.sqlite"), *args])
    assert result.exit_code != 0
    assert not set(threading.enumerate()) - before  # nothing new left running (an earlier test's may end meanwhile)
    return result


@pytest.mark.parametrize(("args", "field", "shown"), [
    (["--port", "-1"], "port", "-1"),
    (["--port", "70000"], "port", "70000"),
    (["--speed", "-1"], "speed", "-1"),
    (["--speed", "nan"], "speed", "nan"),
    (["--balance", "USDT=NaN"], "balance", "USDT=NaN"),
    (["--balance", "USDT=inf"], "balance", "USDT=inf"),
    (["--balance", "USDT=-5"], "balance", "USDT=-5"),
    (["--balance", "USDT="], "balance", "USDT="),
    (["--balance", "=5"], "balance", "=5"),
    (["--symbols", ","], "symbols", ","),
    (["--symbols", "DOGE/USDT"], "symbols", "DOGE/USDT"),
])
def test_bad_values_name_their_field(tmp_path: Path, args: list[str], field: str, shown: str) -> None:
    result = _serve(tmp_path, *args)
    assert isinstance(result.exception, ConfigurationError), result.output
    assert result.exception.field == field
    assert str(result.exception).startswith(f"{field}: expected") and shown in str(result.exception)
    assert not (tmp_path / "state.sqlite").exists()  # refused before the state file was opened


def test_a_start_without_data_is_refused_naming_the_data_range(tmp_path: Path, small_store: Path) -> None:
    for start in ("2030-01-01", "2020-01-01"):
        with pytest.raises(ConfigurationError) as info:
            Emulator(EmulatorConfig(port=0, start=start, store_roots=(small_store,), state_path=tmp_path / "s"))
        assert info.value.field == "start"
        assert "the data of BTC/USDT: 2024-02-28T00:00:00Z .. 2024-03-04T00:00:00Z" in str(info.value)
    result = _serve(tmp_path, "--start", "2030-01-01")  # through the CLI, on the bundled bars
    assert isinstance(result.exception, ConfigurationError) and result.exception.field == "start"
    assert "2024-01-01T00:00:00Z .. " in str(result.exception)


def test_a_busy_port_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = _serve(tmp_path, "--port", str(busy.getsockname()[1]))
    assert isinstance(result.exception, ConfigurationError) and result.exception.field == "port"
    assert "a free TCP port" in str(result.exception)


def test_a_second_emulator_on_one_state_file_is_refused_and_the_first_keeps_running(
        make_emulator: Any, tmp_path: Path) -> None:
    first = make_emulator(state_path=tmp_path / "shared.sqlite")
    ex = exchange_client(url=first.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=first.clock,
                         enableRateLimit=False)
    ex.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000)
    port = free_port()
    result = CliRunner().invoke(app, ["serve", "--speed", "0", "--port", str(port), "--start", "2024-03-01",
                                      "--state", str(tmp_path / "shared.sqlite")])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigurationError)
    assert result.exception.field == "state" and "no other emulator has open" in str(result.exception)
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))  # the refused one released its port
    assert len(ex.fetch_open_orders("BTC/USDT")) == 1  # the first is unharmed
    assert ex.create_order("BTC/USDT", "market", "buy", 0.001)["status"] == "closed"
    assert ex.fetch_balance()["USDT"]["used"] == 500


def test_a_child_process_with_bad_input_exits_non_zero_naming_the_field(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.run([sys.executable, "-c", "from toolkit.emulator.cli import app; app()", "serve",
                           "--port", str(port), "--balance", "USDT=NaN", "--state", str(tmp_path / "s.sqlite")],
                          capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S)
    assert proc.returncode != 0
    assert "ConfigurationError: balance: expected ASSET=AMOUNT with a finite amount >= 0" in proc.stderr
    assert "emulator-api-secret" not in proc.stderr + proc.stdout  # no locals (the secret) in the traceback
    with socket.socket() as again:
        again.bind(("127.0.0.1", port))
