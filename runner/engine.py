"""The trading loop: one decision per closed bar, orders sent once, the journal first.

Each cycle (every ``poll.cycle_seconds``):

1. read the exchange's time (the runner's only clock: decisions, bar closes and request
   signatures all use it);
2. reconcile the journal with the exchange (``runner.reconcile``);
3. per deployment: fetch the closed bars (never the forming one), journal one decision per
   new closed bar (direction, sized target, the band against the target held before; the
   version's own ``Strategy.positions``, ``Sizing.scale`` and band rule, as in the
   backtest), and execute the latest one: the quantity that moves the deployment from its
   journaled position to the target (fraction of its equity at the arrival price), rounded
   with the market's precision, checked against the risk limits, journaled as an ``intent``
   with a deterministic client order id ``<deployment>-<bar open ms>-<leg>``, then sent once.

Errors by reaction (``toolkit.exchange.errors``): temporary → the cycle is retried after a
backoff; ``OutcomeUnknown`` → the order is looked up by client id and re-sent (as a new
leg) only when the exchange does not know it; rejected → recorded, incident, no retry;
operational → incident, halt (:class:`RunnerHalted`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import pandas as pd

from runner import execution
from runner.config import Deployment, RunnerConfig
from runner.execution import client_order_id, dec, iso_utc
from runner.feed import BarFeed
from runner.journal import Journal
from runner.reconcile import Reconciler
from runner.version import LoadedVersion, load_version
from toolkit.errors import ConfigurationError, ToolkitError
from toolkit.exchange import (
    ExchangeOperationalError,
    ExchangeRejected,
    ExchangeSession,
    ExchangeTemporaryError,
)
from toolkit.exchange.errors import RateLimited

__all__ = ["KILL", "ExchangeClock", "Runner", "RunnerHalted", "client_order_id"]

#: the incident kind of the kill switch (``runner kill``): account-wide, severity ``halt``
KILL = "kill_switch"

log = logging.getLogger("runner")


class RunnerHalted(ToolkitError):
    """An operational error: the runner stopped sending orders and exits; a human looks."""

    exit_code = 9


class ExchangeClock:
    """The exchange's time as last read (``GET /api/v3/time``), read again every cycle and before an order
    when the last read is older than ``exchange.clock_max_age_ms`` of wall time.

    Signing with it keeps request timestamps within the exchange's window whether the venue
    runs at wall speed, accelerated or stepped (the runner signs with ``recvWindow`` 60 s).
    """

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._ms = 0
        self.server_ms = 0  # the exchange's time as last read (may go back: a skewed venue)
        self._monotonic = monotonic
        self._read_at = -math.inf  # wall (monotonic) seconds of the last read

    def sync(self, session: ExchangeSession) -> int:
        self.server_ms = session.fetch_time()
        self._read_at = self._monotonic()
        self._ms = max(self._ms, self.server_ms)
        return self._ms

    def recent(self, session: ExchangeSession, max_age_ms: int) -> int:
        """Return the exchange's time, read again only when the last read is older than ``max_age_ms``."""
        if (self._monotonic() - self._read_at) * 1000.0 < max_age_ms:
            return self._ms
        return self.sync(session)

    def now_ms(self) -> int:
        return self._ms

    def now(self) -> pd.Timestamp:
        return pd.Timestamp(self._ms, unit="ms", tz="UTC")


class Runner:
    """One runner: one exchange account, one journal, the deployments of a config.

    Parameters
    ----------
    config
        The validated config.
    environ
        Where the credentials are read (default ``os.environ``).
    sleep
        Waits between cycles (default: interruptible by :meth:`stop`).
    """

    def __init__(self, config: RunnerConfig, environ: Mapping[str, str] | None = None,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.cfg = config
        self.environ = environ
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set by stop() and a kill request: ends the pause between cycles

        def _pause(seconds: float) -> None:
            self.wake.wait(seconds)
            self.wake.clear()

        self._sleep = sleep or _pause
        self.journal: Journal | None = None
        self.session: ExchangeSession | None = None
        self.clock = ExchangeClock()
        self.versions: dict[str, LoadedVersion] = {}
        self.feeds: dict[str, BarFeed] = {}
        self.min_notional: dict[str, Decimal] = {}
        self.cycles = 0
        self.killed: int | None = None  # the kill-switch incident executed (flattened, halted)
        self.pending_switch: dict[str, tuple[LoadedVersion, str]] = {}  # handovers waiting for a bar boundary
        self._bar_seen_at: dict[str, float] = {}  # wall time a deployment's newest bar was first seen
        self.drift: dict[str, Decimal] = {}  # exchange minus journal per asset, at the last reconciliation
        self._stop_refused: dict[str, Decimal] = {}  # a protective stop refused for this amount: not re-sent
        from runner.alerting import Alerting
        from runner.guard import RollbackGuard
        from runner.observe import Metrics
        from runner.switch import AliasWatch

        self.metrics = Metrics(self)
        self.alerting = Alerting(self)
        self.watch = AliasWatch(self)
        self.guard = RollbackGuard(self)

    # --- start ------------------------------------------------------------------------------------
    def preflight(self, versions: bool = True) -> None:
        """Check everything that can be checked before trading; raise before any order.

        Raises
        ------
        ConfigurationError
            Missing credentials, an unknown model or alias, a version without a passing verdict or
            an audited promotion, a symbol or timeframe the exchange does not list.
        """
        exchange_config = self.cfg.exchange.exchange_config(self.environ)  # credentials first
        for i, d in enumerate(self.cfg.deployments):
            if versions:
                self.versions[d.name] = load_version(d.model, d.alias, d.symbol, f"deployments[{i}]")
        self.session = ExchangeSession(exchange_config, clock=self.clock)
        self.clock.sync(self.session)
        markets = self.session.load_markets()
        timeframes = dict(getattr(self.session.client, "timeframes", {}) or {})
        for i, d in enumerate(self.cfg.deployments):
            if d.symbol not in markets:
                raise ConfigurationError(f"deployments[{i}].symbol", f"a symbol {self.cfg.exchange.id} lists", d.symbol)
            limits = markets[d.symbol].get("limits") or {}
            self.min_notional[d.name] = dec((limits.get("cost") or {}).get("min") or 0)
            if not versions:
                continue
            v = self.versions[d.name]
            if timeframes and v.timeframe not in timeframes:
                raise ConfigurationError(f"deployments[{i}].model", f"a version whose timeframe {self.cfg.exchange.id} "
                                         "serves", v.timeframe)
            self.feeds[d.name] = BarFeed(self.session, d.symbol, v.timeframe, v.bar_ms, keep=v.required_history + 5)
        self.session.fetch_balance()  # the credentials work (AuthenticationFailed otherwise)

    def open(self, versions: bool = True) -> None:
        """Preflight, open the journal, record the versions, take the baseline and reconcile.

        ``versions=False`` (``runner kill`` with no runner running): no registry, no version; the
        journal and the exchange only.
        """
        self.preflight(versions)
        self.journal = Journal(self.cfg.journal)
        now = self.clock.now_ms()
        for d in self.cfg.deployments if versions else ():
            v = self.versions[d.name]
            current = self.journal.current_version(d.name)
            if current != v.version:
                if current is not None:
                    self.mark_fresh(d.name)
                self.journal.record_switch(now, d.name, d.model, d.alias, current, v.version,
                                           "start" if current is None else "version changed while stopped")
                self._event("version", deployment=d.name, model=d.model, alias=d.alias, version=v.version,
                            previous=current)
        assert self.session is not None
        Reconciler(self.cfg, self.journal, self.session).ensure_baseline(now)
        self.reconcile(snapshot=True)
        if versions:
            self.alerting.open()
            self.metrics.start()
            self.watch.mark_checked()

    def mark_fresh(self, deployment: str) -> None:
        """Make the deployment's next decision start from the position held (after a flatten or a handover),
        not from the last decision's target; journaled, so a restart keeps it."""
        assert self.journal is not None
        self.journal.set_meta(_fresh_key(deployment), "1")

    def is_fresh(self, deployment: str) -> bool:
        """Return True when the deployment's next decision starts from the position held (the journal says)."""
        return self.journal is not None and self.journal.get_meta(_fresh_key(deployment)) == "1"

    def close(self) -> None:
        self.metrics.stop()
        if self.session is not None:
            self.session.close()
        if self.journal is not None:
            self.journal.close()

    def stop(self) -> None:
        """Ask the loop to finish its current step and return (signal handlers call this)."""
        self.stopping.set()
        self.wake.set()

    def request_kill(self) -> None:
        """Wake the loop now to execute the kill switch the journal holds (``runner kill`` signals this)."""
        self.wake.set()

    # --- loop -------------------------------------------------------------------------------------
    def run(self, max_cycles: int | None = None) -> None:
        """Run cycles until :meth:`stop` (or ``max_cycles``); temporary failures back off, operational ones halt."""
        while not self.stopping.is_set() and (max_cycles is None or self.cycles < max_cycles):
            pause = self.attempt()
            if not self.stopping.is_set():
                self._sleep(pause)

    _backoff = 0.0

    def attempt(self) -> float:
        """Run one cycle with the reactions by error class; return the pause before the next one.

        Temporary (unreachable, 5xx, maintenance, 429/418) → incident, back off (at least the
        exchange's ``Retry-After``); a read the exchange refused (e.g. a lookup it answers with an
        error) → incident, back off, never the end of the process; operational → ``halt``
        incident and :class:`RunnerHalted`.
        """
        base = self.cfg.poll.retry_initial_seconds
        try:
            self.cycle()
        except RateLimited as exc:
            self.alerting.after_failure(self.clock.now_ms())
            self._incident("rate_limited", "warning", f"{type(exc).__name__}: {exc}")
            self._backoff = min(max(self._backoff * 2, base), self.cfg.poll.retry_max_seconds)
            return max(self._backoff, float(exc.retry_after or 0.0))
        except ExchangeTemporaryError as exc:
            self.alerting.after_failure(self.clock.now_ms())
            self._incident("exchange_unavailable", "warning", f"{type(exc).__name__}: {exc}")
            self._backoff = min(max(self._backoff * 2, base), self.cfg.poll.retry_max_seconds)
            return self._backoff
        except ExchangeRejected as exc:  # a read refused (orders are handled where they are sent)
            self.alerting.after_failure(self.clock.now_ms())
            self._incident("read_rejected", "warning", f"{type(exc).__name__}: {exc}")
            self._backoff = min(max(self._backoff * 2, base), self.cfg.poll.retry_max_seconds)
            return self._backoff
        except ExchangeOperationalError as exc:
            self._incident("exchange_operational", "halt", f"{type(exc).__name__}: {exc}")
            raise RunnerHalted(f"halted: {exc}") from exc
        self._backoff = 0.0
        if self.journal is not None:
            for kind in ("exchange_unavailable", "rate_limited", "read_rejected"):
                self.journal.resolve_incidents(self.clock.now_ms(), kind, None, "a later cycle succeeded")
        return self.cfg.poll.cycle_seconds

    def cycle(self) -> None:
        """One pass: time, kill switch, reconciliation, rollback triggers, aliases, decisions, orders, stops."""
        from runner import protect

        assert self.session is not None and self.journal is not None
        started = time.perf_counter()
        before = self.clock.now_ms()
        now = self.clock.sync(self.session)
        if before and self.clock.server_ms < before - 5_000:
            self._incident("clock_skew", "warning", f"the exchange's time went back "
                           f"{(before - self.clock.server_ms) / 1000:.1f} s (the runner keeps its clock monotonic; "
                           "request signatures are resynced)")
        self.cycles += 1
        self.journal.set_meta("heartbeat", json.dumps({"exchange_ms": now, "wall": time.time(), "cycle": self.cycles}),
                              durable=False)  # liveness only: nothing to keep through a power loss
        if protect.check_kill(self):
            return
        self.reconcile()
        self.guard.check_all(now)
        self.watch.maybe_check()
        for d in self.cfg.deployments:
            if self.stopping.is_set():
                return
            self.step(d, now)
            protect.keep_stop(self, d)
        self.metrics.after_cycle(time.perf_counter() - started)
        self.alerting.after_cycle(now)

    def reconcile(self, snapshot: bool = False) -> int:
        assert self.session is not None and self.journal is not None
        rec = Reconciler(self.cfg, self.journal, self.session)
        new = rec.run(self.clock.now_ms(), snapshot)
        self.drift = rec.drift
        return new

    # --- decisions --------------------------------------------------------------------------------
    def step(self, d: Deployment, now: int) -> None:
        """Decide on every new closed bar of ``d`` (in order) and execute the latest decision."""
        assert self.journal is not None
        if self.journal.blocking_halt(d.name):
            return  # halted (a refused rollback): flat, no decisions
        v, feed = self.versions[d.name], self.feeds[d.name]
        last = self.journal.last_decision(d.name)
        since = None
        if not len(feed.bars):  # (re)start: the history a decision needs, and the bars since the last decision
            start = now - (v.required_history + 2) * v.bar_ms
            since = start if last is None else min(start, int(last["bar_time"]) - (v.required_history + 1) * v.bar_ms)
            feed.keep = max(feed.keep, (now - since) // v.bar_ms + 2)
        for issue in feed.update(now, since):
            self._incident(issue.kind, "warning", issue.message, d.name)
        behind = feed.behind(now)
        if behind >= self.cfg.risk.stale_after_bars:
            self._incident("stale_feed", "blocking", f"{d.symbol} {v.timeframe}: the last closed bar is {behind} "
                           "bar(s) behind the exchange's time: no new orders", d.name)
        else:
            self.journal.resolve_incidents(now, "stale_feed", d.name, "fresh bars again")
        self.guard.observe(d)  # the equity before this cycle's orders, for the drawdown since the version started
        bars = feed.frame()
        if len(bars) < v.required_history:
            return
        times = [int(t) for t in feed.bars.index]
        todo = [t for t in times if last is None or t > int(last["bar_time"])]
        if last is None:
            todo = todo[-1:]  # a fresh deployment decides from the latest closed bar on
        if d.name in self.pending_switch:  # a new version waits for the next bar boundary; no orders meanwhile
            if not todo or not self.watch.handover(d, now, boundary=todo[0]):
                return
            return self.step(d, now)  # the new version decides the bar, from its own history
        new_decisions = [t for t in todo if times.index(t) + 1 >= v.required_history]
        if new_decisions:
            self._bar_seen_at[d.name] = time.perf_counter()
            self.metrics.bars(d.name, len(new_decisions))
        for t in new_decisions:
            window = bars.iloc[: times.index(t) + 1].iloc[-v.required_history:]
            last = self._decide(d, v, t, window, last, now, latest=(t == times[-1]))
        if last is not None and last["exec_state"] in ("pending", "executing") and int(last["bar_time"]) == times[-1]:
            execution.execute(self, d, v, last, now)

    def _decide(self, d: Deployment, v: LoadedVersion, t: int, window: pd.DataFrame, last: dict[str, Any] | None,
                now: int, latest: bool) -> dict[str, Any]:
        assert self.journal is not None
        pos = self.journal.position(d.name, d.base, d.quote)
        price = float(window["close"].iloc[-1])
        # the decision it supersedes, its bar and the decision itself are journaled in one commit
        superseded = int(last["bar_time"]) if last is not None and last["exec_state"] in ("pending", "executing") \
            else None
        fresh = self.is_fresh(d.name)  # flattened, handed over or de-risked since (a restart included)
        if last is None or fresh:  # a first decision (of a version) starts from the position held
            equity = d.capital + float(pos.quote_flow) + float(pos.base) * price
            held = float(pos.base) * price / equity if equity > 0 else 0.0
            last = None
        else:
            held = float(last["target"])
        direction, raw, target = v.decide(window, held)
        late_ms = now - (t + v.bar_ms)
        late = late_ms > v.bar_ms * self.cfg.risk.late_after_pct / 100.0
        # as the backtest: an order only when the target moves (the band held it, or it changed); a decision
        # whose execution did not finish (refused, rejected, superseded) leaves the next one to trade
        settled = last is None or last["exec_state"] in ("done", "unchanged")
        state = "unchanged" if latest and target == held and settled and last is not None else (
            "pending" if latest else "superseded")
        row = {"deployment": d.name, "bar_time": t, "decided_at": now, "decision_price": repr(price),
               "direction": direction, "raw_target": raw, "target": target, "held_before": held,
               "position_qty": str(pos.base), "model": v.model, "version": v.version, "late": int(late),
               "exec_state": state,
               "note": "" if latest else "a newer bar had closed when this one was decided"}
        o, h, lo, c, vol = (float(window[k].iat[-1]) for k in ("open", "high", "low", "close", "volume"))
        # without the fsync: a decision lost with the machine is decided again from the same closed bars, and
        # the order intent that follows it is a durable commit, which takes the decision's WAL frames along
        with self.journal.tx(durable=False) as con:
            if superseded is not None:
                self.journal.set_exec_state(d.name, superseded, "superseded", "a newer bar closed", con=con)
            self.journal.record_bars(d.name, [(t, o, h, lo, c, vol)], con=con)
            self.journal.record_decision(row, con=con)
            if fresh:
                self.journal.set_meta(_fresh_key(d.name), "0", con=con)
        if late:
            self._incident("late_bar", "warning", f"{d.symbol} bar {iso_utc(t)} decided {late_ms / 1000:.0f} s after "
                           "it closed", d.name)
        self._event("decision", deployment=d.name, bar=iso_utc(t), direction=direction, target=target, held=held,
                    version=v.version, late=late)
        if latest and state != "pending":
            self.metrics.decision_latency(d.name, self._bar_seen_at.pop(d.name, None), "no_order")
        return {**row, "order_delta": None}

    # --- journal helpers --------------------------------------------------------------------------
    def _incident(self, kind: str, severity: str, message: str, deployment: str | None = None) -> None:
        if self.journal is not None:
            self.journal.open_incident(self.clock.now_ms(), kind, severity, message, deployment)
        self._event("incident", kind=kind, severity=severity, message=message, deployment=deployment)

    def _event(self, event: str, **fields: Any) -> None:
        log.info(json.dumps({"event": event, "exchange_time": iso_utc(self.clock.now_ms()), **fields}, default=str))


def _fresh_key(deployment: str) -> str:
    return f"fresh:{deployment}"

