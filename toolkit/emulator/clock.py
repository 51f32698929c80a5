"""The replay clock: real-time, accelerated, or stepped by tests.

Replay time is the market's time (inside the bundled data). It is the emulator's
one clock: server time (``/api/v3/time``), order, trade and kline times and the
signature window all read it. ``speed=1`` replays at wall speed, ``speed=60``
runs a minute of bars per wall second, ``speed=0`` stands still until
:meth:`ReplayClock.advance` is called (tests step it through the admin endpoint).

:class:`ReplayClock` satisfies :class:`toolkit.clock.Clock`; anything that also
has ``advance`` and ``set`` (:class:`SteppableClock`, e.g. ``toolkit.clock.ManualClock``)
can drive an emulator.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

import pandas as pd

from toolkit.clock import Clock, ms_to_timestamp
from toolkit.errors import ConfigurationError

__all__ = ["ReplayClock", "SteppableClock"]


@runtime_checkable
class SteppableClock(Clock, Protocol):
    """A :class:`~toolkit.clock.Clock` that can be moved forward (never back)."""

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` milliseconds and return the new time."""
        ...

    def set(self, when: int) -> int:
        """Jump to ``when`` (epoch ms, not before now) and return it."""
        ...


class ReplayClock:
    """Map wall time to replay time; thread-safe.

    Parameters
    ----------
    start_ms
        Replay time (epoch milliseconds, UTC) at the moment the clock is created.
    speed
        Replay milliseconds per wall millisecond; ``0`` means stepped.
    wall
        Wall clock in seconds (injected for tests); defaults to ``time.time``.
    """

    def __init__(self, start_ms: int, speed: float, wall: Callable[[], float] = time.time) -> None:
        if not speed >= 0 or speed == float("inf"):
            raise ConfigurationError("speed", "a finite number >= 0 (0 = stepped)", speed)
        self._wall = wall
        self._speed = float(speed)
        self._anchor_replay = int(start_ms)
        self._anchor_wall = wall()
        self._lock = threading.Lock()

    @property
    def speed(self) -> float:
        """Replay milliseconds per wall millisecond (0 when stepped)."""
        return self._speed

    @property
    def stepped(self) -> bool:
        """True when the clock moves only through :meth:`advance` or :meth:`set`."""
        return self._speed == 0

    def _now(self) -> int:
        # caller holds self._lock
        if self._speed == 0:
            return self._anchor_replay
        return self._anchor_replay + int((self._wall() - self._anchor_wall) * 1000.0 * self._speed)

    def now_ms(self) -> int:
        """Return the current replay time in epoch milliseconds."""
        with self._lock:
            return self._now()

    def now(self) -> pd.Timestamp:
        """Return the current replay time as a tz-aware UTC timestamp."""
        return ms_to_timestamp(self.now_ms())

    def advance(self, ms: int) -> int:
        """Move replay time forward by ``ms`` and return the new time (read and update are one step)."""
        if ms < 0:
            raise ConfigurationError("advance", "a non-negative number of milliseconds", ms)
        with self._lock:
            return self._jump(self._now() + int(ms))

    def set(self, when: int) -> int:
        """Jump to ``when`` (epoch ms, never backwards) and return the new time."""
        with self._lock:
            now = self._now()
            if when < now:
                raise ConfigurationError("clock", f"a time at or after the current replay time {now}", when)
            return self._jump(when)

    def _jump(self, replay_ms: int) -> int:
        # caller holds self._lock
        self._anchor_replay = int(replay_ms)
        self._anchor_wall = self._wall()
        return int(replay_ms)

    def __repr__(self) -> str:
        return f"ReplayClock({self.now().isoformat()}, speed={self._speed:g})"
