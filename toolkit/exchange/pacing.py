"""Client-side pacing of a sync ccxt client: bursts allowed, the average kept, the exchange's own count obeyed.

ccxt's sync ``throttle`` spaces every request ``rateLimit × cost`` ms after the previous one (50 ms for
Binance, whatever the weight left). A runner's decision is three requests in a row (the last price,
the order, its answer read back by reconciliation), so a fixed spacing adds ~100 ms between a closed
bar and its order, while the account uses a small fraction of its limits. :class:`Pacer` replaces it on
the client object:

* a **token bucket** in ccxt's cost units: up to ``burst`` units go at once, and it refills at one unit
  per ``rateLimit`` ms, so over any stretch longer than a burst the average request rate is never
  above ccxt's own;
* the **exchange's count**: Binance answers every request with ``X-MBX-USED-WEIGHT-1M`` (the request
  weight used by this IP in the current minute, against the ``REQUEST_WEIGHT`` limit of
  ``exchangeInfo``, 6000 a minute for spot). When the last answer of the current minute says the
  weight is within ``headroom`` of the limit, the next request waits for the minute to roll over
  rather than earn a 429 (whose ``Retry-After`` the retrier obeys anyway).

Windows are read on the local wall clock, as ccxt stamps its requests; the exchange's fixed minute
windows differ from it by the clock offset, which the margin below covers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["BINANCE_SPOT_WEIGHT_PER_MINUTE", "Pacer", "install_pacer"]

#: Binance spot's ``REQUEST_WEIGHT`` limit per minute and IP (``GET /api/v3/exchangeInfo`` ``rateLimits``).
BINANCE_SPOT_WEIGHT_PER_MINUTE = 6000
_WEIGHT_HEADER = "x-mbx-used-weight-1m"
_MINUTE_MS = 60_000
_MARGIN_MS = 250  # past the minute boundary before sending again (clock offset, the server's window edge)


class Pacer:
    """A ccxt client's ``throttle``: a token bucket of ``burst`` cost units plus the used-weight header.

    Parameters
    ----------
    client
        The sync ccxt client (its ``rateLimit`` sets the refill, its ``last_response_headers`` and
        ``lastRestRequestTimestamp`` the weight check).
    burst
        Cost units that may go at once after a quiet spell (ccxt's own pacing is a burst of one). The
        default, 60, is 5 % of what Binance allows in a minute (ccxt's binance: 50 ms a unit, 1,200 units
        = 6,000 weight a minute); a window of a minute never holds more than its limit plus the burst, and
        the header check keeps it under the limit.
    weight_limit
        The exchange's request weight per minute; ``None``: the header is not read.
    headroom
        Share of ``weight_limit`` at which the next request waits for the next minute.
    sleep, wall_ms
        Injected in tests (seconds to sleep; local wall clock in ms, ccxt's ``milliseconds``).
    """

    def __init__(self, client: Any, burst: float = 60.0, weight_limit: int | None = BINANCE_SPOT_WEIGHT_PER_MINUTE,
                 headroom: float = 0.9, sleep: Callable[[float], None] = time.sleep,
                 wall_ms: Callable[[], float] | None = None) -> None:
        if not burst >= 1.0:
            raise ValueError(f"burst: expected at least 1 cost unit, found {burst!r}")
        if not 0.0 < headroom <= 1.0:
            raise ValueError(f"headroom: expected a share in (0, 1], found {headroom!r}")
        self.client = client
        self.burst = float(burst)
        self.weight_limit = weight_limit
        self.headroom = headroom
        self._sleep = sleep
        self._wall_ms = wall_ms or (lambda: time.time() * 1000.0)
        self.tokens = self.burst
        self._at = self._wall_ms()
        self.waited_s = 0.0  # total time this pacer made requests wait
        self.weight_waits = 0  # waits for a new minute (the exchange's count near its limit)

    def __call__(self, cost: float | None = None) -> None:
        cost = 1.0 if cost is None else float(cost)
        self._obey_weight()
        now = self._wall_ms()
        interval = float(getattr(self.client, "rateLimit", 0) or 0)
        if interval <= 0:
            return
        self.tokens = min(self.burst, self.tokens + (now - self._at) / interval)
        self._at = now
        if self.tokens >= cost:
            self.tokens -= cost
            return
        wait_ms = (cost - self.tokens) * interval
        self._wait(wait_ms / 1000.0)
        self.tokens = 0.0
        self._at = self._wall_ms()

    def used_weight(self) -> int | None:
        """Return the weight the exchange said was used in the current minute, or None (unknown or a past minute)."""
        headers = getattr(self.client, "last_response_headers", None) or {}
        raw = next((v for k, v in headers.items() if str(k).lower() == _WEIGHT_HEADER), None)
        last = float(getattr(self.client, "lastRestRequestTimestamp", 0) or 0)
        if raw is None or not str(raw).isdigit() or not last:
            return None
        if math.floor(last / _MINUTE_MS) != math.floor(self._wall_ms() / _MINUTE_MS):
            return None  # the answer counted a minute that is over
        return int(raw)

    def _obey_weight(self) -> None:
        if self.weight_limit is None:
            return
        used = self.used_weight()
        if used is None or used < self.headroom * self.weight_limit:
            return
        now = self._wall_ms()
        self.weight_waits += 1
        self._wait((_MINUTE_MS - now % _MINUTE_MS + _MARGIN_MS) / 1000.0)

    def _wait(self, seconds: float) -> None:
        self.waited_s += seconds
        self._sleep(seconds)


def install_pacer(client: Any, **kwargs: Any) -> Pacer:
    """Replace a sync ccxt client's ``throttle`` by a :class:`Pacer` (on this object only); return it."""
    pacer = Pacer(client, **kwargs)
    client.throttle = pacer
    return pacer
