"""The fetcher against the loopback emulator: full fetch, resume after interruption, retries, CLI exit codes.

The retry policy itself (backoff, Retry-After, clock resync) is tested in ``tests/exchange``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from toolkit.data.fetch import fetch_ohlcv
from toolkit.data.fetch_cli import fetch_command
from toolkit.data.store import BarStore
from toolkit.emulator import Emulator, EmulatorConfig
from toolkit.emulator.testing import admin, make_store
from toolkit.errors import ConfigurationError, DataError, TemporaryError
from toolkit.exchange import ExchangeConfig, ExchangeSession, RetryPolicy, exchange_client
from toolkit.exchange.errors import ExchangeTemporaryError, UnknownSymbol

COLS = ["open", "high", "low", "close", "volume"]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The emulator's own data: real BTC/USDT 1m bars 2024-03-01..03-03."""
    return make_store(tmp_path_factory.mktemp("source"), {"BTC/USDT": ("2024-03-01", "2024-03-03")})


@pytest.fixture
def emu(source: Path, tmp_path: Path) -> Iterator[Emulator]:
    cfg = EmulatorConfig(port=0, speed=0, start="2024-03-04", state_path=tmp_path / "emu.sqlite",
                         store_roots=(source,))
    with Emulator(cfg) as emulator:
        yield emulator


def _expected(source: Path) -> pd.DataFrame:
    return BarStore(roots=[source]).load("BTC/USDT", "1m", "2024-03-01", "2024-03-02")


def test_full_fetch_equals_the_emulator_data(emu: Emulator, source: Path, tmp_path: Path) -> None:
    store = BarStore(roots=[tmp_path / "fetched"])
    result = fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-01", "2024-03-03", url=emu.url, store=store,
                         progress=False)
    assert (result.bars_fetched, result.bars_written, result.pages) == (2880, 2880, 3)
    assert result.resumed_from is None and result.retries == 0
    got = store.load("BTC/USDT", "1m", "2024-03-01", "2024-03-02")
    expected = _expected(source)
    assert got.index.equals(expected.index)
    pd.testing.assert_frame_equal(got[COLS], expected[COLS])
    assert result.certificate is not None and result.passed is True
    assert result.certificate["n_bars"] == 2880
    # a second run has nothing left to fetch
    again = fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-01", "2024-03-03", url=emu.url, store=store,
                        progress=False)
    assert again.bars_fetched == 0 and again.resumed_from == "2024-03-03T00:00:00+00:00"


def test_interrupted_fetch_resumes_without_gaps_or_duplicates(emu: Emulator, source: Path,
                                                               tmp_path: Path) -> None:
    store = BarStore(roots=[tmp_path / "fetched"])
    # the exchange goes down for good after the first page
    admin(emu.url, "POST", "/admin/faults", {"faults": [{"kind": "http_5xx", "path": "/api/v3/klines",
                                                           "skip": 1}]})
    with pytest.raises(TemporaryError, match="ExchangeNotAvailable") as info:
        fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-01", "2024-03-03", url=emu.url, store=store,
                    progress=False, retries=2, backoff=0.01)
    assert isinstance(info.value, ExchangeTemporaryError) and info.value.attempts == 3
    assert info.value.exit_code == 75
    partial = store.load("BTC/USDT", "1m", "2024-03-01", "2024-03-02")
    assert len(partial) == 1000  # what arrived before the failure was kept
    assert admin(emu.url, "GET", "/admin/faults")["counts"] == {"http_5xx": 3}
    admin(emu.url, "DELETE", "/admin/faults")
    result = fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-01", "2024-03-03", url=emu.url, store=store,
                         progress=False)
    assert result.resumed_from == (partial.index[-1] + pd.Timedelta(minutes=1)).isoformat()
    assert result.bars_fetched == 2880 - 1000
    got = store.load("BTC/USDT", "1m", "2024-03-01", "2024-03-02")
    assert not got.index.has_duplicates
    assert (got.index.to_series().diff().dropna() == pd.Timedelta(minutes=1)).all()
    pd.testing.assert_frame_equal(got[COLS], _expected(source)[COLS])


def test_temporary_errors_are_retried(emu: Emulator, tmp_path: Path) -> None:
    admin(emu.url, "POST", "/admin/faults", {"faults": [
        {"kind": "rate_limit", "path": "/api/v3/klines", "times": 1},
        {"kind": "timeout", "path": "/api/v3/klines", "times": 1, "seconds": 0.5},  # fires on the retry
    ]})
    client = exchange_client(url=emu.url, timeout=200)
    result = fetch_ohlcv("binance", "BTC/USDT", "1h", "2024-03-01", "2024-03-02",
                         store=BarStore(roots=[tmp_path]), progress=False, client=client, backoff=0.01)
    assert result.retries == 2 and result.bars_fetched == 24


def test_bad_input_is_a_configuration_error(emu: Emulator, tmp_path: Path) -> None:
    store = BarStore(roots=[tmp_path])
    with pytest.raises(ConfigurationError, match="symbol") as info:
        fetch_ohlcv("binance", "DOGE/USDT", "1m", "2024-03-01", "2024-03-02", url=emu.url, store=store,
                    progress=False)
    assert isinstance(info.value, UnknownSymbol) and info.value.field == "symbol" and info.value.exit_code == 2
    with pytest.raises(ConfigurationError, match="until"):
        fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-02", "2024-03-01", url=emu.url, store=store)
    with pytest.raises(ConfigurationError, match="exchange"):
        exchange_client("no-such-exchange")
    with pytest.raises(ConfigurationError, match="url"):
        exchange_client("kraken", url=emu.url)


def test_exchange_client_points_every_api_url_at_the_emulator(emu: Emulator) -> None:
    ex = exchange_client(url=emu.url)
    urls = [u for u in ex.urls["api"].values() if isinstance(u, str)]
    assert not any(u.startswith("https://api.binance.com") for u in urls)  # spot and sapi replaced
    assert ex.urls["api"]["public"] == emu.url + "/api/v3"
    assert ex.options["fetchMarkets"] == ["spot"] and ex.options["fetchCurrencies"] is False


def test_cli_fetch_json(emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    app.command()(fetch_command)
    result = CliRunner().invoke(app, ["--symbol", "BTC/USDT", "--timeframe", "15m", "--since", "2024-03-01",
                                      "--until", "2024-03-02", "--url", emu.url, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["bars_fetched"] == 96 and doc["timeframe"] == "15m" and doc["passed"] is True
    assert all(Path(f).is_file() for f in doc["files"])


def test_resume_fetches_a_hole_before_the_stored_bars(emu: Emulator, source: Path, tmp_path: Path) -> None:
    store = BarStore(roots=[tmp_path / "fetched"])
    first = fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-02", "2024-03-03", url=emu.url, store=store,
                        progress=False)
    assert first.bars_fetched == 1440
    # the stored bars start a day after since: 03-01 is a hole before the last stored bar
    result = fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-01", "2024-03-03", url=emu.url, store=store,
                         progress=False)
    assert result.resumed_from == "2024-03-01T00:00:00+00:00"  # the first missing bar, not after the last
    assert result.bars_fetched == 1440 and result.passed is True
    got = store.load("BTC/USDT", "1m", "2024-03-01", "2024-03-02")
    pd.testing.assert_frame_equal(got[COLS], _expected(source)[COLS])


def test_a_range_the_exchange_cannot_fill_is_a_data_error(emu: Emulator, tmp_path: Path) -> None:
    store = BarStore(roots=[tmp_path / "fetched"])
    # the emulator's data ends 2024-03-03 23:59: the day after cannot be covered
    with pytest.raises(DataError, match=r"covering 2024-03-03T00:00:00\+00:00 \.\. 2024-03-04T23:59"):
        fetch_ohlcv("binance", "BTC/USDT", "1m", "2024-03-03", "2024-03-05", url=emu.url, store=store,
                    progress=False)
    assert len(store.load("BTC/USDT", "1m", "2024-03-03", "2024-03-03")) == 1440  # what exists is kept


def test_the_client_is_closed_when_load_markets_fails(emu: Emulator, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[int] = []
    real_close = ccxt.binance.close

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        if sys._getframe(1).f_code.co_name != "__del__":  # explicit closes only, not ccxt's own __del__
            closed.append(id(self))  # never keep the object itself (close() also runs in __del__)
        return real_close(self, *args, **kwargs)

    monkeypatch.setattr(ccxt.binance, "close", spy)
    admin(emu.url, "POST", "/admin/faults", {"faults": [{"kind": "http_5xx", "path": "/api/v3/exchangeInfo"}]})
    try:
        fetch_ohlcv("binance", "BTC/USDT", "1h", "2024-03-01", "2024-03-02", url=emu.url,
                    store=BarStore(roots=[tmp_path]), progress=False, retries=0)
    except TemporaryError as exc:
        assert "load_markets" in str(exc)
        # closed by the fetcher itself, not left to ccxt's __del__
        assert len(closed) == 1
    else:
        raise AssertionError("load_markets did not fail")


def test_fetch_through_a_given_session_leaves_it_open(emu: Emulator, tmp_path: Path) -> None:
    sleeps: list[float] = []
    admin(emu.url, "POST", "/admin/faults", {"faults": [
        {"kind": "rate_limit", "path": "/api/v3/klines", "times": 1, "retry_after": 2}]})
    config = ExchangeConfig(url=emu.url, rate_limit=False, retry=RetryPolicy(initial_wait=0.01, jitter=0))
    with ExchangeSession(config, sleep=sleeps.append) as session:
        result = fetch_ohlcv("binance", "BTC/USDT", "1h", "2024-03-01", "2024-03-02",
                             store=BarStore(roots=[tmp_path]), progress=False, session=session)
        assert result.retries == 1 and result.bars_fetched == 24
        assert sleeps == [2.0]  # the server's Retry-After, through the session's injected sleep
        assert not session.closed and session.fetch_time() > 0  # still usable
    assert session.closed


def _toolkit(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed ``toolkit`` entry point (the process exit status is what a scheduler sees)."""
    exe = Path(sys.executable).with_name("toolkit")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_cli_exit_codes_bad_symbol_and_exhausted_retries(emu: Emulator) -> None:
    common = ["data", "fetch", "--timeframe", "15m", "--since", "2024-03-01", "--until", "2024-03-02", "--url",
              emu.url]
    bad = _toolkit(*common, "--symbol", "DOGE/USDT")
    assert bad.returncode == 2, bad.stderr
    assert "symbol: expected a symbol listed by the exchange" in bad.stderr and "DOGE/USDT" in bad.stderr
    admin(emu.url, "POST", "/admin/faults", {"faults": [{"kind": "http_5xx", "path": "/api/v3/klines"}]})
    down = _toolkit(*common, "--symbol", "BTC/USDT", "--retries", "1")
    assert down.returncode == 75, down.stderr
    assert "after 2 attempts" in down.stderr and "ExchangeNotAvailable" in down.stderr
    assert admin(emu.url, "GET", "/admin/faults")["counts"] == {"http_5xx": 2}
