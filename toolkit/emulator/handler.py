"""The HTTP layer: a threaded HTTP/1.1 server whose connections can all be closed on shutdown.

Each request goes through faults, then the rate limiter, then the API; admin paths
answer loopback clients only. The server keeps track of its connections and handler
threads so that :meth:`EmulatorHTTPServer.close_connections` can end keep-alive
connections and wait for every handler to finish, and a request that arrives while
the emulator stops is refused with 503 instead of touching a closed state file.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from toolkit.emulator.errors import BinanceError, banned, too_much_weight
from toolkit.emulator.feed import MINUTE
from toolkit.emulator.params import Request
from toolkit.emulator.ratelimit import order_count, request_weight
from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    from toolkit.emulator.server import Emulator

__all__ = ["EmulatorHTTPServer", "is_loopback"]

log = logging.getLogger("toolkit.emulator")


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is ``localhost`` or a loopback address."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threaded server that tracks its connections and handler threads."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        super().__init__(address, _Handler)
        self.emulator = emulator
        self._live: dict[threading.Thread, socket.socket] = {}
        self._live_lock = threading.Lock()
        self._serial = 0

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._live_lock:
            self._serial += 1
            thread = threading.Thread(target=self._run, args=(request, client_address),
                                      name=f"emulator-handler-{self._serial}", daemon=True)
            self._live[thread] = request
        thread.start()

    def _run(self, request: Any, client_address: Any) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            with self._live_lock:
                self._live.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that hangs up mid-answer (or a connection ended by a shutdown) is not an error worth a traceback
        log.debug("emulator: connection from %s ended abruptly", client_address, exc_info=True)

    def close_connections(self, timeout: float = 60.0) -> bool:
        """End every open connection (after its request in flight) and wait for the handlers; True if all ended."""
        with self._live_lock:
            live = dict(self._live)
        for sock in live.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)  # an idle keep-alive read sees EOF; a request in flight still answers
        deadline = time.monotonic() + timeout
        for thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in live)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorHTTPServer
    #: (method, path) of the API request being answered; recorded just before it is answered or dropped
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
        if self.close_connection:
            lines.append("Connection: close")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        with contextlib.suppress(OSError):  # the client may be gone
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.log_request(status, len(body))

    def _drop(self) -> None:
        pending, self._pending_record = self._pending_record, None
        if pending is not None:  # record (status 0: no answer) before hanging up, as _send does before answering
            self.server.emulator.record(pending[0], pending[1], 0)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length).decode() if length else ""
        if not emu.gate.enter():  # stopping: answer without touching the engine, and hang up
            self.close_connection = True  # a bare 503, like a gateway's: the client may retry elsewhere/later
            self._send(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>", content_type="text/html")
            return
        try:
            if split.path.startswith("/admin/"):
                self._admin(emu, method, split.path, split.query, raw_body)
                return
            self._pending_record = (method, split.path)  # _send or _drop records it
            self._api(emu, method, split.path, split.query, raw_body)
        finally:
            emu.gate.leave()

    def _admin(self, emu: Emulator, method: str, path: str, query: str, raw_body: str) -> None:
        if not is_loopback(self.client_address[0]):
            self._send(403, {"code": -1002, "msg": "Admin endpoints answer loopback clients only."})
            return
        try:
            status, payload = emu.admin(method, path, dict(parse_qsl(query)), raw_body)
        except (ToolkitError, ValueError) as exc:
            status, payload = 400, {"error": str(exc)}
        self._send(status, payload)

    def _faulted(self, emu: Emulator, method: str, path: str) -> tuple[bool, int, int]:
        """Apply the faults of this request; return (whether it was answered or dropped, skew ms, lag ms)."""
        fired = emu.faults.fire(method, path, emu.clock.now_ms())
        skew = sum(r.skew_ms for r in fired if r.kind == "clock_skew")
        lag = max([r.lag_minutes for r in fired if r.kind == "stale_klines"], default=0) * MINUTE
        delay = sum(r.ms for r in fired if r.kind == "latency")
        if delay:
            time.sleep(delay / 1000)
        for rule in fired:
            if rule.kind == "timeout":
                time.sleep(rule.seconds)
                self._drop()
                return True, skew, lag
            if rule.kind == "http_5xx":
                text = f"<html><body><h1>{rule.status} Service Unavailable</h1></body></html>".encode()
                self._send(rule.status, text, content_type="text/html")
                return True, skew, lag
            if rule.kind in ("rate_limit", "ban"):
                refusal = (too_much_weight(6000, rule.retry_after) if rule.kind == "rate_limit" else
                           banned(emu.wall_clock.now_ms() + rule.retry_after * 1000, rule.retry_after))
                self._send(refusal.status, refusal.body(), refusal.headers)
                return True, skew, lag
            if rule.kind == "maintenance" and path != "/sapi/v1/system/status":  # that one reports it
                self._send(503, {"code": 1, "msg": "System is under maintenance."})
                return True, skew, lag
        return False, skew, lag

    def _api(self, emu: Emulator, method: str, path: str, query: str, raw_body: str) -> None:
        answered, skew, lag = self._faulted(emu, method, path)
        if answered:
            return
        params = dict(parse_qsl(query, keep_blank_values=True))
        for key, value in parse_qsl(raw_body, keep_blank_values=True):
            params.setdefault(key, value)  # Binance: a parameter in both, the query string's wins
        req = Request(method=method, path=path, params=params, raw_query=query, raw_body=raw_body,
                      api_key=self.headers.get("X-MBX-APIKEY"), server_ms=emu.clock.now_ms() + skew, lag_ms=lag)
        n_orders = order_count(method, path)
        headers: dict[str, str] = {}
        try:
            if emu.limiter.enabled:
                headers = emu.limiter.admit(request_weight(method, path, params), n_orders)
            if n_orders:
                with emu.counting_fills() as first_fills:
                    status, payload = 200, emu.api.handle(req)
                headers |= emu.limiter.placed(n_orders)
                for _ in range(first_fills[0]):  # Binance decrements after the answer's count was taken
                    emu.limiter.filled()
            else:
                status, payload = 200, emu.api.handle(req)
        except BinanceError as exc:
            status, payload, headers = exc.status, exc.body(), headers | exc.headers
        except Exception:
            log.exception("emulator: unexpected error on %s %s", method, path)
            status, payload = 500, {"code": -1000, "msg": "An unknown error occurred while processing the request."}
        if status == 200 and n_orders and emu.faults.fire(method, path, emu.clock.now_ms(),
                                                          kinds={"drop_after_order"}):
            self._drop()
            return
        self._send(status, payload, headers)
