"""Automatic rollback: a version that misbehaves live is withdrawn through the registry's own rollback.

Checked every cycle, per deployment, over what happened **since the version started trading**
(its last ``version_switches`` row):

* live drawdown — equity (capital + journaled quote flow + position at the last closed bar)
  below its peak by more than the stage policy's ``capital.max_drawdown_pct`` (or the tighter
  ``rollback.max_drawdown_pct`` of the config);
* repeated rejections — ``rollback.max_rejections`` of its orders rejected by the exchange;
* a reconciliation that cannot be resolved — a blocking reconciliation incident
  (``balance_drift``, ``foreign_fill``, ``foreign_order``) still open after
  ``rollback.unresolved_cycles`` cycles.

Then the alias goes back to the previous approved version through
``toolkit.registry.promotion.rollback`` — the code behind ``toolkit rollback``: audited, the
reason recorded, actor ``runner:<deployment>`` — an ``auto_rollback`` incident is opened,
the position is flattened (``rollback.action = "flatten"``) or kept for the restored version
(``"handover"``), and the restored version takes over at the next bar boundary. A rollback
the registry refuses (no previous version) flattens the deployment and halts it (a ``halt``
incident of that deployment: no decisions, no orders until ``runner resolve``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from runner import failpoints
from runner.config import Deployment
from toolkit.errors import ConfigurationError, PromotionRefused, ToolkitError

if TYPE_CHECKING:
    from runner.engine import Runner

__all__ = ["RECONCILIATION_KINDS", "RollbackGuard"]

RECONCILIATION_KINDS = ("balance_drift", "foreign_fill", "foreign_order")
_FLATTEN_OWED = "rollback_flatten_owed:"  # journal meta: the version whose rollback's flatten is not done yet


class RollbackGuard:
    """The automatic-rollback triggers of a runner's deployments, and the rollback itself."""

    def __init__(self, runner: Runner) -> None:
        self.r = runner
        self._first_seen: dict[int, int] = {}  # blocking reconciliation incident id -> the cycle it was first seen
        self._limits: dict[str, tuple[float, str]] = {}
        self.equity: dict[str, Decimal] = {}
        self.drawdown_pct: dict[str, float] = {}

    def limit(self, d: Deployment) -> tuple[float, str]:
        """Return the drawdown limit in % and where it comes from (the stage policy, or the tighter config)."""
        if d.stage not in self._limits:
            from toolkit.gates.policy import load_policy

            pct, source = float(load_policy(None, stage=d.stage).capital.max_drawdown_pct), f"{d.stage} policy"
            own = self.r.cfg.rollback.max_drawdown_pct
            if own is not None and own < pct:
                pct, source = own, "rollback.max_drawdown_pct"
            self._limits[d.stage] = (pct, source)
        return self._limits[d.stage]

    def check_all(self, now: int) -> None:
        r = self.r
        assert r.journal is not None
        for d in r.cfg.deployments:
            if d.name not in r.versions or d.name in r.pending_switch or r.journal.blocking_halt(d.name):
                continue
            self.resume_flatten(d)
            why = self.trigger(d)
            if why and r.cfg.rollback.enabled:
                self.roll_back(d, why, now)

    def resume_flatten(self, d: Deployment) -> None:
        """Finish the flatten of a rollback a crash interrupted (journaled before the registry was asked).

        The alias moved (the version trading is not the one rolled back): the rollback was done and
        its flatten is owed; it did not move: the rollback never happened and the trigger decides again.
        """
        from runner import protect

        r = self.r
        assert r.journal is not None
        owed = r.journal.get_meta(_FLATTEN_OWED + d.name)
        if not owed:
            return
        if r.versions[d.name].version != owed:
            r._event("rollback_resumed", deployment=d.name, from_version=owed, note="flattening after a restart")
            protect.flatten(r, d, f"auto-rollback of version {owed} (resumed after a restart)")
        r.journal.set_meta(_FLATTEN_OWED + d.name, "")

    def trigger(self, d: Deployment) -> str:
        """Return why ``d``'s version must be rolled back ('' when it need not); keep its equity figures."""
        r = self.r
        assert r.journal is not None
        v = r.versions[d.name]
        switches = r.journal.switches(d.name)
        started = int(switches[-1]["at"]) if switches else 0
        seen = self.observe(d)
        if seen is not None:
            dd, peak = seen
            limit, source = self.limit(d)
            if dd > limit:
                return (f"live drawdown {dd:.4f} % from the peak equity {peak:.2f} since version {v.version} started "
                        f"trading, beyond the limit {limit:g} % ({source})")
        rejected = r.journal.rows("SELECT COUNT(*) AS n FROM orders WHERE deployment = ? AND version = ? "
                                  "AND state = 'rejected' AND intent_at >= ?", (d.name, v.version, started))[0]["n"]
        if rejected >= r.cfg.rollback.max_rejections:
            return f"{rejected} orders of version {v.version} rejected by the exchange"
        for inc in r.journal.blocking(d.name):
            if inc["kind"] not in RECONCILIATION_KINDS:
                continue
            first = self._first_seen.setdefault(int(inc["id"]), r.cycles)
            if r.cycles - first >= r.cfg.rollback.unresolved_cycles:
                return (f"reconciliation incident {inc['id']} ({inc['kind']}) unresolved after {r.cycles - first} "
                        f"cycles: {inc['message'][:300]}")
        return ""

    def observe(self, d: Deployment) -> tuple[float, Decimal] | None:
        """Mark ``d``'s equity at the last closed bar against its peak since the version started; return
        (drawdown %, peak), None before any bar. The loop calls it before any order of a cycle too, so the
        peak includes the equity before the version's first order."""
        r = self.r
        assert r.journal is not None
        feed = r.feeds.get(d.name)
        if feed is None or not len(feed.bars):
            return None
        switches = r.journal.switches(d.name)
        seq = int(switches[-1]["seq"]) if switches else 0
        price = Decimal(repr(float(feed.bars["close"].iloc[-1])))
        pos = r.journal.position(d.name, d.base, d.quote)
        equity = Decimal(str(d.capital)) + pos.quote_flow + pos.base * price
        key = f"peak_equity:{d.name}:{seq}"
        stored = r.journal.get_meta(key)
        peak = equity if stored is None else max(Decimal(stored), equity)
        if stored is None or peak != Decimal(stored):
            r.journal.set_meta(key, str(peak))
        dd = float((peak - equity) / peak * 100) if peak > 0 else 0.0
        self.equity[d.name], self.drawdown_pct[d.name] = equity, dd
        return dd, peak

    def roll_back(self, d: Deployment, why: str, now: int) -> None:
        """Move ``d``'s alias back through the registry's audited rollback; flatten or hand over per config."""
        with failpoints.scope("rollback"):
            self._roll_back(d, why, now)

    def _roll_back(self, d: Deployment, why: str, now: int) -> None:
        from runner import protect
        from runner.version import load_version
        from toolkit.registry.promotion import rollback

        r = self.r
        assert r.journal is not None
        v = r.versions[d.name]
        r._incident("auto_rollback", "warning", f"{d.model}@{d.alias} version {v.version}: {why}", d.name)
        failpoints.hit("rollback_begin")
        if r.cfg.rollback.action == "flatten":  # owed from the registry's rollback on: a restart finishes it
            r.journal.set_meta(_FLATTEN_OWED + d.name, v.version)
        try:
            done = rollback(d.model, d.stage, reason=f"runner auto-rollback of deployment {d.name}: {why}",
                            actor=f"runner:{d.name}")
        except PromotionRefused as exc:
            r._incident("rollback_refused", "halt", f"{exc}. Deployment {d.name} is flattened and halted until an "
                        "operator resolves this incident", d.name)
            protect.flatten(r, d, f"rollback refused: {why}")
            r.journal.set_meta(_FLATTEN_OWED + d.name, "")
            return
        except ToolkitError as exc:  # the registry is unreachable or locked: tried again next cycle
            r._incident("rollback_failed", "warning", f"{d.model}@{d.alias}: {exc}", d.name)
            return
        failpoints.hit("rollback_done")
        r._event("rolled_back", deployment=d.name, model=d.model, alias=d.alias, from_version=done["from_version"],
                 to_version=done["to_version"], audit_id=done["audit_id"], reason=why)
        if r.cfg.rollback.action == "flatten":
            protect.flatten(r, d, f"auto-rollback: {why}")
            r.journal.set_meta(_FLATTEN_OWED + d.name, "")
        i = r.cfg.deployments.index(d)
        try:
            loaded = load_version(d.model, d.alias, d.symbol, f"deployments[{i}]")
        except (ConfigurationError, ToolkitError) as exc:  # the restored version does not check: stay flat
            r._incident("rollback_refused", "halt", f"the restored version does not check: {exc}", d.name)
            protect.flatten(r, d, "the restored version does not check")
            return
        r.pending_switch[d.name] = (loaded, f"auto-rollback by the runner: {why}"[:500])
