"""ExchangeSession and ExchangeConfig: secrets never shown, venues by URL, closing, the reads a runner needs."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pydantic
import pytest
from exchange_support import FAST, faults

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.errors import ConfigurationError
from toolkit.exchange import ExchangeCallError, ExchangeConfig, ExchangeSession, exchange_client
from toolkit.exchange.session import API_KEY_ENV, SECRET_ENV

Connect = Callable[..., ExchangeSession]
SECRET = "s3cr3t-do-not-print"


def test_repr_shows_stars_for_credentials() -> None:
    config = ExchangeConfig(api_key="my-key-123", secret=SECRET)
    with ExchangeSession(config) as session:
        texts = (repr(config), str(config), repr(session))
    for text in texts:
        assert SECRET not in text and "my-key-123" not in text
        assert "secret='***'" in text and "api_key='***'" in text
    assert config.secret is not None and config.secret.get_secret_value() == SECRET  # kept, only hidden


def test_config_is_frozen_strict_and_its_identity_ignores_secrets() -> None:
    with pytest.raises(pydantic.ValidationError):
        ExchangeConfig(exchange="binance", urll="http://x")  # type: ignore[call-arg]
    config = ExchangeConfig(url="http://127.0.0.1:1", secret="a")
    with pytest.raises(pydantic.ValidationError):
        config.url = "http://elsewhere"  # type: ignore[misc]
    assert config.sha256() == ExchangeConfig(url="http://127.0.0.1:1", secret="b").sha256()
    assert config.sha256() != ExchangeConfig(url="http://127.0.0.1:2", secret="a").sha256()
    assert config.sha256() != ExchangeConfig(url="http://127.0.0.1:1").sha256()  # authenticated or not


def test_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(API_KEY_ENV, "env-key")
    monkeypatch.setenv(SECRET_ENV, "env-secret")
    config = ExchangeConfig.from_env(url="http://127.0.0.1:1")
    assert config.api_key is not None and config.api_key.get_secret_value() == "env-key"
    assert config.secret is not None and config.secret.get_secret_value() == "env-secret"
    session = ExchangeSession(config)
    assert (session.client.apiKey, session.client.secret) == ("env-key", "env-secret")
    session.close()
    empty = ExchangeConfig.from_env({})
    assert empty.api_key is None and empty.secret is None


def test_error_messages_never_contain_the_secret(emu: Emulator, connect: Connect) -> None:
    wrong = connect(secret=SECRET)
    with pytest.raises(ExchangeCallError) as info:
        wrong.fetch_balance()
    assert type(info.value).__name__ == "AuthenticationFailed"
    right = connect(secret=DEFAULT_API_SECRET)
    right.load_markets()
    faults(emu, {"kind": "http_5xx", "path": "/api/v3/klines"})
    # a secret can reach ccxt's message through a URL (here, a careless query parameter)
    with pytest.raises(ExchangeCallError) as outage:
        right.fetch_ohlcv("BTC/USDT", "1m", params={"note": DEFAULT_API_SECRET})
    for exc, secret in ((info.value, SECRET), (outage.value, DEFAULT_API_SECRET)):
        for text in (str(exc), repr(exc), exc.detail):
            assert secret not in text
    assert "note=***" in outage.value.detail


def test_venues_are_urls_not_branches(emu: Emulator) -> None:
    local = ExchangeSession(ExchangeConfig(url=emu.url))
    assert local.client.urls["api"]["public"] == emu.url + "/api/v3"
    testnet = ExchangeSession(ExchangeConfig(sandbox=True))
    assert "testnet.binance.vision" in testnet.client.urls["api"]["public"]
    production = ExchangeSession(ExchangeConfig())
    assert production.client.urls["api"]["public"].startswith("https://api.binance.com")
    for session in (local, testnet, production):
        session.close()
    with pytest.raises(ConfigurationError, match="sandbox"):
        ExchangeSession(ExchangeConfig(url=emu.url, sandbox=True))


def test_close_closes_only_a_client_the_session_built(emu: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[int] = []
    real_close = ccxt.binance.close

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_code.co_name != "__del__":  # explicit closes only, not ccxt's own __del__
            closed.append(id(self))
        return real_close(self, *args, **kwargs)

    monkeypatch.setattr(ccxt.binance, "close", spy)
    given = exchange_client(url=emu.url)
    with ExchangeSession(ExchangeConfig(url=emu.url)) as owned:
        assert owned.fetch_time() > 0
    assert closed.count(id(owned.client)) == 1 and owned.closed
    owned.close()  # twice is harmless
    assert closed.count(id(owned.client)) == 1
    with ExchangeSession(client=given) as borrowing:
        assert borrowing.fetch_time() > 0
    assert id(given) not in closed  # the caller's client is left open
    given.close()
    assert id(given) in closed


def test_the_reads_a_runner_needs(emu: Emulator, connect: Connect) -> None:
    session = connect(retry=FAST)
    markets = session.load_markets()
    assert "BTC/USDT" in markets and session.exchange == "binance"
    rows = session.fetch_ohlcv("BTC/USDT", "1m", limit=3)
    assert len(rows) == 3 and all(len(r) == 6 for r in rows) and rows[0][0] < rows[1][0] < rows[2][0]
    ticker = session.fetch_ticker("BTC/USDT")
    assert ticker["symbol"] == "BTC/USDT" and ticker["last"] > 0
    # the runner's arrival price: GET /api/v3/ticker/price, the same last trade as the 24 h ticker's
    assert session.fetch_last_price("BTC/USDT") == Decimal(str(ticker["last"]))
    assert session.fetch_time() == emu.clock.now_ms()  # the venue's replay clock (stepped: it stands still)
    assert isinstance(session.sync_clock(), int)
    assert session.fetch_balance()["USDT"]["free"] == 100_000
    assert session.fetch_open_orders("BTC/USDT") == [] and session.fetch_my_trades("BTC/USDT") == []
    amount, price = session.to_precision("BTC/USDT", "0.123456789", "61234.5678")
    assert (str(amount), str(price)) == ("0.12345", "61234.57")


def test_async_clients_are_still_built(emu: Emulator) -> None:
    async def fetch() -> int:
        client = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, async_=True,
                                 clock=emu.clock)
        try:
            assert isinstance(client, ccxt_async.binance)
            await client.load_markets()
            return int((await client.fetch_balance())["USDT"]["free"])
        finally:
            await client.close()

    assert asyncio.run(fetch()) == 100_000


def test_a_resync_measures_against_the_signing_clock_sync_and_async(emu: Emulator) -> None:
    """With ``clock=``, ``load_time_difference`` compares the server with that clock, not the wall clock."""
    faults(emu, {"kind": "clock_skew", "skew_ms": -30_000})  # the venue's clock runs 30 s behind
    sync = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                           enableRateLimit=False)
    sync.load_markets()
    with pytest.raises(ccxt.InvalidNonce):
        sync.fetch_balance()
    assert sync.load_time_difference() == 30_000
    assert sync.fetch_balance()["USDT"]["free"] == 100_000

    async def fetch() -> tuple[int, int]:
        client = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, async_=True,
                                 clock=emu.clock)
        try:
            await client.load_markets()
            diff = await client.load_time_difference()
            return int(diff), int((await client.fetch_balance())["USDT"]["free"])
        finally:
            await client.close()

    assert asyncio.run(fetch()) == (30_000, 100_000)
