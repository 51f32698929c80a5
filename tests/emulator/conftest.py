"""Fixtures: a small real-data store and an emulator on a free loopback port, stepped clock."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from emulator_support import PROCESS_TIMEOUT_S

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.emulator.testing import EmulatorPool, make_store
from toolkit.exchange import exchange_client

START = "2024-03-01"


@pytest.fixture(scope="session")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Binance 1m bars: BTC/USDT 2024-02-28..03-03 and ETH/USDT 2024-08-01..08-02."""
    root = tmp_path_factory.mktemp("store")
    return make_store(root, {"BTC/USDT": ("2024-02-28", "2024-03-03"),
                             "ETH/USDT": ("2024-08-01", "2024-08-02")})


@pytest.fixture
def make_emulator(small_store: Path, tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Return a factory of started emulators (BTC/USDT, stepped clock at 2024-03-01); all stopped at teardown.

    ``wall_clock`` is the clock the rate-limit windows run on (tests give a ManualClock).

    The bundled BTC (2024-01..04) and ETH (2024-07-26..08-25) bars do not overlap, and an
    emulator refuses a start outside any symbol's data, so ETH runs in emulators of its own.
    """
    pool = EmulatorPool(tmp_path, start=START, store_roots=(small_store,), symbols=("BTC/USDT",),
                        state_path=tmp_path / "state.sqlite")  # one state file: restarts continue it
    try:
        yield pool.start
    finally:
        assert pool.stop_all() == [], "an emulator port is still bound"


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()


@pytest.fixture
def client(emu: Emulator) -> Any:
    """A real sync ccxt binance client pointed at the emulator (client-side rate limiter off)."""
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False, timeout=60_000)
    ex.load_markets()
    return ex



@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Child processes a test starts; any still running at teardown is killed and reaped."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=PROCESS_TIMEOUT_S)
