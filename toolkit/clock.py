"""One way to ask the time: a ``Clock`` passed in, never read from the system inside domain code.

Every component that needs the time (the backtest engine's timestamps, the registry's
audit rows, the emulator's replay, the runner) takes a :class:`Clock`. Time is UTC:
``now()`` is a tz-aware ``pandas.Timestamp``; ``now_ms()`` is epoch milliseconds.

* :class:`SystemClock` reads the wall clock (the default outside tests).
* :class:`ManualClock` stands still until moved (tests, deterministic runs).
* ``toolkit.emulator.clock.ReplayClock`` maps wall time to the time inside replayed data.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

import pandas as pd

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock", "ms_to_timestamp", "timestamp_to_ms"]


def ms_to_timestamp(ms: int) -> pd.Timestamp:
    """Return epoch milliseconds as a tz-aware UTC timestamp."""
    return pd.Timestamp(int(ms), unit="ms", tz="UTC")


def timestamp_to_ms(ts: pd.Timestamp) -> int:
    """Return a timestamp (naive = UTC) as epoch milliseconds."""
    ts = pd.Timestamp(ts)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value // 1_000_000)


@runtime_checkable
class Clock(Protocol):
    """A source of UTC time."""

    def now_ms(self) -> int:
        """Return the current time in epoch milliseconds (UTC)."""
        ...

    def now(self) -> pd.Timestamp:
        """Return the current time as a tz-aware UTC timestamp."""
        ...


class SystemClock:
    """The wall clock."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def now(self) -> pd.Timestamp:
        return pd.Timestamp.now(tz="UTC")

    def __repr__(self) -> str:
        return "SystemClock()"


class ManualClock:
    """A clock that moves only when told to (thread-safe); never goes backwards.

    Parameters
    ----------
    start
        The initial time: a timestamp or ISO string (naive = UTC), or epoch milliseconds.
    """

    def __init__(self, start: pd.Timestamp | str | int) -> None:
        self._ms = int(start) if isinstance(start, int) else timestamp_to_ms(pd.Timestamp(start))
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        with self._lock:
            return self._ms

    def now(self) -> pd.Timestamp:
        return ms_to_timestamp(self.now_ms())

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` milliseconds and return the new time."""
        if ms < 0:
            raise ValueError(f"advance: expected a non-negative number of milliseconds, found {ms}")
        with self._lock:
            self._ms += int(ms)
            return self._ms

    def set(self, when: pd.Timestamp | str | int) -> int:
        """Jump to ``when`` (not before the current time) and return it."""
        target = int(when) if isinstance(when, int) else timestamp_to_ms(pd.Timestamp(when))
        with self._lock:
            if target < self._ms:
                raise ValueError(f"set: expected a time at or after {self._ms}, found {target}")
            self._ms = target
            return target

    def __repr__(self) -> str:
        return f"ManualClock({self.now().isoformat()})"


#: The wall clock shared by default arguments.
SYSTEM_CLOCK = SystemClock()
