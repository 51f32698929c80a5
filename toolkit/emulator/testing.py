"""Helpers for clients and tests of the emulator (this project's and other areas').

The emulator's clock is replay time, not the wall clock: a client signs its
requests (``timestamp``) with :class:`FollowerClock` (out of process: built from
``GET /api/v3/time`` and the replay speed) or, in process, with the emulator's own
clock (``exchange_client(url=emu.url, clock=emu.clock)``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from toolkit.clock import SYSTEM_CLOCK, Clock, ms_to_timestamp
from toolkit.data.store import BarStore

__all__ = ["EmulatorPool", "FollowerClock", "admin", "free_port", "make_store", "port_is_free", "step_clock"]


def make_store(root: Path, slices: dict[str, tuple[str, str]]) -> Path:
    """Copy slices of the bundled 1m bars into a small store under ``root`` and return ``root``.

    ``slices`` maps a ccxt symbol to inclusive ``(start, end)`` dates, e.g.
    ``{"BTC/USDT": ("2024-02-28", "2024-03-05")}``. A small store keeps the
    emulator's start-up fast.
    """
    bundled = BarStore(roots=[BarStore().roots[0]])
    target = BarStore(roots=[root])
    for symbol, (start, end) in slices.items():
        target.write(symbol, "1m", bundled.load(symbol, "1m", start, end))
    return root


def admin(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call an admin endpoint of the emulator at ``url`` and return its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"admin {method} {path}: {exc.code} {exc.read()!r}") from exc


def free_port() -> int:
    """Return a TCP port that was free on loopback a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(url: str) -> bool:
    """Return True when nothing listens on the port of ``url`` any more (TIME_WAIT leftovers do not count)."""
    port = urlparse(url).port
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port or 0)))
        except OSError:
            return False
    return True


class EmulatorPool:
    """Start in-process emulators for a test (stepped clock, port 0) and stop every one of them.

    Parameters
    ----------
    state_dir
        Where each emulator's state file goes (``state<i>.sqlite``, one per emulator started).
    defaults
        ``EmulatorConfig`` fields every emulator of the pool gets (``store_roots``, ``start`` …).
    """

    def __init__(self, state_dir: Path, **defaults: Any) -> None:
        self.state_dir = state_dir
        self.defaults = {"port": 0, "speed": 0, **defaults}
        self.started: list[Any] = []

    def start(self, wall_clock: Clock = SYSTEM_CLOCK, **overrides: Any) -> Any:
        """Start one emulator (``wall_clock``: what rate-limit windows run on) and return it."""
        from toolkit.emulator.server import Emulator, EmulatorConfig

        cfg = {"state_path": self.state_dir / f"state{len(self.started)}.sqlite", **self.defaults, **overrides}
        emu = Emulator(EmulatorConfig(**cfg), wall_clock=wall_clock).start()
        self.started.append(emu)
        return emu

    def stop_all(self) -> list[str]:
        """Stop every emulator started; return the URLs whose port is still bound (an empty list is right)."""
        for emu in self.started:
            emu.stop()
        return [emu.url for emu in self.started if not port_is_free(emu.url)]


def step_clock(url: str, minutes: int, follower: FollowerClock | None = None) -> dict[str, Any]:
    """Advance the emulator's replay clock by ``minutes`` through the admin endpoint; return its status.

    A ``follower`` signing clock is synchronised to the new time.
    """
    status: dict[str, Any] = admin(url, "POST", "/admin/clock", {"advance_minutes": minutes})
    if follower is not None:
        follower.sync()
    return status


class FollowerClock:
    """A client-side copy of an emulator's replay clock, to sign requests with.

    It reads the server's time (``GET /api/v3/time``, which includes a ``clock_skew``
    fault) and the replay speed (``GET /admin/status``), then runs at that speed on the
    client's wall clock. It may lag the server by one round trip times the speed, so with
    an accelerated replay sign with ``recvWindow=60000`` (Binance's maximum). A stepped
    emulator (speed 0) moves only when stepped: call :meth:`sync` after stepping it
    (:func:`step_clock` does when given the follower).
    Satisfies :class:`toolkit.clock.Clock`; give it to ``exchange_client(clock=...)``.

    Parameters
    ----------
    url
        The emulator's base URL.
    speed
        Replay ms per wall ms; read from ``/admin/status`` when omitted.
    wall
        Wall clock in seconds (injected for tests); defaults to ``time.time``.
    """

    def __init__(self, url: str, speed: float | None = None, wall: Callable[[], float] = time.time) -> None:
        self.url = url.rstrip("/")
        self._wall = wall
        self._fixed_speed = speed
        self._lock = threading.Lock()
        self._anchor_server = 0
        self._anchor_wall = 0.0
        self.speed = 0.0
        self.round_trip_s = 0.0
        self.sync()

    def sync(self) -> int:
        """Read the server's time (and speed) again; return the server time read."""
        speed = self._fixed_speed if self._fixed_speed is not None else float(
            admin(self.url, "GET", "/admin/status")["speed"])
        before = self._wall()
        with urllib.request.urlopen(self.url + "/api/v3/time", timeout=60) as resp:
            server = int(json.loads(resp.read())["serverTime"])
        after = self._wall()
        # anchored at the end of the round trip: the estimate may lag the server by up to one round
        # trip (times the speed), never run ahead of it (Binance refuses a timestamp 1 s ahead)
        with self._lock:
            self.speed, self._anchor_server, self._anchor_wall = speed, server, after
        self.round_trip_s = after - before
        return server

    def now_ms(self) -> int:
        """Return the emulator's replay time as this client estimates it (epoch ms)."""
        with self._lock:
            return self._anchor_server + int((self._wall() - self._anchor_wall) * 1000.0 * self.speed)

    def now(self) -> pd.Timestamp:
        """Return :meth:`now_ms` as a tz-aware UTC timestamp."""
        return ms_to_timestamp(self.now_ms())

    def __repr__(self) -> str:
        return f"FollowerClock({self.url}, {self.now().isoformat()}, speed={self.speed:g})"
