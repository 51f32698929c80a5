"""Promotion-cycle figures and the registry's status report, per stage (paper, live).

The desk wants faster promotion cycles with fewer rollbacks, and must be able to see
it: every promote and rollback updates per-model counters per stage (registered-model
tags ``registry.<stage>.promotions`` / ``.rollbacks`` / ``.last_cycle_hours``) and logs
them as metrics (``<stage>.promotions.total``, ``<stage>.rollbacks.total``,
``<stage>.promotion.cycle_hours``) of one run per model in experiment ``registry``;
``status`` gathers versions, both aliases (who moved them when), each version's verdict
per stage, why a version is not eligible for live (in plain words), those figures, the
audit trail and warnings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.clock import timestamp_to_ms
from toolkit.errors import RegistryError, ToolkitError
from toolkit.registry import adapter
from toolkit.registry.adapter import CHAMPION, PAPER, STAGE_ALIAS
from toolkit.registry.audit import AuditLog
from toolkit.registry.verdicts import gate_tag, holder_failed_tag

__all__ = ["REGISTRY_EXPERIMENT", "live_blockers", "record_cycle", "status"]

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


def _log_cycle(model_name: str, now: pd.Timestamp, action: str, stage: str,
               cycle_hours: float | None) -> dict[str, Any]:
    """Count the action on the model's tags and log the stage's cycle figures as metrics of its registry run."""
    tags = adapter.model_tags(model_name)
    promotions = int(tags.get(f"registry.{stage}.promotions", 0)) + (action == "promote")
    rollbacks = int(tags.get(f"registry.{stage}.rollbacks", 0)) + (action == "rollback")
    run_id = tags.get("registry.run_id") or _registry_run(model_name)
    ts = timestamp_to_ms(now)
    step = promotions + rollbacks
    adapter.log_metric(run_id, f"{stage}.promotions.total", float(promotions), timestamp=ts, step=step)
    adapter.log_metric(run_id, f"{stage}.rollbacks.total", float(rollbacks), timestamp=ts, step=step)
    new_tags = {f"registry.{stage}.promotions": str(promotions), f"registry.{stage}.rollbacks": str(rollbacks),
                "registry.run_id": run_id}
    if cycle_hours is not None:
        adapter.log_metric(run_id, f"{stage}.promotion.cycle_hours", cycle_hours, timestamp=ts, step=promotions)
        new_tags[f"registry.{stage}.last_cycle_hours"] = f"{cycle_hours:.6f}"
    for k, val in new_tags.items():
        adapter.set_model_tag(model_name, k, val)
    return {"promotions": promotions, "rollbacks": rollbacks, "cycle_hours": cycle_hours,
            "registry_run_id": run_id}


def record_cycle(model_name: str, now: pd.Timestamp, action: str, stage: str,
                 cycle_hours: float | None) -> tuple[dict[str, Any], str | None]:
    """Log the cycle figures after the alias moved; a failure is returned, never raised (the move stands)."""
    try:
        return _log_cycle(model_name, now, action, stage, cycle_hours), None
    except Exception as exc:
        return ({"promotions": None, "rollbacks": None, "cycle_hours": cycle_hours, "registry_run_id": None},
                f"{type(exc).__name__}: {exc}"[:2000])


def _float(text: str | None) -> float | None:
    return float(text) if text else None


def _stage_rows(t: dict[str, str], stage: str) -> tuple[dict[str, Any], dict[str, Any]]:
    g = {"verdict": t.get(gate_tag(stage, "verdict"), "not_evaluated"),
         "policy_sha": t.get(gate_tag(stage, "policy_sha")), "evidence_sha": t.get(gate_tag(stage, "evidence_sha")),
         "verdict_sha": t.get(gate_tag(stage, "verdict_sha")), "evaluated_at": t.get(gate_tag(stage, "evaluated_at")),
         "run_id": t.get(gate_tag(stage, "run_id")),
         "failed": [x for x in t.get(gate_tag(stage, "failed"), "").split(",") if x],
         "why": t.get(gate_tag(stage, "why")) or None,
         "holder_failed_reevaluation": t.get(holder_failed_tag(stage)) == "true"}
    p = {"state": t.get(f"promotion.{stage}.state"), "promoted_at": t.get(f"promotion.{stage}.promoted_at"),
         "promoted_by": t.get(f"promotion.{stage}.promoted_by"), "reason": t.get(f"promotion.{stage}.reason"),
         "previous": t.get(f"promotion.{stage}.previous") or None,
         "cycle_hours": _float(t.get(f"promotion.{stage}.cycle_hours")),
         "rolled_back_at": t.get(f"rollback.{stage}.rolled_back_at"),
         "rolled_back_by": t.get(f"rollback.{stage}.rolled_back_by"),
         "rollback_reason": t.get(f"rollback.{stage}.reason")}
    return g, p


def _version_row(model_name: str, v: str) -> dict[str, Any]:
    info = adapter.version_info(model_name, v)
    t = dict(info.tags)
    rows = {stage: _stage_rows(t, stage) for stage in STAGE_ALIAS}
    return {
        "version": v, "created_at": info.created_at, "run_id": info.run_id, "aliases": list(info.aliases),
        "strategy_type": t.get("strategy.type"), "evidence_sha": t.get("evidence.sha256"),
        "gate": {stage: g for stage, (g, _) in rows.items()},
        "promotion": {stage: p for stage, (_, p) in rows.items()},
    }


def live_blockers(row: dict[str, Any], live_policy_sha: str | None) -> list[str]:
    """Return why a version (a row of ``status``) cannot be promoted to live, in plain words (empty: nothing known).

    Read from the tags only; ``toolkit promote --stage live`` re-checks everything, evidence included.
    """
    if CHAMPION in row["aliases"]:
        return []
    out = []
    paper = row["promotion"]["paper"]["state"]
    if PAPER not in row["aliases"] and paper not in ("current", "retired"):
        out.append("rolled back from paper" if paper == "rolled_back" else
                   "never traded on paper: promote it to paper first")
    g = row["gate"]["live"]
    if g["verdict"] == "not_evaluated":
        out.append("not evaluated under the live policy yet")
    elif g["verdict"] == "failed":
        out += (g["why"] or "").splitlines() or [f"the live gates failed ({', '.join(g['failed'])})"]
    elif live_policy_sha is not None and g["policy_sha"] != live_policy_sha:
        out.append("evaluated under another live policy than the one in force: run the live gates again")
    return out


def _holder(versions: list[dict[str, Any]], alias: str, stage: str) -> dict[str, Any] | None:
    for r in versions:
        if alias in r["aliases"]:
            p = r["promotion"][stage]
            return {"version": r["version"], "promoted_at": p["promoted_at"], "promoted_by": p["promoted_by"],
                    "reason": p["reason"]}
    return None


def _latest_verdicts(versions: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in STAGE_ALIAS:
        done = [r for r in versions if r["gate"][stage]["evaluated_at"]]
        if not done:
            out[stage] = None
            continue
        r = max(done, key=lambda x: (pd.Timestamp(x["gate"][stage]["evaluated_at"]), int(x["version"])))
        g = r["gate"][stage]
        out[stage] = {"version": r["version"], "verdict": g["verdict"], "evaluated_at": g["evaluated_at"],
                      "verdict_sha": g["verdict_sha"], "failed": g["failed"], "why": g["why"]}
    return out


def _live_policy_sha() -> tuple[str | None, str | None]:
    from toolkit.gates import load_policy

    try:
        return str(load_policy(None, stage="live").sha256()), None
    except ToolkitError as exc:
        return None, f"the live policy in force cannot be read: {exc}"


def status(model_name: str, audit_path: str | Path | None = None, audit_limit: int = 50) -> dict[str, Any]:
    """Return versions, both aliases, verdicts per stage, live eligibility, cycle figures per stage and warnings.

    ``warnings`` holds one line per alias whose holder failed its latest re-evaluation at that stage.
    ``live`` says, for the version holding ``paper`` (else the newest version), whether it may go live
    and if not why, in plain words.
    """
    aliases = adapter.model_aliases(model_name)
    tags = adapter.model_tags(model_name)
    versions = [_version_row(model_name, v) for v in adapter.list_versions(model_name)]
    log = AuditLog(audit_path)  # the shared table when the desk has one, else the local file
    try:
        n = log.verify()
        chain = f"ok ({n} rows)"
    except RegistryError as exc:
        chain = f"broken: {exc}"
    events = log.events(model_name)
    warnings = []
    for stage, alias in STAGE_ALIAS.items():
        for r in versions:
            g = r["gate"][stage]
            if alias in r["aliases"] and g["holder_failed_reevaluation"]:
                warnings.append(f"{alias} version {r['version']} FAILED its latest {stage} gate re-evaluation "
                                f"(verdict {str(g['verdict_sha'])[:12]}, evaluated {g['evaluated_at']}); "
                                f"it still holds {alias}: re-run the gates or "
                                f"`toolkit rollback {model_name} --stage {stage}`")
    live_sha, policy_warning = _live_policy_sha()
    if policy_warning:
        warnings.append(policy_warning)
    for r in versions:
        r["live_blockers"] = live_blockers(r, live_sha)
    subject = next((r for r in versions if PAPER in r["aliases"]), versions[-1] if versions else None)
    live = None if subject is None else {
        "version": subject["version"], "eligible": not subject["live_blockers"], "why_not": subject["live_blockers"]}
    metrics: dict[str, Any] = {"registry_run_id": tags.get("registry.run_id")}
    for stage in STAGE_ALIAS:
        cycles = [r["promotion"][stage]["cycle_hours"] for r in versions
                  if r["promotion"][stage]["cycle_hours"] is not None]
        metrics[stage] = {"promotions": int(tags.get(f"registry.{stage}.promotions", 0)),
                          "rollbacks": int(tags.get(f"registry.{stage}.rollbacks", 0)),
                          "last_cycle_hours": _float(tags.get(f"registry.{stage}.last_cycle_hours")),
                          "median_cycle_hours": float(pd.Series(cycles).median()) if cycles else None}
    return {
        "model": model_name,
        "aliases": aliases,
        "paper": _holder(versions, PAPER, "paper"),
        "champion": _holder(versions, CHAMPION, "live"),
        "latest_verdicts": _latest_verdicts(versions),
        "live": live,
        "versions": versions,
        "metrics": metrics,
        "audit": events[-audit_limit:] if audit_limit else events,
        "audit_path": str(log.path),
        "audit_chain": chain,
        "warnings": warnings,
    }
