"""Binance's rate limits: request weight per minute, orders per 10 s, 429 then 418 bans, and what ccxt raises.

The limiter's windows run on the wall clock handed to the emulator; most tests give it a ManualClock and step
it instead of sleeping.
"""

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

from toolkit.clock import ManualClock
from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET, Emulator
from toolkit.exchange import exchange_client

MINUTE = 60_000


def _get(emu: Emulator, path: str) -> tuple[int, dict[str, str], Any]:
    try:
        with urllib.request.urlopen(emu.url + path, timeout=60) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.fixture
def wall() -> ManualClock:
    return ManualClock("2026-11-30T12:00:00Z")


@pytest.fixture
def limited(make_emulator: Any, wall: ManualClock) -> Emulator:
    return make_emulator(wall_clock=wall)


def _client(emu: Emulator, **kw: Any) -> Any:
    return exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                           **{"enableRateLimit": False, **kw})


def test_exchange_info_announces_the_limits_it_enforces(limited: Emulator) -> None:
    _, _, info = _get(limited, "/api/v3/exchangeInfo")
    assert info["rateLimits"] == [  # as in the newest bundled Binance snapshot (2025-08-23)
        {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
        {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
    ]


def test_every_answer_carries_the_weight_used_this_minute(limited: Emulator, wall: ManualClock) -> None:
    expected = 20  # the exchangeInfo above
    _get(limited, "/api/v3/exchangeInfo")
    depth = "/api/v3/depth?symbol=BTCUSDT"
    for path, weight in [("/api/v3/klines?symbol=BTCUSDT&interval=1m", 2), (depth, 5), (f"{depth}&limit=500", 25),
                         (f"{depth}&limit=5000", 250),
                         ("/api/v3/ticker/24hr", 80), ("/api/v3/ticker/24hr?symbol=BTCUSDT", 2),
                         ("/api/v3/ticker/price", 4), ("/api/v3/aggTrades?symbol=BTCUSDT", 4),
                         ("/api/v3/klines?symbol=NOPE&interval=1m", 2)]:  # an error answer counts and carries it too
        expected += weight
        _, headers, _ = _get(limited, path)
        assert headers["X-MBX-USED-WEIGHT-1M"] == str(expected), path
    ex = _client(limited)
    ex.load_markets()  # exchangeInfo: 20
    ex.fetch_balance()  # account: 20
    ex.fetch_open_orders("BTC/USDT")  # 6 with a symbol
    ex.fetch_my_trades("BTC/USDT")  # 20
    assert ex.last_response_headers["X-MBX-USED-WEIGHT-1M"] == str(expected + 66)
    wall.advance(MINUTE)
    _, headers, _ = _get(limited, "/api/v3/ping")
    assert headers["X-MBX-USED-WEIGHT-1M"] == "1"  # a new minute


def test_too_much_weight_is_429_then_a_growing_ban(limited: Emulator, wall: ManualClock) -> None:
    ex = _client(limited)
    ex.load_markets()
    wall.advance(MINUTE)
    for _ in range(24):  # 24 x 250 = 6000: exactly the limit
        ex.fetch_order_book("BTC/USDT", 5000)
    wall.advance(15_000)
    with pytest.raises(ccxt.DDoSProtection, match="-1003"):
        ex.fetch_order_book("BTC/USDT", 5000)
    status, headers, body = _get(limited, "/api/v3/ping")
    assert (status, body["code"]) == (429, -1003) and headers["Retry-After"] == "45"  # to the end of the minute
    assert "6000 request weight per 1 MINUTE" in body["msg"]
    for _ in range(2):  # a client that keeps going after its 429s ...
        _get(limited, "/api/v3/ping")
    status, headers, body = _get(limited, "/api/v3/time")  # ... is banned
    assert (status, body["code"], headers["Retry-After"]) == (418, -1003, "120") and "banned until" in body["msg"]
    with pytest.raises(ccxt.DDoSProtection, match="banned"):
        ex.fetch_time()
    wall.advance(MINUTE)  # a new weight window, but the ban lasts 2 minutes
    assert _get(limited, "/api/v3/ping")[0] == 418
    wall.advance(MINUTE)
    assert ex.fetch_time() == limited.clock.now_ms()  # the ban is over
    for _ in range(28):  # offend again: the second ban is twice as long
        _get(limited, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
    status, headers, _ = _get(limited, "/api/v3/ping")
    assert (status, headers["Retry-After"]) == (418, "240")


def test_orders_over_the_10_second_limit_are_1015(limited: Emulator, wall: ManualClock) -> None:
    ex = _client(limited)
    last = ex.fetch_ticker("BTC/USDT")["last"]
    for i in range(50):  # resting orders: each counts
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 0.9, 2) - i)
        headers = ex.last_response_headers
        assert (headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1D"]) == (str(i + 1), str(i + 1))
    with pytest.raises(ccxt.DDoSProtection, match="-1015") as info:
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 0.9, 2))
    assert "Too many new orders; current limit is 50 orders per 10 SECOND" in str(info.value)
    assert "Retry-After" not in ex.last_response_headers  # Binance sends no Retry-After for order limits
    assert len(ex.fetch_open_orders("BTC/USDT")) == 50  # the refused order does not exist
    wall.advance(10_000)
    market = ex.create_order("BTC/USDT", "market", "buy", 0.001)  # a new 10 s window
    assert ex.last_response_headers["X-MBX-ORDER-COUNT-10S"] == "1"  # counted at placement ...
    assert market["status"] == "closed"
    ex.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 0.9, 2))
    assert ex.last_response_headers["X-MBX-ORDER-COUNT-10S"] == "1"  # ... and taken off once it filled
    assert ex.last_response_headers["X-MBX-ORDER-COUNT-1D"] == "51"


def test_rate_limits_can_be_switched_off(make_emulator: Any, wall: ManualClock) -> None:
    emu = make_emulator(wall_clock=wall, rate_limits=False)
    for _ in range(30):
        status, headers, _ = _get(emu, "/api/v3/depth?symbol=BTCUSDT&limit=5000")
        assert status == 200 and "X-MBX-USED-WEIGHT-1M" not in headers
    ex = _client(emu)
    last = ex.fetch_ticker("BTC/USDT")["last"]
    for i in range(60):
        ex.create_order("BTC/USDT", "limit", "buy", 0.001, round(last * 0.9, 2) - i)
        assert "X-MBX-ORDER-COUNT-10S" not in ex.last_response_headers
    assert len(ex.fetch_open_orders("BTC/USDT")) == 60


class _Fast:
    """The wall clock running ``factor`` times faster (a minute of rate-limit windows in 60/factor seconds)."""

    def __init__(self) -> None:
        self.factor, self.t0, self.skipped = 1.0, time.time(), 0.0

    def now_ms(self) -> int:
        return int((self.t0 + (time.time() - self.t0) * self.factor + self.skipped) * 1000)

    def now(self) -> Any:
        raise NotImplementedError


async def _bot(emu: Emulator, rate_limit_ms: float | None, seconds: float) -> tuple[int, int, str]:
    """Poll balance (20), open orders (6), klines (2) and a ticker (2) for ``seconds``; return the peak used
    weight, the loops run and how it ended. ``rate_limit_ms`` None runs without ccxt's limiter."""
    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         async_=True, enableRateLimit=rate_limit_ms is not None, rateLimit=rate_limit_ms or 50,
                         timeout=60_000)
    peak, loops = 0, 0
    try:
        await ex.load_markets()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await ex.fetch_balance()
            await ex.fetch_open_orders("BTC/USDT")
            await ex.fetch_ohlcv("BTC/USDT", "1m", limit=5)
            await ex.fetch_ticker("BTC/USDT")
            peak = max(peak, int(ex.last_response_headers.get("X-MBX-USED-WEIGHT-1M", 0)))
            loops += 1
    except ccxt.DDoSProtection as exc:
        return peak, loops, str(exc)
    finally:
        await ex.close()
    return peak, loops, "ok"


def test_ccxt_own_limiter_keeps_a_polling_bot_under_the_weight_limit(make_emulator: Any, tmp_path: Path) -> None:
    # how fast can this machine run the bot? (30 weight a loop); speed the limiter's clock up so that, unpaced,
    # the bot would use twice the limit in a limiter minute -- whatever the load on the machine
    probe = make_emulator(rate_limits=False, state_path=tmp_path / "probe.sqlite")
    _, loops, _ = asyncio.run(_bot(probe, None, 1.0))
    factor = min(20.0, max(1.0, loops * 30 * 60 / (2 * 6000)))
    fast = _Fast()
    emu = make_emulator(wall_clock=fast, state_path=tmp_path / "paced.sqlite")
    fast.t0, fast.factor = time.time(), factor
    peak, _, outcome = asyncio.run(_bot(emu, 50 / factor, 120 / factor))  # two limiter minutes, ccxt pacing
    # paced by ccxt's limiter: never a 429, never over 6000. The bot really pushes (unpaced it would use about
    # 12000; paced on a quiet machine it uses more than half the limit): at least 10 % of it even when other
    # processes starve it of CPU, which is why the bound is no tighter
    assert outcome == "ok" and 600 <= peak <= 6000, (factor, peak)
    fast.skipped += 60.0  # a fresh limiter minute
    _, _, outcome = asyncio.run(_bot(emu, None, 120 / factor))  # the same bot without ccxt's limiter ...
    assert "-1003" in outcome, factor  # ... runs into Binance's 429
