"""Public market data through real ccxt (sync and async) over loopback HTTP: klines (the forming one
included), week and month klines, tickers, the book and synthesised aggregate trades."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pandas as pd
import pytest

from toolkit.data.resample import resample_ohlcv
from toolkit.data.store import BarStore
from toolkit.emulator import Emulator
from toolkit.emulator.filters import load_rules
from toolkit.emulator.testing import admin, make_store, step_clock
from toolkit.exchange import exchange_client

T0 = int(pd.Timestamp("2024-03-01", tz="UTC").value // 1_000_000)
COLS = ["open", "high", "low", "close", "volume"]


def _ms(ts: Any) -> int:
    return int(pd.Timestamp(ts).value // 1_000_000)


def _minutes(store: Path, start: str, end: str) -> pd.DataFrame:
    return BarStore(roots=[store]).load("BTC/USDT", "1m", start, end)


def test_load_markets_calls_only_exchange_info(emu: Emulator) -> None:
    admin(emu.url, "DELETE", "/admin/requests")
    ex = exchange_client(url=emu.url, enableRateLimit=False)
    markets = ex.load_markets()
    assert set(markets) == {"BTC/USDT"} and markets["BTC/USDT"]["active"]  # status TRADING while there is data
    calls = admin(emu.url, "GET", "/admin/requests")
    assert [(c["method"], c["path"]) for c in calls] == [("GET", "/api/v3/exchangeInfo")]


def test_markets_carry_the_real_filters(client: Any) -> None:
    btc = client.market("BTC/USDT")
    real = load_rules(["BTC/USDT"])["BTCUSDT"]
    assert btc["spot"] and btc["id"] == "BTCUSDT"
    assert Decimal(str(btc["precision"]["amount"])) == real.step == Decimal("0.00001")
    assert Decimal(str(btc["precision"]["price"])) == real.tick == Decimal("0.01")
    assert btc["limits"]["cost"]["min"] == float(real.min_notional) == 5.0
    assert client.amount_to_precision("BTC/USDT", 0.0123456789) == "0.01234"
    assert client.price_to_precision("BTC/USDT", 61234.5678) == "61234.57"  # rounded, not truncated


def test_fetch_ohlcv_pages_equal_the_store_then_the_forming_bar(client: Any, small_store: Path) -> None:
    rows: list[list[float]] = []
    cursor = _ms("2024-02-28T00:00Z")
    while True:
        page = client.fetch_ohlcv("BTC/USDT", "1m", since=cursor, limit=1000)
        if not page:
            break
        rows += page
        cursor = page[-1][0] + 60_000
    stored = _minutes(small_store, "2024-02-28", "2024-02-29")
    assert len(rows) == len(stored) + 1 == 2 * 1440 + 1  # every closed bar, then the one forming at 00:00
    got = pd.DataFrame(rows[:-1], columns=["t", *COLS])
    assert (got["t"].diff().dropna() == 60_000).all()
    for col in COLS:
        assert got[col].tolist() == stored[col].tolist()
    forming = rows[-1]
    nxt = _minutes(small_store, "2024-03-01T00:00", "2024-03-01T00:00").iloc[0]
    assert forming == [T0, nxt["open"], nxt["open"], nxt["open"], nxt["open"], 0.0]


def test_the_forming_bar_shows_only_its_open_until_its_minute_closes(emu: Emulator, client: Any,
                                                                    small_store: Path) -> None:
    step_clock(emu.url, 3)  # 00:03: the bar 00:03 is forming
    final = _minutes(small_store, "2024-03-01T00:03", "2024-03-01T00:03").iloc[0]
    # a bar whose close, high and low all differ from its open: a leak would show
    assert final["close"] != final["open"] and final["high"] > final["open"] > final["low"]
    for offset_ms in (0, 30_000, 59_999):
        admin(emu.url, "POST", "/admin/clock", {"to": pd.Timestamp(T0 + 3 * 60_000 + offset_ms, unit="ms",
                                                                    tz="UTC").isoformat()})
        raw = client.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "limit": 2})
        last = raw[-1]
        assert int(last[0]) == T0 + 3 * 60_000 <= client.fetch_time() <= int(last[6]) == T0 + 4 * 60_000 - 1
        assert [float(x) for x in last[1:6]] == [final["open"]] * 4 + [0.0]
        assert float(raw[-2][4]) == _minutes(small_store, "2024-03-01T00:02", "2024-03-01T00:02").iloc[0]["close"]
        assert client.fetch_ticker("BTC/USDT")["last"] == final["open"]  # the ticker follows the same model
    admin(emu.url, "POST", "/admin/clock", {"advance_ms": 1})  # 00:04:00.000: the minute closed
    closed = client.fetch_ohlcv("BTC/USDT", "1m", limit=2)[0]
    assert closed == [T0 + 3 * 60_000, *[final[c] for c in COLS]]


def test_a_bot_that_keeps_the_forming_bar_is_caught(emu: Emulator, client: Any, small_store: Path) -> None:
    admin(emu.url, "POST", "/admin/clock", {"to": "2024-03-01T00:10:30Z"})
    bars = client.fetch_ohlcv("BTC/USDT", "1m", limit=20)
    careless = sum(b[4] for b in bars[-5:]) / 5  # a 5-bar mean that forgot to drop the forming bar
    careful = sum(b[4] for b in bars[-6:-1]) / 5
    closes = _minutes(small_store, "2024-03-01T00:05", "2024-03-01T00:10")["close"].tolist()
    assert careful == pytest.approx(sum(closes[:5]) / 5)  # the closed bars 00:05..00:09
    assert careless != pytest.approx(careful) and careless != pytest.approx(sum(closes[1:]) / 5)


def test_coarser_forming_klines_aggregate_closed_minutes_and_the_forming_open(emu: Emulator, client: Any,
                                                                            small_store: Path) -> None:
    admin(emu.url, "POST", "/admin/clock", {"to": "2024-03-01T05:37:20Z"})
    now = client.fetch_time()
    minutes = _minutes(small_store, "2024-02-28", "2024-03-01T05:37")
    closed, opening = minutes.iloc[:-1], minutes.iloc[-1]["open"]  # 05:37 is forming: only its open is known
    for timeframe, bucket in (("5m", "2024-03-01T05:35Z"), ("1h", "2024-03-01T05:00Z"), ("4h", "2024-03-01T04:00Z"),
                              ("1d", "2024-03-01T00:00Z")):
        row = client.fetch_ohlcv("BTC/USDT", timeframe, limit=3)[-1]
        part = closed[closed.index >= pd.Timestamp(bucket)]
        expected = [_ms(bucket), part["open"].iloc[0] if len(part) else opening,
                    max([*part["high"], opening]), min([*part["low"], opening]), opening, part["volume"].sum()]
        assert row[:5] == expected[:5], timeframe
        assert row[5] == pytest.approx(expected[5], rel=1e-9), timeframe
        raw = client.publicGetKlines({"symbol": "BTCUSDT", "interval": timeframe, "limit": 1})[0]
        assert int(raw[6]) > now  # the close time lies in the future


def test_hourly_klines_equal_resampled_minutes(client: Any, small_store: Path) -> None:
    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=_ms("2024-02-28T00:00Z"), limit=100)
    assert len(rows) == 48 + 1  # two closed days and the hour forming at 2024-03-01 00:00
    expected = resample_ohlcv(_minutes(small_store, "2024-02-28", "2024-02-29"), "1h")
    got = pd.DataFrame(rows[:-1], columns=["t", *COLS])
    assert got["t"].tolist() == [_ms(t) for t in expected.index]
    for col in ("open", "high", "low", "close"):
        assert got[col].tolist() == expected[col].tolist()
    assert got["volume"].to_numpy() == pytest.approx(expected["volume"].to_numpy(), rel=1e-9)
    assert rows[-1][0] == T0 and rows[-1][5] == 0


@pytest.fixture(scope="module")
def two_months(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real BTC/USDT 1m bars of January and February 2024."""
    return make_store(tmp_path_factory.mktemp("months"), {"BTC/USDT": ("2024-01-01", "2024-02-29")})


def test_week_and_month_klines_follow_binance_alignment(make_emulator: Any, two_months: Path) -> None:
    emu = make_emulator(store_roots=(two_months,), start="2024-03-01")  # the close of the data's last bar
    ex = exchange_client(url=emu.url, enableRateLimit=False)
    minutes = _minutes(two_months, "2024-01-01", "2024-02-29")
    weeks = ex.fetch_ohlcv("BTC/USDT", "1w", since=_ms("2024-01-01T00:00Z"), limit=20)
    assert all(pd.Timestamp(r[0], unit="ms").day_name() == "Monday" for r in weeks)  # weeks open on Mondays
    expected = minutes.resample("W-MON", label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    assert [r[0] for r in weeks] == [_ms(t) for t in expected.index] and len(weeks) == 9
    for i, col in enumerate(COLS, start=1):
        assert [r[i] for r in weeks] == pytest.approx(expected[col].tolist(), rel=1e-12)
    months = ex.fetch_ohlcv("BTC/USDT", "1M", limit=10)
    assert [r[0] for r in months] == [_ms("2024-01-01T00:00Z"), _ms("2024-02-01T00:00Z")]
    raw = ex.publicGetKlines({"symbol": "BTCUSDT", "interval": "1M", "limit": 10})
    assert int(raw[1][6]) == _ms("2024-03-01T00:00Z") - 1  # February closes on its 29th, 23:59:59.999
    by_month = minutes.resample("MS").agg({"open": "first", "high": "max", "low": "min", "close": "last"})
    assert [r[1:5] for r in months] == by_month.to_numpy().tolist()
    three_days = ex.fetch_ohlcv("BTC/USDT", "3d", since=_ms("2024-01-01T00:00Z"), limit=3)
    assert all(r[0] % (3 * 86_400_000) == 0 for r in three_days)  # 3d klines are aligned to the epoch


def test_ticker_book_and_time(emu: Emulator, client: Any) -> None:
    ticker = client.fetch_ticker("BTC/USDT")
    book = client.fetch_order_book("BTC/USDT", 5)
    forming = client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0]
    assert ticker["last"] == forming[4] == forming[1]  # the last price is the forming minute's open
    assert book["bids"][0][0] < ticker["last"] < book["asks"][0][0]
    assert (ticker["bid"], ticker["ask"]) == (book["bids"][0][0], book["asks"][0][0])
    assert len(book["bids"]) == len(book["asks"]) == 5
    assert [a[0] for a in book["asks"]] == sorted(a[0] for a in book["asks"])  # worse prices further out
    assert client.fetch_time() == emu.clock.now_ms() == T0  # server time is replay time


def _get(url: str) -> tuple[int, Any, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def test_fetch_tickers_honours_its_symbols(emu: Emulator, client: Any) -> None:
    tickers = client.fetch_tickers(["BTC/USDT"])
    assert list(tickers) == ["BTC/USDT"]
    status, body, headers = _get(emu.url + '/api/v3/ticker/24hr?symbols=["BTCUSDT"]')
    assert status == 200 and [t["symbol"] for t in body] == ["BTCUSDT"]
    assert headers["X-MBX-USED-WEIGHT-1M"] == str(20 + 2 + 2)  # exchangeInfo, then twice 1-20 symbols (80: all)
    status, body, _ = _get(emu.url + '/api/v3/ticker/24hr?symbols=["BTCUSDT","DOGEUSDT"]')
    assert (status, body["code"]) == (400, -1121)  # Binance refuses an unknown symbol in the list
    with pytest.raises(ccxt.BadSymbol):
        client.fetch_tickers(["DOGE/USDT"])


def test_tickers_skip_a_symbol_whose_data_has_ended(make_emulator: Any, small_store: Path) -> None:
    emu = make_emulator(start="2024-03-03T23:00:00Z")  # an hour before the data's end
    ex = exchange_client(url=emu.url, enableRateLimit=False)
    assert list(ex.fetch_tickers()) == ["BTC/USDT"]
    admin(emu.url, "POST", "/admin/clock", {"to": "2024-03-05T00:00:00Z"})  # more than a day after the last bar
    assert ex.fetch_tickers() == {}  # a list skips a symbol without data
    with pytest.raises(ccxt.MarketClosed):
        ex.fetch_ticker("BTC/USDT")  # a single symbol is "Market is closed."
    assert not ex.load_markets(reload=True)["BTC/USDT"]["active"]  # exchangeInfo: status BREAK


def test_agg_trades_are_synthesised_from_closed_bars(client: Any, small_store: Path) -> None:
    since = _ms("2024-02-29T23:50Z")
    trades = client.fetch_trades("BTC/USDT", since=since)
    bars = _minutes(small_store, "2024-02-29T23:50", "2024-02-29T23:59")
    assert len(trades) == 4 * len(bars) == 40  # open, the two extremes and the close of each closed minute
    ids, times = [int(t["id"]) for t in trades], [t["timestamp"] for t in trades]
    assert ids == sorted(set(ids)) and times == sorted(set(times))  # strictly increasing
    for k, (ts, bar) in enumerate(bars.iterrows()):
        quad = trades[4 * k:4 * k + 4]
        assert quad[0]["timestamp"] == _ms(ts) and quad[-1]["timestamp"] == _ms(ts) + 59_999
        assert quad[0]["price"] == bar["open"] and quad[-1]["price"] == bar["close"]
        assert {quad[1]["price"], quad[2]["price"]} == {bar["high"], bar["low"]}
        assert sum(t["amount"] for t in quad) == pytest.approx(bar["volume"], rel=1e-9)
    assert all(t["timestamp"] < T0 for t in client.fetch_trades("BTC/USDT"))  # nothing of the forming minute


def test_agg_trades_page_by_id_and_by_time_without_gaps_or_repeats(client: Any) -> None:
    since = _ms("2024-02-29T20:00Z")
    first = client.fetch_trades("BTC/USDT", since=since, limit=1000)  # ccxt sends startTime and endTime = +1h
    assert len(first) == 241 and first[-1]["timestamp"] == since + 3_600_000  # endTime is inclusive
    by_id: list[Any] = []
    cursor = int(first[0]["id"])
    while len(by_id) < 700:
        page = client.fetch_trades("BTC/USDT", limit=97, params={"fromId": cursor})
        by_id += page
        cursor = int(page[-1]["id"]) + 1
    by_time: list[Any] = []
    start = since
    while len(by_time) < 700:
        page = client.publicGetAggTrades({"symbol": "BTCUSDT", "startTime": start, "limit": 97})
        by_time += page
        start = int(page[-1]["T"]) + 1
    assert [int(t["id"]) for t in by_id[:700]] == [int(t["a"]) for t in by_time[:700]]
    ids = [int(t["id"]) for t in by_id]
    assert ids == sorted(set(ids)) and ids[:241] == [int(t["id"]) for t in first]


def test_bad_interval_and_unknown_symbol(client: Any) -> None:
    with pytest.raises(ccxt.BadRequest):
        client.publicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})
    with pytest.raises(ccxt.BadSymbol):
        client.publicGetKlines({"symbol": "DOGEUSDT", "interval": "1m"})


def test_async_client_markets_and_klines_of_eth(make_emulator: Any, small_store: Path) -> None:
    emu = make_emulator(symbols=("ETH/USDT",), start="2024-08-02T00:00:00Z", state_path=None)
    t_eth = _ms("2024-08-02T00:00Z")

    async def run() -> tuple[int, list[list[float]]]:
        ex = exchange_client(url=emu.url, async_=True, enableRateLimit=False)
        try:
            markets = await ex.load_markets()
            return len(markets), await ex.fetch_ohlcv("ETH/USDT", "5m", since=t_eth - 3_600_000, limit=13)
        finally:
            await ex.close()

    n, eth = asyncio.run(run())
    assert n == 1
    one_min = BarStore(roots=[small_store]).load("ETH/USDT", "1m", "2024-08-01T23:00", "2024-08-01T23:59")
    expected = resample_ohlcv(one_min, "5m")
    assert len(eth) == 13 and [r[0] for r in eth[:12]] == [_ms(t) for t in expected.index]
    got = pd.DataFrame([r[1:6] for r in eth[:12]], columns=COLS)
    pd.testing.assert_frame_equal(got, expected[COLS].reset_index(drop=True), check_exact=False, rtol=1e-9)
    assert eth[-1][0] == t_eth and eth[-1][5] == 0  # the forming 5m kline
