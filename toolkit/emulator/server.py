"""The HTTP side: a threaded loopback server speaking Binance's spot REST API.

``Emulator(config)`` builds everything (bars, filters, state, clock, faults) and
serves it; ``start()`` runs it in a background thread (tests), ``serve_forever()``
in the foreground (the CLI). Admin endpoints under ``/admin/`` answer loopback
clients only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import threading
import time
from collections import deque
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from toolkit import config
from toolkit.data.store import BarStore, parse_time
from toolkit.emulator.api import Api, Request
from toolkit.emulator.clock import ReplayClock, SteppableClock
from toolkit.emulator.errors import BinanceError
from toolkit.emulator.faults import FaultInjector, load_faults, parse_rules
from toolkit.emulator.feed import MINUTE, load_feed
from toolkit.emulator.filters import load_rules
from toolkit.emulator.matching import Engine, MatchingParams
from toolkit.emulator.state import State
from toolkit.errors import ConfigurationError, ToolkitError

__all__ = ["DEFAULT_API_KEY", "DEFAULT_API_SECRET", "Emulator", "EmulatorConfig", "default_state_path"]

log = logging.getLogger("toolkit.emulator")

#: Local-only credentials accepted by default (documented in docs/emulator.md).
DEFAULT_API_KEY = "emulator-api-key"
DEFAULT_API_SECRET = "emulator-api-secret"


def default_state_path() -> Path:
    """Return the default state file (next to the user's bar cache)."""
    return config.cache_dir().parent / "emulator" / "state.sqlite"


class EmulatorConfig(BaseModel):
    """Everything the emulator needs; frozen, unknown keys rejected, the secret shown as ***."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8899, ge=0, le=65535)
    speed: float = Field(60.0, ge=0)
    symbols: tuple[str, ...] = ("BTC/USDT",)
    start: str | None = None
    balances: dict[str, Decimal] = Field(default_factory=lambda: {"USDT": Decimal(100000)})
    api_key: str = DEFAULT_API_KEY
    api_secret: SecretStr = SecretStr(DEFAULT_API_SECRET)
    state_path: Path | None = None
    faults_path: Path | None = None
    store_roots: tuple[Path, ...] | None = None
    matching: MatchingParams = MatchingParams()
    allow_remote: bool = False
    log_requests: bool = False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    emulator: Emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    #: (method, path) of the API request being answered; recorded just before its answer is written
    _pending_record: tuple[str, str] | None = None

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.emulator.config.log_requests:
            log.info("%s - %s", self.address_string(), format % args)

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
        pending, self._pending_record = self._pending_record, None
        if pending is not None:  # record before answering: a client's next request must already see it
            self.server.emulator.record(pending[0], pending[1], status)
        lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
                 f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.log_request(status, len(body))

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode() if length else ""
        if split.path.startswith("/admin/"):
            if not _is_loopback(self.client_address[0]):
                self._send(403, {"code": -1002, "msg": "Admin endpoints answer loopback clients only."})
                return
            try:
                status, payload = emu.admin(method, split.path, dict(parse_qsl(split.query)), raw_body)
            except (ToolkitError, ValueError) as exc:
                status, payload = 400, {"error": str(exc)}
            self._send(status, payload)
            return
        self._pending_record = (method, split.path)
        status = self._api(emu, method, split.path, split.query, raw_body)
        if self._pending_record is not None:  # no answer was sent (a dropped connection)
            self._pending_record = None
            emu.record(method, split.path, status)

    def _api(self, emu: Emulator, method: str, path: str, query: str, raw_body: str) -> int:
        fired = emu.faults.fire(method, path, emu.engine.clock.now_ms())
        skew = sum(r.skew_ms for r in fired if r.kind == "clock_skew")
        lag = max([r.lag_minutes for r in fired if r.kind == "stale_klines"], default=0) * MINUTE
        delay = sum(r.ms for r in fired if r.kind == "latency")
        if delay:
            time.sleep(delay / 1000)
        for rule in fired:
            if rule.kind == "timeout":
                time.sleep(rule.seconds)
                self._drop()
                return 0
            if rule.kind == "http_5xx":
                text = f"<html><body><h1>{rule.status} Service Unavailable</h1></body></html>".encode()
                self._send(rule.status, text, content_type="text/html")
                return rule.status
            if rule.kind in ("rate_limit", "ban"):
                status = 429 if rule.kind == "rate_limit" else 418
                msg = ("Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute."
                       if status == 429 else
                       f"Way too much request weight used; IP banned until "
                       f"{int(time.time() * 1000) + rule.retry_after * 1000}.")
                self._send(status, {"code": -1003, "msg": msg}, {"Retry-After": str(rule.retry_after)})
                return status
            if rule.kind == "maintenance" and path != "/sapi/v1/system/status":  # that one reports it
                self._send(503, {"code": 1, "msg": "System is under maintenance."})
                return 503
        params = dict(parse_qsl(query, keep_blank_values=True))
        params.update(parse_qsl(raw_body, keep_blank_values=True))
        req = Request(method=method, path=path, params=params, raw_query=query, raw_body=raw_body,
                      api_key=self.headers.get("X-MBX-APIKEY"),
                      server_ms=emu.clock.now_ms() + skew, lag_ms=lag)
        headers: dict[str, str] = {}
        try:
            status, payload = 200, emu.api.handle(req)
        except BinanceError as exc:
            status, payload, headers = exc.status, exc.body(), exc.headers
        except Exception:
            log.exception("emulator: unexpected error on %s %s", method, path)
            status, payload = 500, {"code": -1000,
                                    "msg": "An unknown error occurred while processing the request."}
        if status == 200 and method == "POST" and path == "/api/v3/order":
            if emu.faults.fire(method, path, emu.engine.clock.now_ms(), kinds={"drop_after_order"}):
                self._drop()
                return 0
        self._send(status, payload, headers)
        return status


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
    """

    def __init__(self, config: EmulatorConfig, faults: FaultInjector | None = None,
                 clock: SteppableClock | None = None) -> None:
        if not _is_loopback(config.host) and not config.allow_remote:
            raise ConfigurationError("host", "a loopback address (127.0.0.1) unless allow_remote is set",
                                     config.host)
        self.config = config
        store = BarStore(roots=list(config.store_roots)) if config.store_roots else BarStore()
        self.rules = load_rules(list(config.symbols))
        self.feeds = {sid: load_feed(r.unified, store) for sid, r in self.rules.items()}
        if config.start:
            ts = parse_time(config.start, "start")
            assert ts is not None
            start_ms = int(ts.value // 1_000_000)
        else:
            start_ms = min(f.first_ms for f in self.feeds.values()) + 1440 * MINUTE
        # everything that can fail on bad input or a busy port comes before the state file is opened
        self.faults = faults or (load_faults(config.faults_path) if config.faults_path else FaultInjector())
        self.requests: deque[dict[str, Any]] = deque(maxlen=2000)
        self._thread: threading.Thread | None = None
        self.httpd = _HTTPServer((config.host, config.port), _Handler)
        self.httpd.emulator = self
        state: State | None = None
        try:
            state = State(config.state_path or default_state_path())
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
                self.httpd.server_close()
            raise
        self.state = state
        self.api = Api(self.engine, self.feeds, self.rules, config.api_key,
                       config.api_secret.get_secret_value(), maintenance=self._in_maintenance)

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
                target = int(ts.value // 1_000_000)
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
        """Serve in the foreground until interrupted, then save the state."""
        try:
            self.httpd.serve_forever()
        finally:
            self.stop()

    def stop(self) -> None:
        """Stop serving, save the clock and close the state file."""
        try:
            if self._thread is not None:
                self.httpd.shutdown()
                self._thread.join(timeout=5)
                self._thread = None
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

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
