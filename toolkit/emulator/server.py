"""The emulator: bars, filters, state, clocks, faults and rate limits behind one loopback HTTP server.

``Emulator(config)`` builds everything and serves it; ``start()`` runs it in a
background thread (tests), ``serve_forever()`` in the foreground (the CLI).
``stop()`` ends every connection, waits for the handlers, then saves and closes the
state file. Admin endpoints under ``/admin/`` answer loopback clients only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from toolkit.clock import SYSTEM_CLOCK, Clock, timestamp_to_ms
from toolkit.data.store import BarStore, parse_time
from toolkit.emulator.api import Api
from toolkit.emulator.clock import ReplayClock, SteppableClock
from toolkit.emulator.faults import FaultInjector, load_faults, parse_rules
from toolkit.emulator.feed import MINUTE, BarFeed, load_feed
from toolkit.emulator.filters import load_rules
from toolkit.emulator.handler import EmulatorHTTPServer, is_loopback
from toolkit.emulator.orders import Engine
from toolkit.emulator.ratelimit import RateLimiter
from toolkit.emulator.settings import DEFAULT_API_KEY, DEFAULT_API_SECRET, EmulatorConfig, default_state_path
from toolkit.emulator.state import State
from toolkit.errors import ConfigurationError

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "Emulator", "EmulatorConfig", "default_state_path"]

log = logging.getLogger("toolkit.emulator")


class _Gate:
    """Count requests in flight; once closed, refuse new ones and let ``close`` wait for the rest."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self.closed = False

    def enter(self) -> bool:
        with self._cond:
            if self.closed:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._inside -= 1
            self._cond.notify_all()

    def close(self, timeout: float) -> bool:
        with self._cond:
            self.closed = True
            return self._cond.wait_for(lambda: self._inside == 0, timeout)


def _lock_state(path: Path) -> IO[str]:
    """Hold an exclusive lock next to the state file; refuse a second emulator on the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{path}.lock", "a+")  # held until stop()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        handle.close()
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise ConfigurationError("state", "a state file no other emulator has open", str(path)) from exc
        raise
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _start_ms(config: EmulatorConfig, feeds: dict[str, BarFeed]) -> int:
    """Return the replay start; refuse one outside the data of any symbol, naming the range."""
    if config.start:
        ts = parse_time(config.start, "start")
        assert ts is not None
        start = timestamp_to_ms(ts)
    else:
        start = max(f.first_ms for f in feeds.values()) + 1440 * MINUTE
    for feed in feeds.values():
        # from the first bar's open to the last bar's close: there is a market, or the data's history
        if not feed.first_ms <= start <= feed.last_ms + MINUTE:
            raise ConfigurationError(
                "start", f"a time within the data of {feed.symbol}: {_iso(feed.first_ms)} .. "
                f"{_iso(feed.last_ms + MINUTE)}", config.start or _iso(start))
    return start


class Emulator:
    """A Binance-compatible loopback exchange replaying real 1m bars.

    Parameters
    ----------
    config
        The emulator's settings.
    faults
        An injector to use instead of the one built from ``config.faults_path``.
    clock
        The replay clock to run on (e.g. a ``toolkit.clock.ManualClock``) instead of a
        :class:`ReplayClock` built from ``config.start`` and ``config.speed``.
    wall_clock
        The clock the rate-limit windows run on (default: the system's wall clock).

    Raises
    ------
    ConfigurationError
        For a non-loopback host without ``allow_remote``, a start outside the data,
        a busy port, or a state file another emulator holds.
    """

    def __init__(self, config: EmulatorConfig, faults: FaultInjector | None = None,
                 clock: SteppableClock | None = None, wall_clock: Clock = SYSTEM_CLOCK) -> None:
        if not is_loopback(config.host) and not config.allow_remote:
            raise ConfigurationError("host", "a loopback address (127.0.0.1) unless allow_remote is set",
                                     config.host)
        self.config, self.wall_clock = config, wall_clock
        store = BarStore(roots=list(config.store_roots)) if config.store_roots else BarStore()
        self.rules = load_rules(list(config.symbols))
        self.feeds = {sid: load_feed(r.unified, store) for sid, r in self.rules.items()}
        start_ms = _start_ms(config, self.feeds) if clock is None else clock.now_ms()
        # everything that can fail on bad input or a busy port comes before the state file is opened
        self.faults = faults or (load_faults(config.faults_path) if config.faults_path else FaultInjector())
        self.requests: deque[dict[str, Any]] = deque(maxlen=2000)
        self.gate = _Gate()
        self.limiter = RateLimiter(wall_clock, enabled=config.rate_limits)
        self._thread: threading.Thread | None = None
        self._local = threading.local()
        self._stopped = False
        self._shutdown = threading.Event()
        try:
            self.httpd = EmulatorHTTPServer((config.host, config.port), self)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigurationError("port", f"a free TCP port on {config.host}", config.port) from exc
            raise
        state_path = config.state_path or default_state_path()
        state: State | None = None
        lock: IO[str] | None = None
        try:
            lock = _lock_state(state_path)
            state = State(state_path)
            self.clock: SteppableClock = clock or ReplayClock(start_ms, config.speed)
            saved = state.get_meta("replay_ms")
            if saved is not None and int(saved) > self.clock.now_ms():
                self.clock.set(int(saved))  # a state file continues from its own clock (never backwards)
            self.engine = Engine(self.feeds, self.rules, state, self.clock, config.matching,
                                 dict(config.balances))
        except BaseException:
            try:
                if state is not None:
                    state.db.close()  # uncommitted changes are dropped
            finally:
                if lock is not None:
                    lock.close()
                self.httpd.server_close()
            raise
        self.state = state
        self._lock_file: IO[str] | None = lock
        self.engine.on_first_fill = self._first_fill
        self.api = Api(self.engine, self.rules, config.api_key, config.api_secret.get_secret_value(),
                       self.limiter.limits, maintenance=self._in_maintenance, order_usage=self.limiter.order_usage)

    def _first_fill(self) -> None:
        counter = getattr(self._local, "first_fills", None)
        if counter is not None:
            counter[0] += 1  # an order request in this thread: counted once its answer's headers are taken
        else:
            self.limiter.filled()

    @contextlib.contextmanager
    def counting_fills(self) -> Iterator[list[int]]:
        """Count the first fills of an order request instead of decrementing the order count at once."""
        counter = [0]
        self._local.first_fills = counter
        try:
            yield counter
        finally:
            self._local.first_fills = None

    @property
    def speed(self) -> float:
        """Replay ms per wall ms of the clock (0 when stepped; 0 for a clock without a speed)."""
        return float(getattr(self.clock, "speed", 0.0))

    @property
    def port(self) -> int:
        """The bound port (useful with ``port=0``)."""
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give ccxt, e.g. ``http://127.0.0.1:8899``."""
        return f"http://{self.config.host}:{self.port}"

    def record(self, method: str, path: str, status: int) -> None:
        """Remember a served API request (the admin endpoint lists them)."""
        self.requests.append({"method": method, "path": path, "status": status})

    def _in_maintenance(self, replay_ms: int) -> bool:
        return any(r.kind == "maintenance" and (r.start is None or r.start <= replay_ms)
                   and (r.end is None or replay_ms < r.end) for r in self.faults.rules)

    def status(self) -> dict[str, Any]:
        """Return the clock, data ranges, balances and fault counters."""
        now = self.engine.sync()
        return {
            "replay_ms": now, "replay_time": _iso(now), "speed": self.speed, "stepped": self.speed == 0,
            "symbols": {r.unified: {"first": _iso(self.feeds[s].first_ms),
                                    "last": _iso(self.feeds[s].last_ms)} for s, r in self.rules.items()},
            "open_orders": len(self.engine.open), "state": str(self.state.path),
            "faults": self.faults.snapshot()["counts"], "requests": len(self.requests),
            "rate_limits": {"enabled": self.limiter.enabled, "banned_until": self.limiter.ban_until,
                            "orders": self.limiter.order_usage()},
        }

    def advance(self, ms: int) -> int:
        """Move the replay clock forward by ``ms``, process the bars passed and return the new time."""
        with self.engine.lock:
            self.clock.advance(ms)
            return self.engine.sync()

    def admin(self, method: str, path: str, query: dict[str, str], body: str) -> tuple[int, Any]:
        """Serve ``/admin/*``: status, clock stepping, fault rules and the request log."""
        doc = json.loads(body) if body.strip() else {}
        if (method, path) == ("GET", "/admin/status"):
            return 200, self.status()
        if (method, path) == ("POST", "/admin/clock"):
            if "to" in doc:
                ts = parse_time(doc["to"], "to")
                assert ts is not None
                target = timestamp_to_ms(ts)
                self.advance(max(0, target - self.clock.now_ms()))
            else:
                step = int(doc.get("advance_ms", 0)) + int(doc.get("advance_minutes", 0)) * MINUTE
                self.advance(step)
            return 200, self.status()
        if path == "/admin/faults":
            if method == "GET":
                return 200, self.faults.snapshot()
            if method == "POST":
                rules, _ = parse_rules(doc, "admin faults")
                if doc.get("replace"):
                    self.faults.clear()
                self.faults.add(rules)
                return 200, self.faults.snapshot()
            if method == "DELETE":
                self.faults.clear(reset_counts=query.get("reset_counts") in ("1", "true"))
                return 200, self.faults.snapshot()
        if path == "/admin/requests":
            if method == "DELETE":
                self.requests.clear()
            return 200, list(self.requests)
        return 404, {"error": f"unknown admin endpoint {method} {path}"}

    def start(self) -> Emulator:
        """Serve in a background thread and return self."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), name="emulator",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or an interrupt), then stop and save the state."""
        try:
            if self._thread is None:
                self.start()
            while not self._shutdown.wait(0.5):
                pass
        finally:
            self.stop()

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` to return; safe from a signal handler or another thread."""
        self._shutdown.set()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop serving: refuse new requests, end every connection, wait for the handlers, save and close.

        Idempotent. Requests in flight are answered; a request arriving meanwhile gets 503.
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            if self._thread is not None:
                self.httpd.shutdown()
                self._thread.join(timeout=timeout)
                self._thread = None
            if not self.gate.close(timeout):
                log.warning("emulator: requests still in flight after %.0f s", timeout)
            if not self.httpd.close_connections(timeout):
                log.warning("emulator: handler threads still alive after %.0f s", timeout)
        finally:
            self.httpd.server_close()
            with self.engine.lock:
                if self.state.db is not None:
                    try:
                        with contextlib.suppress(Exception):
                            self.engine.sync()
                    finally:
                        with contextlib.suppress(Exception):
                            self.state.close()
                        with contextlib.suppress(Exception):
                            self.state.db.close()  # close() failed half-way: still release the file
                        self.state.db = None  # type: ignore[assignment]
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
