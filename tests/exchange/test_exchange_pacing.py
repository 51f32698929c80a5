"""The client-side pacer: a burst goes at once, the average stays ccxt's, the exchange's weight header is obeyed.

Real sync ccxt binance clients over HTTP to the emulator (its ``X-MBX-USED-WEIGHT-1M`` is the real
count of the requests it served); the pacer's sleep and wall clock are injected, so the waits it asks
for are recorded instead of slept.
"""

from __future__ import annotations

from typing import Any

import pytest

from toolkit.emulator import Emulator
from toolkit.exchange import exchange_client
from toolkit.exchange.pacing import Pacer, install_pacer


class Wall:
    """A local wall clock in ms that moves only when slept on (or told to)."""

    def __init__(self, ms: float) -> None:
        self.ms = ms
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.ms

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.ms += seconds * 1000.0


def _paced(emu: Emulator, wall: Wall, **kwargs: Any) -> tuple[Any, Pacer]:
    client = exchange_client(url=emu.url, clock=emu.clock, timeout=60_000)
    assert isinstance(client.throttle, Pacer), "a sync client with enableRateLimit is paced by the Pacer"
    pacer = install_pacer(client, sleep=wall.sleep, wall_ms=wall, **kwargs)
    client.milliseconds = lambda: int(wall())  # ccxt stamps lastRestRequestTimestamp with this
    return client, pacer


def test_a_burst_goes_at_once_then_the_average_is_ccxts(emu: Emulator) -> None:
    wall = Wall(1_709_251_200_000.0 + 5_000)  # 5 s into a minute
    client, pacer = _paced(emu, wall, burst=1)
    costs: list[float] = []
    paced = client.throttle
    client.throttle = lambda cost=None: (costs.append(cost), paced(cost))[1]
    for _ in range(5):
        client.fetch_time()  # ccxt's cost of GET /api/v3/time is 0.2 (weight 1 of 6000 a minute, 50 ms a unit)
    assert costs == [pytest.approx(0.2)] * 5
    assert wall.sleeps == []  # five requests in a burst of one unit: no wait
    for _ in range(4):
        client.fetch_time()
    # the bucket is empty: 0.2 × rateLimit (50 ms) each, ccxt's own average
    assert wall.sleeps == [pytest.approx(0.2 * client.rateLimit / 1000.0)] * 4
    wall.ms += 10 * client.rateLimit  # a quiet spell refills the bucket, up to the burst only
    for _ in range(5):
        client.fetch_time()
    assert len(wall.sleeps) == 4
    client.fetch_time()
    assert len(wall.sleeps) == 5 and pacer.weight_waits == 0


def test_ccxts_own_pacing_would_have_waited_between_each_request(emu: Emulator) -> None:
    """The fixed spacing the pacer replaces: a request right after another sleeps rateLimit × cost."""
    import ccxt

    client = ccxt.binance({"enableRateLimit": True})
    client.lastRestRequestTimestamp = client.milliseconds()
    slept: list[float] = []
    import time as _time

    original = _time.sleep
    try:
        _time.sleep = slept.append  # type: ignore[assignment]
        ccxt.Exchange.throttle(client, 1)
    finally:
        _time.sleep = original  # type: ignore[assignment]
    assert len(slept) == 1 and slept[0] == pytest.approx(client.rateLimit / 1000.0, abs=0.02)


def test_the_exchanges_used_weight_near_its_limit_waits_for_the_next_minute(emu: Emulator) -> None:
    minute = 1_709_251_200_000.0
    wall = Wall(minute + 42_000)  # 42 s into the minute
    client, pacer = _paced(emu, wall, burst=1000)
    client.load_markets()  # exchangeInfo: weight 20 (the emulator counts per minute of its own wall clock)
    base = int(client.last_response_headers["X-MBX-USED-WEIGHT-1M"])
    pacer.weight_limit, pacer.headroom = base + 10, 1.0  # the emulator allows 6000; the pacer is told 10 more
    used = []
    while not wall.sleeps:
        client.fetch_ticker("BTC/USDT")  # weight 2
        used.append(int(client.last_response_headers["X-MBX-USED-WEIGHT-1M"]))
        assert len(used) < 50, "the pacer never waited"
    # the request after the first answer at the limit waited, then went (the loop read its answer)
    assert len(used) >= 2 and used[-2] >= base + 10 and all(u < base + 10 for u in used[:-2]), (base, used)
    assert pacer.weight_waits == 1
    assert wall.sleeps == [pytest.approx(18.25)]  # to the minute's end, plus the margin


def test_a_header_of_a_past_minute_or_none_is_not_obeyed(emu: Emulator) -> None:
    wall = Wall(1_709_251_200_000.0 + 59_900)
    client, pacer = _paced(emu, wall, burst=1000, weight_limit=1)
    client.fetch_time()  # the answer says weight >= 1 used in this minute
    assert pacer.used_weight() is not None and pacer.used_weight() >= 1
    wall.ms += 200  # the minute is over
    assert pacer.used_weight() is None
    client.fetch_time()
    assert pacer.weight_waits == 0
    client.last_response_headers = {}
    assert pacer.used_weight() is None


def test_bad_pacer_settings_name_the_field(emu: Emulator) -> None:
    client = exchange_client(url=emu.url, enableRateLimit=False)
    assert not isinstance(client.throttle, Pacer)  # rate limiting off: ccxt's throttle is never called
    with pytest.raises(ValueError, match="burst: expected at least 1 cost unit, found 0"):
        Pacer(client, burst=0)
    with pytest.raises(ValueError, match=r"headroom: expected a share in \(0, 1\], found 1.5"):
        Pacer(client, headroom=1.5)


def test_an_order_reuses_the_exchange_time_read_less_than_max_age_ago(emu: Emulator, connect: Any) -> None:
    """The runner's clock: read every cycle; before an order only when the last read is older than max age."""
    from runner.engine import ExchangeClock

    session = connect()
    reads: list[int] = []
    fetch_time = session.fetch_time
    session.fetch_time = lambda: reads.append(1) or fetch_time()  # type: ignore[method-assign]  # count real reads
    mono = [100.0]
    clock = ExchangeClock(monotonic=lambda: mono[0])
    assert clock.recent(session, 1000) == emu.clock.now_ms() and len(reads) == 1  # never read: read now
    mono[0] += 0.5
    assert clock.recent(session, 1000) == emu.clock.now_ms() and len(reads) == 1  # 500 ms old: reused
    mono[0] += 0.6
    clock.recent(session, 1000)
    assert len(reads) == 2  # 1.1 s old: read again
    clock.recent(session, 0)
    assert len(reads) == 3  # max age 0: read before every order
