"""Observability: ``/healthz`` and Prometheus ``/metrics`` on 127.0.0.1 (``[metrics] port``; 0: any free port).

Metrics (prometheus-client, a registry of the runner's own, never the process-global one):

| metric | type | labels |
|---|---|---|
| ``runner_cycles_total`` | counter | |
| ``runner_bars_processed_total`` | counter | deployment |
| ``runner_decision_latency_seconds`` | histogram | deployment, outcome (see below) |
| ``runner_orders`` | gauge | deployment, state, purpose |
| ``runner_reconciliation_drift`` | gauge | asset (exchange minus journal) |
| ``runner_pnl`` | gauge | deployment (equity − capital, quote currency, at the last closed bar) |
| ``runner_drawdown_pct`` | gauge | deployment (from the peak equity since the version started) |
| ``runner_version_info`` | gauge (1) | deployment, model, alias, version |
| ``runner_open_incidents`` | gauge | severity |
| ``runner_last_cycle_timestamp_seconds`` | gauge | |
| ``desk_posture_<figure>`` | gauge | deployment (``account``: the account); see ``runner.posture`` |
| ``desk_alert_value``, ``desk_alert_threshold`` | gauge | rule, deployment (``runner.alerting``) |
| ``desk_regime`` | gauge (1) | deployment, regime (the current hour's, ``runner.alerting``) |

Decision latency: from the moment the loop sees a new closed bar to the order request being
sent (``outcome="order"``), or to the decision being journaled when no order is needed
(``outcome="no_order"``).

``/healthz`` answers 200 ``{"status": "ok", …}`` while cycles succeed, 503 with the reason
(``starting``, ``stale``: no successful cycle for ``max(10 × cycle_seconds, 60 s)``,
``stopping``, ``killed``) otherwise. The HTTP thread reads only what the loop last
published (no journal, no exchange call), so a slow scrape never slows trading. Nothing
secret is in either answer.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from runner.engine import Runner

__all__ = ["Metrics"]

HOST = "127.0.0.1"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The runner's metrics and the HTTP server that shows them (started by ``Runner.open``)."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.cycles = Counter("runner_cycles", "successful cycles", registry=reg)
        self.bars_processed = Counter("runner_bars_processed", "closed bars decided", ["deployment"], registry=reg)
        self.latency = Histogram("runner_decision_latency_seconds", "new closed bar seen -> order request sent "
                                 "(or decision journaled)", ["deployment", "outcome"], buckets=LATENCY_BUCKETS,
                                 registry=reg)
        self.orders = Gauge("runner_orders", "orders in the journal by state", ["deployment", "state", "purpose"],
                            registry=reg)
        self.drift = Gauge("runner_reconciliation_drift", "exchange minus journal balance at the last "
                           "reconciliation", ["asset"], registry=reg)
        self.pnl = Gauge("runner_pnl", "equity minus capital (quote currency)", ["deployment"], registry=reg)
        self.drawdown = Gauge("runner_drawdown_pct", "drawdown from the peak equity since the version started",
                              ["deployment"], registry=reg)
        self.version = Gauge("runner_version_info", "the version a deployment trades",
                             ["deployment", "model", "alias", "version"], registry=reg)
        self.incidents = Gauge("runner_open_incidents", "open incidents", ["severity"], registry=reg)
        self.last_cycle = Gauge("runner_last_cycle_timestamp_seconds", "wall time of the last successful cycle",
                                registry=reg)
        from runner.posture import PostureGauges

        self.posture = PostureGauges(reg)
        self.last_cycle_wall: float | None = None
        self.last_latency_ms: dict[str, float] = {}  # per deployment, the latest decision latency (runner.alerting)
        self.port: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- what the loop publishes ----------------------------------------------------------------
    def bars(self, deployment: str, n: int) -> None:
        self.bars_processed.labels(deployment).inc(n)

    def decision_latency(self, deployment: str, started: float | None, outcome: str) -> None:
        if started is not None:
            seconds = time.perf_counter() - started
            self.latency.labels(deployment, outcome).observe(seconds)
            self.last_latency_ms[deployment] = seconds * 1000.0

    def after_cycle(self, seconds: float) -> None:
        """Publish the cycle's figures (called by the loop after each successful cycle)."""
        r = self.r
        self.cycles.inc()
        if r.journal is not None:
            self.orders.clear()
            for row in r.journal.rows("SELECT deployment, state, purpose, COUNT(*) AS n FROM orders "
                                      "GROUP BY deployment, state, purpose"):
                self.orders.labels(row["deployment"], row["state"], row["purpose"]).set(row["n"])
            self.incidents.clear()
            for sev in ("info", "warning", "blocking", "halt"):
                self.incidents.labels(sev).set(0)
            for row in r.journal.rows("SELECT severity, COUNT(*) AS n FROM incidents WHERE resolved_at IS NULL "
                                      "GROUP BY severity"):
                self.incidents.labels(row["severity"]).set(row["n"])
        for asset, diff in r.drift.items():
            self.drift.labels(asset).set(float(diff))
        if r.journal is not None:
            from runner.posture import record_reconciliation

            record_reconciliation(r.journal, r.clock.now_ms(), r.drift)
            self.posture.publish(r.cfg, r.journal)
        self.version.clear()
        for d in r.cfg.deployments:
            v = r.versions.get(d.name)
            if v is not None:
                self.version.labels(d.name, d.model, d.alias, v.version).set(1)
            if d.name in r.guard.equity:
                self.pnl.labels(d.name).set(float(r.guard.equity[d.name]) - d.capital)
                self.drawdown.labels(d.name).set(r.guard.drawdown_pct[d.name])
        self.last_cycle_wall = time.time()
        self.last_cycle.set(self.last_cycle_wall)

    # --- the HTTP side ------------------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        r = self.r
        limit = max(10 * r.cfg.poll.cycle_seconds, 60.0)
        age = None if self.last_cycle_wall is None else time.time() - self.last_cycle_wall
        doc: dict[str, Any] = {"cycles": r.cycles, "last_cycle_age_seconds": age,
                               "versions": {n: v.version for n, v in r.versions.items()}}
        if r.killed is not None:
            return 503, {"status": "killed", **doc}
        if r.stopping.is_set():
            return 503, {"status": "stopping", **doc}
        if age is None:
            return 503, {"status": "starting", **doc}
        if age > limit:
            return 503, {"status": "stale", **doc}
        return 200, {"status": "ok", **doc}

    def start(self) -> int | None:
        """Serve ``/healthz`` and ``/metrics`` on 127.0.0.1 (no port configured: nothing); return the port."""
        port = self.r.cfg.metrics.port
        if port is None or self._server is not None:
            return self.port
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    body, status, ctype = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
                elif self.path.split("?")[0] == "/healthz":
                    status, doc = metrics.health()
                    body, ctype = json.dumps(doc).encode(), "application/json"
                else:
                    body, status, ctype = b'{"error": "not found: /healthz or /metrics"}', 404, "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return  # scrapes are not worth a log line each

        try:
            self._server = ThreadingHTTPServer((HOST, port), Handler)
        except OSError as exc:
            from toolkit.errors import ConfigurationError

            raise ConfigurationError("metrics.port", f"a free TCP port on {HOST} (0: any free port)",
                                     f"{port}: {exc.strerror}") from None
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="runner-metrics", daemon=True)
        self._thread.start()
        if self.r.journal is not None:
            self.r.journal.set_meta("metrics_port", str(self.port))
        self.r._event("metrics", url=f"http://{HOST}:{self.port}/metrics", healthz=f"http://{HOST}:{self.port}/healthz")
        return self.port

    def stop(self) -> None:
        """Stop serving and free the port (idempotent)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
