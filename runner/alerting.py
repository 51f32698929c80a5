"""The alert rules in the loop: measure every rule of ``toolkit.ops.alerts.RULES`` each cycle, route, act.

Enabled by the config's ``[alerts]`` table (none without it). After each successful cycle, per
deployment, :class:`Alerting` measures (exchange time unless said otherwise):

=======================  =====================================================================================
stale_feed               seconds since the first bar the feed should hold but does not closed (0: up to date)
missed_bars              bars that closed in the last max(1 h, 3 bars) and are not in the feed
reconciliation_drift     |exchange − journal| of the base (at the last close) and quote assets, % of capital
order_reject_rate        rejected / sent orders of the deployment in the last hour (0 without orders)
slippage                 each new fill against its order's arrival price, bps (positive: paid more)
spread                   Corwin–Schultz estimate of the last two closed bars, bps (as ``toolkit.ops.regimes``)
drawdown                 the rollback guard's drawdown since the version started, %; threshold: its limit
decision_latency         new closed bar seen → order sent (or decision journaled), wall ms, when measured
exchange_error_rate      failed / all HTTP requests to the exchange in the last wall hour (account-wide)
heartbeat_missing        wall seconds since the previous completed cycle (after a failed attempt too)
version_switch           1 when the journal recorded a version switch since the last cycle
=======================  =====================================================================================

and passes each value to an :class:`~toolkit.ops.alerts.AlertRouter` holding the version's regime map
(``evidence/regime_map.json`` of its gates run). Without a map the bucket-relative rules (slippage,
spread) are not evaluated, every alert says so, and the regime is taken as ``normal``. An alert goes to
the sinks (log always; ``file``, webhook when configured), is journaled (``alerts`` table) and, for
``page`` and ``ticket`` or when it carries an action, opens an incident ``alert_<rule>`` (severity
``warning``: an alert never blocks orders by itself). A ``cut_size`` action scales the deployment's
targets by ``cut_size_factor``, ``widen_limits`` multiplies its price band by ``widen_band_factor``; both
are journaled (meta ``derisk:<deployment>:<action>``) and stay in force until their incident is
resolved (``runner resolve``).

``/metrics`` gets ``desk_alert_value{rule,deployment}``, ``desk_alert_threshold{rule,deployment}`` and
``desk_regime{deployment,regime}``, the names :func:`toolkit.ops.alerts.prometheus_rules` uses.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import pandas as pd
from prometheus_client import Gauge

if TYPE_CHECKING:
    from runner.config import Deployment
    from runner.engine import Runner
    from toolkit.ops.alerts import AlertRouter, AlertRules
    from toolkit.ops.sinks import Sink

__all__ = ["ACTIONS", "Alerting", "CallCounter", "derisk_factors"]

HOUR_MS = 3_600_000
#: the de-risk actions and the config field that sizes each
ACTIONS = {"cut_size": "cut_size_factor", "widen_limits": "widen_band_factor"}
log = logging.getLogger("runner")


class CallCounter:
    """Every HTTP request a ccxt client makes and whether it failed, timed on a monotonic wall clock.

    Wall time, not the exchange's: a request that fails before the clock is read has no exchange time,
    and the share of failures is about the connection, whatever the venue's clock does.
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.monotonic = monotonic
        self.calls: deque[tuple[float, bool]] = deque()

    def install(self, client: Any) -> None:
        """Wrap ``client.fetch`` (ccxt's one HTTP call) so each request is counted, failed when it raises."""
        inner = client.fetch

        def fetch(*args: Any, **kwargs: Any) -> Any:
            try:
                out = inner(*args, **kwargs)
            except Exception:
                self.calls.append((self.monotonic(), True))
                raise
            self.calls.append((self.monotonic(), False))
            return out

        client.fetch = fetch

    def error_rate(self) -> float:
        """Return the share of the last hour's requests that failed (0 without requests)."""
        now = self.monotonic()
        while self.calls and self.calls[0][0] <= now - 3600.0:
            self.calls.popleft()
        return sum(failed for _, failed in self.calls) / len(self.calls) if self.calls else 0.0


def derisk_factors(journal: Any, deployment: str) -> dict[str, float]:
    """Return the de-risk actions in force for ``deployment`` and their factors (from the journal's meta)."""
    out = {}
    for action in ACTIONS:
        raw = journal.get_meta(f"derisk:{deployment}:{action}")
        if raw:
            doc = json.loads(raw)
            if doc.get("lifted_at") is None:
                out[action] = float(doc["factor"])
    return out


class Alerting:
    """Measure, route and act on the alert rules for a runner (a no-op without ``[alerts]``)."""

    def __init__(self, runner: Runner, wall: Callable[[], float] = time.time) -> None:
        self.r = runner
        self.wall = wall
        self.cfg = runner.cfg.alerts
        self.calls = CallCounter()
        self.routers: dict[str, AlertRouter] = {}
        self.no_map: dict[str, str] = {}  # deployment -> why its alerts use absolute thresholds only
        self.sinks: list[tuple[str, Sink]] = []
        self._fills_seen: dict[str, int] = {}
        self._switches: dict[str, int] = {}
        self._last_ok_wall: float | None = None
        self._rules: AlertRules | None = None
        reg = runner.metrics.registry
        self.value = Gauge("desk_alert_value", "each alert rule's last measured value", ["rule", "deployment"],
                           registry=reg)
        self.threshold = Gauge("desk_alert_threshold", "each alert rule's threshold at the current hour",
                               ["rule", "deployment"], registry=reg)
        self.regime = Gauge("desk_regime", "1 for the liquidity regime of the current hour", ["deployment", "regime"],
                            registry=reg)

    @property
    def enabled(self) -> bool:
        return self.cfg is not None

    # --- start ------------------------------------------------------------------------------------
    def version_changed(self, d: Deployment) -> None:
        """Route ``d``'s alerts with the regime map and drawdown limit of the version it now trades (at start
        and after a handover; the new version's router starts without the previous one's dedup state)."""
        if self.cfg is None or self._rules is None:
            return
        from toolkit.ops.alerts import AlertRouter, AlertRules
        from toolkit.ops.regimes import RegimeMap

        v = self.r.versions[d.name]
        regimes = None
        self.no_map.pop(d.name, None)
        if v.regime_map_json is not None:
            regimes = RegimeMap.from_json(v.regime_map_json, f"{d.model} version {v.version} regime_map.json")
        else:
            self.no_map[d.name] = (f"no regime map stored with {d.model} version {v.version}: absolute "
                                   "thresholds only, regime taken as normal")
        limit, _ = self.r.guard.limit(d)
        rules = self._rules.rules
        own = {**rules, "drawdown": rules["drawdown"].model_copy(update={"threshold": limit})}
        self.routers[d.name] = AlertRouter(AlertRules(rules=own), regimes, self.cfg.runbooks)

    def open(self) -> None:
        """Read the rules, the versions' regime maps, set the sinks and the watermarks (``Runner.open``)."""
        r = self.r
        assert r.session is not None and r.journal is not None
        self.calls.install(r.session.client)
        if self.cfg is None:
            return
        from toolkit.ops.alerts import load_rules
        from toolkit.ops.sinks import FileSink, LogSink, WebhookSink

        rules = load_rules(self.cfg.rules)
        self.sinks = [("log", LogSink())]
        if self.cfg.file is not None:
            self.sinks.append(("file", FileSink(self.cfg.file)))
        if self.cfg.webhook_url_env is not None:
            hook = WebhookSink(self.cfg.webhook_url_env, min_severity=self.cfg.webhook_min_severity)
            hook.url()  # the variable is set and holds a URL: checked before trading
            self.sinks.append(("webhook", hook))
        self._rules = rules
        for d in r.cfg.deployments:
            self.version_changed(d)
            fills = r.journal.fills(d.name)
            self._fills_seen[d.name] = max((int(f["at"]) for f in fills), default=0)
            self._switches[d.name] = len(r.journal.switches(d.name))
        beat = r.journal.get_meta("heartbeat")
        self._last_ok_wall = None if beat is None else float(json.loads(beat)["wall"])

    # --- each cycle -------------------------------------------------------------------------------
    def after_cycle(self, now: int) -> None:
        """Measure and route every rule for every deployment; lift de-risk actions whose incident is resolved."""
        r = self.r
        assert r.journal is not None
        self._lift(now)
        if self.cfg is None:
            return
        wall = self.wall()
        gap = 0.0 if self._last_ok_wall is None else max(wall - self._last_ok_wall, 0.0)
        self._last_ok_wall = wall
        errors = self.calls.error_rate()
        for d in r.cfg.deployments:
            if d.name not in self.routers:
                continue
            values = self.measure(d, now)
            values["exchange_error_rate"] = [errors]
            values["heartbeat_missing"] = [gap]
            self.route(d, values, now)

    def after_failure(self, now: int) -> None:
        """After a failed attempt: the exchange error rate and the heartbeat (the cycle's other figures are not)."""
        if self.cfg is None or self.r.journal is None:
            return
        gap = 0.0 if self._last_ok_wall is None else max(self.wall() - self._last_ok_wall, 0.0)
        errors = self.calls.error_rate()
        for d in self.r.cfg.deployments:
            if d.name in self.routers:
                self.route(d, {"exchange_error_rate": [errors], "heartbeat_missing": [gap]}, now)

    def measure(self, d: Deployment, now: int) -> dict[str, list[float]]:
        """Return each rule's value(s) for ``d`` at ``now`` (a rule with nothing to measure is left out)."""
        from toolkit.backtest.costs import corwin_schultz_spread

        r = self.r
        assert r.journal is not None
        v, feed = r.versions[d.name], r.feeds[d.name]
        out: dict[str, list[float]] = {}
        if len(feed.bars):
            have = {int(t) for t in feed.bars.index}
            newest = max(have)
            expected = (now // v.bar_ms) * v.bar_ms - v.bar_ms  # the newest bar that has closed
            out["stale_feed"] = [0.0 if newest >= expected else (now - (newest + 2 * v.bar_ms)) / 1000.0]
            window = max(HOUR_MS, 3 * v.bar_ms)
            closes = range(expected, now - window - v.bar_ms, -v.bar_ms)  # opens of the bars closed in the window
            out["missed_bars"] = [float(sum(t not in have for t in closes if t + v.bar_ms > now - window))]
            bars = feed.frame()
            price = float(bars["close"].iloc[-1])
            if len(bars) >= 2:
                out["spread"] = [float(corwin_schultz_spread(bars.iloc[-2:]).iloc[-1]) * 1e4]
            drift = abs(r.drift.get(d.base, Decimal(0))) * Decimal(repr(price)) + abs(r.drift.get(d.quote, Decimal(0)))
            out["reconciliation_drift"] = [float(drift) / d.capital * 100.0]
        sent = r.journal.rows("SELECT state FROM orders WHERE deployment = ? AND intent_at > ? "
                              "AND state != 'not_placed'", (d.name, now - HOUR_MS))
        out["order_reject_rate"] = [sum(o["state"] == "rejected" for o in sent) / len(sent) if sent else 0.0]
        fills = r.journal.rows(
            "SELECT f.at, f.price, o.arrival_price, o.side FROM fills f JOIN orders o "
            "ON o.client_order_id = f.client_order_id WHERE f.deployment = ? AND f.at > ? ORDER BY f.at",
            (d.name, self._fills_seen[d.name]))
        if fills:
            self._fills_seen[d.name] = int(fills[-1]["at"])
            out["slippage"] = [(float(f["price"]) / float(f["arrival_price"]) - 1.0) * 1e4
                               * (1 if f["side"] == "buy" else -1) for f in fills]
        if d.name in r.guard.drawdown_pct:
            out["drawdown"] = [r.guard.drawdown_pct[d.name]]
        latency = r.metrics.last_latency_ms.pop(d.name, None)
        if latency is not None:
            out["decision_latency"] = [latency]
        switches = len(r.journal.switches(d.name))
        out["version_switch"] = [1.0 if switches > self._switches[d.name] else 0.0]
        self._switches[d.name] = switches
        return out

    def route(self, d: Deployment, values: dict[str, list[float]], now: int) -> None:
        """Check each value against its rule; publish the gauges; send, journal and act on the alerts."""
        router = self.routers[d.name]
        at = pd.Timestamp(now, unit="ms", tz="UTC")
        regime = router.regimes.regime(router.threshold("stale_feed", at)[2]) if router.regimes else "normal"
        for name in ("low", "normal", "high"):
            self.regime.labels(d.name, name).set(1.0 if name == regime else 0.0)
        for rule, measured in values.items():
            if router.regimes is None and router.rules.rules[rule].threshold is None:
                continue  # a bucket-relative rule without the version's regime map
            threshold, _, _ = router.threshold(rule, at)
            self.threshold.labels(rule, d.name).set(threshold)
            for value in measured:
                self.value.labels(rule, d.name).set(value)
                alert = router.check(rule, d.name, value, at)
                if alert is not None:
                    if d.name in self.no_map:
                        alert = dataclasses.replace(alert, message=f"{alert.message}; {self.no_map[d.name]}")
                    self.raise_alert(d, alert, now)

    def raise_alert(self, d: Deployment, alert: Any, now: int) -> None:
        """Send ``alert`` to the sinks, journal it, open its incident and take its de-risk action."""
        r = self.r
        assert r.journal is not None and self.cfg is not None
        delivered = {}
        for name, sink in self.sinks:
            try:
                delivered[name] = bool(sink.send(alert))
            except Exception as exc:  # a sink never stops the loop; the journal says it failed
                log.error("alert sink %s failed: %s", name, type(exc).__name__)
                delivered[name] = False
        incident = None
        if alert.severity != "log" or alert.action != "none":
            text = (f"[{alert.severity}] {alert.message}; action {alert.action}; runbook {alert.runbook}")
            incident = r.journal.open_incident(now, f"alert_{alert.rule}", "warning", text, d.name)
        seq = r.journal.record_alert(alert.to_dict(), now, incident, delivered)
        if not all(delivered.values()):
            failed = sorted(k for k, ok in delivered.items() if not ok)
            r._incident("alert_delivery_failed", "warning", f"alert {seq} ({alert.rule}) not delivered to {failed}",
                        d.name)
        r._event("alert", alert_seq=seq, incident=incident, **alert.to_dict())
        if alert.action in ACTIONS and incident is not None:
            factor = float(getattr(self.cfg, ACTIONS[alert.action]))
            key = f"derisk:{d.name}:{alert.action}"
            r.journal.set_meta(key, json.dumps({"factor": factor, "incident": incident, "alert": seq, "at": now,
                                                "rule": alert.rule, "lifted_at": None}))
            r.mark_fresh(d.name)  # the next decision trades from the position held: the cut reaches it at once
            r._event("derisk", deployment=d.name, action=alert.action, factor=factor, incident=incident)

    def _lift(self, now: int) -> None:
        """End the de-risk actions whose incident was resolved (journaled in the same meta key)."""
        r = self.r
        assert r.journal is not None
        for d in r.cfg.deployments:
            for action in derisk_factors(r.journal, d.name):
                key = f"derisk:{d.name}:{action}"
                doc = json.loads(r.journal.get_meta(key) or "{}")
                rows = r.journal.rows("SELECT resolved_at FROM incidents WHERE id = ?", (doc["incident"],))
                if not rows or rows[0]["resolved_at"] is not None:
                    r.journal.set_meta(key, json.dumps({**doc, "lifted_at": now}))
                    r.mark_fresh(d.name)
                    r._event("derisk_lifted", deployment=d.name, action=action, incident=doc["incident"])

    # --- what the engine asks ---------------------------------------------------------------------
    def size_factor(self, deployment: str) -> float:
        """Return the factor on ``deployment``'s targets (``cut_size`` in force: below 1)."""
        assert self.r.journal is not None
        return derisk_factors(self.r.journal, deployment).get("cut_size", 1.0)

    def band_factor(self, deployment: str) -> float:
        """Return the factor on ``deployment``'s price band (``widen_limits`` in force: above 1)."""
        assert self.r.journal is not None
        return derisk_factors(self.r.journal, deployment).get("widen_limits", 1.0)
