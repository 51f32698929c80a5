"""The aliases re-checked on a schedule, and the handover to a new version at a bar boundary.

Every ``poll.alias_check_seconds`` the runner reads each deployment's alias. When it names
another version than the one trading:

* the new version is checked as at start (``runner.version.load_version``: a passing verdict
  for the stage, and the audit trail's last completed promotion or rollback at that stage
  names it). An alias moved any other way (set by hand in the MLflow UI) opens an
  ``alias_unaudited`` incident and the runner keeps the version it trades; the incident is
  resolved when the alias points at that version again.
* a checked version waits for the next **bar boundary**: from then on the deployment sends
  no new order; when the next bar has closed, the orders whose outcome is unknown are settled
  (the handover waits for them), open orders are cancelled, the decision being executed is
  superseded, the journal is reconciled, the switch is journaled in ``version_switches``
  (with the first bar the new version decides, ``boundary``), and the new version decides
  that bar starting from the position actually held.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from runner import failpoints
from runner.config import Deployment
from runner.feed import BarFeed
from runner.journal import OPEN_STATES
from runner.reconcile import Reconciler
from runner.version import load_version, resolve_version
from toolkit.errors import ConfigurationError, ToolkitError

if TYPE_CHECKING:
    from runner.engine import Runner

__all__ = ["AliasWatch"]


class AliasWatch:
    """Re-reads the aliases on a schedule; a moved alias becomes a pending handover (or an incident)."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner
        self._last = time.monotonic()

    def mark_checked(self) -> None:
        self._last = time.monotonic()

    def maybe_check(self) -> None:
        if time.monotonic() - self._last >= self.r.cfg.poll.alias_check_seconds:
            self.check()

    def check(self) -> None:
        """Compare every deployment's alias with the version it trades (registry errors: an incident, no switch)."""
        from toolkit.registry import adapter

        self._last = time.monotonic()
        r = self.r
        now = r.clock.now_ms()
        for i, d in enumerate(r.cfg.deployments):
            if d.name not in r.versions:
                continue
            running = r.versions[d.name].version
            try:
                current = adapter.alias_version(d.model, d.alias)
            except ToolkitError as exc:
                r._incident("registry_unreachable", "warning", f"{d.model}@{d.alias}: {exc}", d.name)
                continue
            assert r.journal is not None
            r.journal.resolve_incidents(now, "registry_unreachable", d.name, "the registry answered again")
            pending = r.pending_switch.get(d.name)
            if current == running:
                if pending is not None:
                    del r.pending_switch[d.name]
                    r._event("switch_cancelled", deployment=d.name, version=running,
                             note=f"the alias is back on version {running} before the bar boundary")
                r.journal.resolve_incidents(now, "alias_unaudited", d.name,
                                            f"{d.alias} names version {running} again")
                self.recheck(d, i, running, now)
                continue
            if pending is not None and pending[0].version == current:
                continue
            try:
                loaded = load_version(d.model, d.alias, d.symbol, f"deployments[{i}]")
            except ConfigurationError as exc:
                r._incident("alias_unaudited", "warning",
                            f"{d.model}@{d.alias} moved from version {running} to {current} and is refused: {exc}. "
                            f"The runner keeps trading version {running}.", d.name)
                continue
            except ToolkitError as exc:
                r._incident("registry_unreachable", "warning", f"{d.model}@{d.alias}: {exc}", d.name)
                continue
            if loaded.version == running:
                continue
            reason = _audited_reason(d, loaded.version)
            r.pending_switch[d.name] = (loaded, reason)
            r._event("switch_pending", deployment=d.name, from_version=running, to_version=loaded.version,
                     reason=reason, note="no new orders until the next bar boundary")

    def recheck(self, d: Deployment, i: int, running: str, now: int) -> None:
        """Check the running version's verdict and promotion again, as at start.

        A verdict that no longer holds (a failed re-evaluation flagged the holder, the stage's policy in
        force changed, the stored verdict was altered) or a promotion the audit trail no longer names
        opens a blocking ``verdict_invalid`` incident: no new orders for the deployment, its position kept,
        until the version re-checks (re-gated under the policy in force) or another version takes over.
        """
        r = self.r
        assert r.journal is not None
        try:
            resolve_version(d.model, d.alias, f"deployments[{i}]")
        except ConfigurationError as exc:
            r._incident("verdict_invalid", "blocking",
                        f"{d.model} version {running} no longer re-checks at {d.stage}: {exc}. No new orders for "
                        f"{d.name}; its position is kept (toolkit status {d.model}; re-gate it, or toolkit rollback "
                        f"{d.model} --stage {d.stage})", d.name)
        except ToolkitError as exc:
            r._incident("registry_unreachable", "warning", f"{d.model}@{d.alias}: {exc}", d.name)
        else:
            r.journal.resolve_incidents(now, "verdict_invalid", d.name, f"version {running} re-checks again")

    def handover(self, d: Deployment, now: int, boundary: int | None) -> bool:
        """Hand ``d`` over to its pending version; return False when an order's outcome is still unknown."""
        with failpoints.scope("handover"):
            return self._handover(d, now, boundary)

    def _handover(self, d: Deployment, now: int, boundary: int | None) -> bool:
        r = self.r
        assert r.journal is not None and r.session is not None
        from runner import protect

        loaded, reason = r.pending_switch[d.name]
        failpoints.hit("handover_begin")
        rec = Reconciler(r.cfg, r.journal, r.session)
        rec.resolve_pending(now)
        protect.cancel_open(r, d)
        if r.journal.orders(d.name, states=OPEN_STATES):
            r._event("switch_waiting", deployment=d.name, note="an order's outcome is unknown: settled first")
            return False
        last = r.journal.last_decision(d.name)
        if last is not None and last["exec_state"] in ("pending", "executing"):
            r.journal.set_exec_state(d.name, int(last["bar_time"]), "superseded",
                                     f"handover to version {loaded.version}")
        r.reconcile()
        failpoints.hit("handover_settled")
        old = r.versions[d.name].version
        r.journal.record_switch(now, d.name, d.model, d.alias, old, loaded.version, reason, boundary)
        failpoints.hit("handover_done")
        r.versions[d.name] = loaded
        r.alerting.version_changed(d)  # the new version's regime map and drawdown limit
        r.feeds[d.name] = BarFeed(r.session, d.symbol, loaded.timeframe, loaded.bar_ms,
                                  keep=loaded.required_history + 5)
        r.mark_fresh(d.name)
        del r.pending_switch[d.name]
        r._event("version", deployment=d.name, model=d.model, alias=d.alias, version=loaded.version, previous=old,
                 reason=reason, boundary=None if boundary is None else _iso(boundary))
        return True


def _audited_reason(d: Deployment, version: str) -> str:
    """Return what moved the alias to ``version``, from the audit trail (``promote by tests: reason``)."""
    from toolkit.registry.audit import AuditLog

    done = [e for e in AuditLog(None).events(d.model)
            if e["stage"] == d.stage and e["outcome"] == "done" and e["action"] in ("promote", "rollback")]
    if done and str(done[-1]["to_version"]) == version:
        e = done[-1]
        return f"{e['action']} by {e['actor']}: {e['reason']}"[:500]
    return "alias moved"


def _iso(ms: int) -> str:
    import pandas as pd

    return pd.Timestamp(ms, unit="ms", tz="UTC").isoformat()
