"""Promotion-cycle figures and the registry's status report.

The desk wants faster promotion cycles with fewer rollbacks, and must be able to see
it: every promote and rollback updates per-model counters (registered-model tags) and
logs them as metrics of one run per model in experiment ``registry``; ``status``
gathers versions, aliases, verdicts, who promoted what when, those figures, the audit
trail and warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.clock import timestamp_to_ms
from toolkit.errors import RegistryError
from toolkit.registry import adapter
from toolkit.registry.adapter import CANDIDATE, CHAMPION
from toolkit.registry.audit import AuditLog, default_audit_path
from toolkit.registry.verdicts import CHAMPION_FAILED_TAG

__all__ = ["REGISTRY_EXPERIMENT", "record_cycle", "status"]

REGISTRY_EXPERIMENT = "registry"


def _registry_run(model_name: str) -> str:
    exp = adapter.ensure_experiment(REGISTRY_EXPERIMENT)
    found = adapter.find_runs(exp, f"tags.model = '{model_name}'", max_results=1,
                              order_by=["attributes.start_time ASC"])
    if found:
        return found[0]
    run_id = adapter.create_run(exp, f"{model_name} promotion cycle", {"model": model_name, "toolkit.kind": "registry"})
    adapter.end_run(run_id, "FINISHED")
    return run_id


def _log_cycle(model_name: str, now: pd.Timestamp, action: str, cycle_hours: float | None) -> dict[str, Any]:
    """Count the action on the model's tags and log the cycle figures as metrics of its registry run."""
    tags = adapter.model_tags(model_name)
    promotions = int(tags.get("registry.promotions", 0)) + (action == "promote")
    rollbacks = int(tags.get("registry.rollbacks", 0)) + (action == "rollback")
    run_id = tags.get("registry.run_id") or _registry_run(model_name)
    ts = timestamp_to_ms(now)
    step = promotions + rollbacks
    adapter.log_metric(run_id, "promotions.total", float(promotions), timestamp=ts, step=step)
    adapter.log_metric(run_id, "rollbacks.total", float(rollbacks), timestamp=ts, step=step)
    new_tags = {"registry.promotions": str(promotions), "registry.rollbacks": str(rollbacks),
                "registry.run_id": run_id}
    if cycle_hours is not None:
        adapter.log_metric(run_id, "promotion.cycle_hours", cycle_hours, timestamp=ts, step=promotions)
        new_tags["registry.last_cycle_hours"] = f"{cycle_hours:.6f}"
    for k, val in new_tags.items():
        adapter.set_model_tag(model_name, k, val)
    return {"promotions": promotions, "rollbacks": rollbacks, "cycle_hours": cycle_hours,
            "registry_run_id": run_id}


def record_cycle(model_name: str, now: pd.Timestamp, action: str,
                 cycle_hours: float | None) -> tuple[dict[str, Any], str | None]:
    """Log the cycle figures after the alias moved; a failure is returned, never raised (the move stands)."""
    try:
        return _log_cycle(model_name, now, action, cycle_hours), None
    except Exception as exc:
        return ({"promotions": None, "rollbacks": None, "cycle_hours": cycle_hours, "registry_run_id": None},
                f"{type(exc).__name__}: {exc}"[:2000])


def _float(text: str | None) -> float | None:
    return float(text) if text else None


def _version_row(model_name: str, v: str) -> dict[str, Any]:
    info = adapter.version_info(model_name, v)
    t = info.tags
    return {
        "version": v, "created_at": info.created_at, "run_id": info.run_id, "aliases": list(info.aliases),
        "strategy_type": t.get("strategy.type"), "evidence_sha": t.get("evidence.sha256"),
        "gate": {"verdict": t.get("gate.verdict", "not_evaluated"), "policy_sha": t.get("gate.policy_sha"),
                 "evidence_sha": t.get("gate.evidence_sha"), "verdict_sha": t.get("gate.verdict_sha"),
                 "evaluated_at": t.get("gate.evaluated_at"), "run_id": t.get("gate.run_id"),
                 "champion_failed_reevaluation": t.get(CHAMPION_FAILED_TAG) == "true"},
        "promotion": {"state": t.get("promotion.state"), "promoted_at": t.get("promotion.promoted_at"),
                      "promoted_by": t.get("promotion.promoted_by"), "reason": t.get("promotion.reason"),
                      "previous_champion": t.get("promotion.previous_champion") or None,
                      "cycle_hours": _float(t.get("promotion.cycle_hours")),
                      "rolled_back_at": t.get("rollback.rolled_back_at"),
                      "rolled_back_by": t.get("rollback.rolled_back_by"),
                      "rollback_reason": t.get("rollback.reason")},
    }


def status(model_name: str, audit_path: str | Path | None = None, audit_limit: int = 50) -> dict[str, Any]:
    """Return versions, aliases, verdicts, who promoted what when, the promotion-cycle figures and warnings.

    ``warnings`` holds one line when the champion failed its latest gate re-evaluation.
    """
    aliases = adapter.model_aliases(model_name)
    tags = adapter.model_tags(model_name)
    versions = [_version_row(model_name, v) for v in adapter.list_versions(model_name)]
    log = AuditLog(audit_path if audit_path is not None else default_audit_path())
    try:
        n = log.verify()
        chain = f"ok ({n} rows)"
    except RegistryError as exc:
        chain = f"broken: {exc}"
    cycles = [r["promotion"]["cycle_hours"] for r in versions if r["promotion"]["cycle_hours"] is not None]
    events = log.events(model_name)
    warnings = []
    champion = aliases.get(CHAMPION)
    for r in versions:
        if r["version"] == champion and r["gate"]["champion_failed_reevaluation"]:
            warnings.append(f"champion version {champion} FAILED its latest gate re-evaluation "
                            f"(verdict {str(r['gate']['verdict_sha'])[:12]}, evaluated {r['gate']['evaluated_at']}); "
                            f"it is still champion: re-run the gates or `toolkit rollback {model_name}`")
    return {
        "model": model_name,
        "aliases": aliases,
        "champion": aliases.get(CHAMPION),
        "candidate": aliases.get(CANDIDATE),
        "versions": versions,
        "metrics": {"promotions": int(tags.get("registry.promotions", 0)),
                    "rollbacks": int(tags.get("registry.rollbacks", 0)),
                    "last_cycle_hours": float(tags["registry.last_cycle_hours"])
                    if tags.get("registry.last_cycle_hours") else None,
                    "median_cycle_hours": float(pd.Series(cycles).median()) if cycles else None,
                    "registry_run_id": tags.get("registry.run_id")},
        "audit": events[-audit_limit:] if audit_limit else events,
        "audit_path": str(log.path),
        "audit_chain": chain,
        "warnings": warnings,
    }
