"""Fixtures: real ccxt sessions over loopback HTTP to a real emulator (stepped clock), fake sleep only.

Every emulator and session a test opens is closed at teardown, and the emulator's port is
checked to be free again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from exchange_support import FAST, START, Probe

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.emulator.testing import EmulatorPool, make_store
from toolkit.exchange import ExchangeConfig, ExchangeSession, RetryPolicy


@pytest.fixture(scope="session")
def btc_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Binance BTC/USDT 1m bars 2024-02-28..03-03 (the emulator's data)."""
    return make_store(tmp_path_factory.mktemp("exchange-store"), {"BTC/USDT": ("2024-02-28", "2024-03-03")})


@pytest.fixture
def make_emulator(btc_store: Path, tmp_path: Path) -> Iterator[Callable[..., Emulator]]:
    """Return a factory of started emulators (stepped clock at 2024-03-01); all stopped at teardown."""
    pool = EmulatorPool(tmp_path, start=START, store_roots=(btc_store,))
    try:
        yield pool.start
    finally:
        assert pool.stop_all() == [], "an emulator port is still bound"


@pytest.fixture
def emu(make_emulator: Callable[..., Emulator]) -> Emulator:
    return make_emulator()


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
def connect(emu: Emulator, probe: Probe) -> Iterator[Callable[..., ExchangeSession]]:
    """Return a factory of sessions to ``emu`` (or another emulator) with a recording fake sleep; closed at teardown."""
    opened: list[ExchangeSession] = []

    def _connect(target: Emulator | None = None, *, retry: RetryPolicy = FAST, api_key: str | None = DEFAULT_API_KEY,
                 secret: str | None = DEFAULT_API_SECRET, timeout_ms: int = 5000, sleep: Any = None,
                 on_retry: Any = None, **kwargs: Any) -> ExchangeSession:
        config = ExchangeConfig(url=(target or emu).url, api_key=api_key, secret=secret, rate_limit=False,
                                timeout_ms=timeout_ms, retry=retry)
        kwargs.setdefault("clock", (target or emu).clock)  # sign with the venue's replay clock
        session = ExchangeSession(config, sleep=sleep or probe.sleeps.append, on_retry=on_retry or probe.events.append,
                                  **kwargs)
        opened.append(session)
        return session

    yield _connect
    for session in opened:
        session.close()
