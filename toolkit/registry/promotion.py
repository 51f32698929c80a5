"""Promote and roll back: the registry enforces the gate verdict (MLflow 3 aliases).

``promote`` moves alias ``champion`` to a version only when, re-checked at that
moment: the version was evaluated; its verdict passed; the verdict file in the
gates run is byte-identical to what was recorded and hashes to ``gate.verdict_sha``;
the verdict's policy sha equals the sha of the policy *in force* (``$TOOLKIT_POLICY``,
else the shipped default; the caller cannot pass another); the backtest
evidence recomputed from the run's artifacts still hashes to ``evidence.sha256``
and, with the gates' extra evidence, to the verdict's ``evidence_sha``; and the
verdict re-computed from that evidence under the current policy (``evaluate``) is
byte-identical to the stored one, so a hand-edited verdict whose ``verdict_sha``
was recomputed (a plain content hash anyone can redo) is refused. Otherwise
it raises ``PromotionRefused`` and changes nothing in MLflow (the refused attempt
is still written to the audit trail, which is not part of MLflow).

The replaced champion is remembered on the new one (tag
``promotion.previous_champion``); ``rollback`` moves ``champion`` back to it.
Both take a ``registry_snapshot`` first, write the tags, and move alias
``champion`` last; a failure on the way restores every tag and alias from the
snapshot. The promotion-cycle bookkeeping runs after the alias moved: its failure
does not undo the promotion but is reported (``bookkeeping_error`` and the audit row).
Both run under one inter-process lock and append to the audit trail; their
figures (time from registration to promotion, promotion and rollback counts) are
logged by ``toolkit.registry.status.record_cycle``, and ``toolkit.registry.status.status``
reports them.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.backtest.bundle import bundle_sha256
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import PromotionRefused, RegistryError, ToolkitError
from toolkit.registry import adapter
from toolkit.registry.adapter import CANDIDATE, CHAMPION
from toolkit.registry.audit import (
    AuditAttempt,
    AuditEvent,
    AuditLog,
    default_actor,
    registry_lock,
)
from toolkit.registry.status import record_cycle
from toolkit.registry.verdicts import parse_verdict

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "check_promotable",
    "current_policy_sha",
    "default_actor",
    "promote",
    "rollback",
]


def current_policy_sha() -> str:
    """Return the sha256 of the gate policy in force (``$TOOLKIT_POLICY``, else the shipped default)."""
    from toolkit.gates import load_policy

    return str(load_policy(None).sha256())


def _verdict_self_consistent(text: str) -> bool:
    """Return True when a verdict's ``verdict_sha`` matches its canonical content (the gates' rule)."""
    from toolkit.gates import verify_verdict_json

    try:
        return bool(verify_verdict_json(text))
    except (ValueError, TypeError):
        return False


def _evidence_sha(bundle_dir: Path, extras_dir: Path) -> str:
    """Recompute the gates' evidence sha (bundle + extra evidence) from downloaded files."""
    from toolkit.gates import Evidence

    return str(Evidence.read(bundle_dir, extras_dir=extras_dir).sha256())


def _reevaluate(bundle_dir: Path, extras_dir: Path, policy: Any) -> str:
    """Return the canonical verdict JSON the gates compute from the evidence under ``policy``."""
    from toolkit.gates import Evidence, evaluate

    return str(evaluate(Evidence.read(bundle_dir, extras_dir=extras_dir), policy).to_json())


def _check(checks: list[dict[str, Any]], name: str, passed: bool, detail: str) -> bool:
    checks.append({"check": name, "passed": bool(passed), "detail": detail})
    return bool(passed)


def check_promotable(model_name: str, version: str | int) -> dict[str, Any]:
    """Re-check, without changing anything, whether a version may become champion.

    The policy checked against is the one in force (``toolkit.gates.policy.policy_in_force_path``:
    ``$TOOLKIT_POLICY``, else the shipped default); the caller cannot choose it.

    Returns
    -------
    dict with ``eligible``, ``checks`` (check, passed, detail), ``verdict_sha``, ``policy_sha``
    and ``policy`` (name, version, path of the policy in force), ``evidence_sha``.

    Raises
    ------
    ConfigurationError
        Unknown model or version, or the policy in force is missing or invalid.
    """
    from toolkit.gates import load_policy
    from toolkit.gates.policy import policy_in_force_path

    policy_file = policy_in_force_path()
    policy = load_policy(policy_file)
    info = adapter.version_info(model_name, version)
    v, tags = info.version, info.tags
    checks: list[dict[str, Any]] = []
    out: dict[str, Any] = {"model": model_name, "version": v, "checks": checks, "eligible": False,
                           "verdict_sha": tags.get("gate.verdict_sha"), "policy_sha": str(policy.sha256()),
                           "policy": {"name": policy.name, "version": policy.version, "path": str(policy_file)},
                           "evidence_sha": tags.get("gate.evidence_sha")}
    outcome = tags.get("gate.verdict", "not_evaluated")
    evaluated = outcome in ("passed", "failed")
    hint = "" if evaluated else f"; run `toolkit gates {model_name} --version {v}` first"
    if not _check(checks, "evaluated", evaluated, f"gate.verdict is {outcome!r}{hint}"):
        return out
    if not _check(checks, "verdict passed", outcome == "passed", f"gate.verdict is {outcome!r}"):
        return out
    with tempfile.TemporaryDirectory(prefix="toolkit-promote-") as tmp:
        root = Path(tmp)
        try:
            gate_files = adapter.download_gate_artifacts(model_name, v, root / "gates")
        except RegistryError as exc:
            _check(checks, "verdict file", False, str(exc))
            return out
        raw = gate_files.verdict.read_bytes()
        file_sha = hashlib.sha256(raw).hexdigest()
        if not _check(checks, "verdict file", file_sha == tags.get("gate.verdict_file_sha256"),
                      f"sha256 of the stored verdict.json is {file_sha[:12]}, recorded "
                      f"{str(tags.get('gate.verdict_file_sha256'))[:12]}"):
            return out
        try:
            verdict = parse_verdict(raw.decode("utf-8"), source="verdict.json")
        except (ToolkitError, UnicodeDecodeError) as exc:
            _check(checks, "verdict content", False, str(exc))
            return out
        self_ok = _verdict_self_consistent(raw.decode("utf-8"))
        consistent = (verdict.passed is True and self_ok
                      and verdict.verdict_sha == tags.get("gate.verdict_sha")
                      and verdict.policy_sha == tags.get("gate.policy_sha")
                      and verdict.evidence_sha == tags.get("gate.evidence_sha")
                      and (verdict.bundle_sha or tags.get("evidence.sha256")) == tags.get("evidence.sha256"))
        if not _check(checks, "verdict content", consistent,
                      f"verdict.json says passed={verdict.passed}, "
                      f"verdict_sha {verdict.verdict_sha[:12]} "
                      f"({'matches' if self_ok else 'does not match'} its content), "
                      f"tags say {str(tags.get('gate.verdict_sha'))[:12]}"):
            return out
        policy_sha = out["policy_sha"]
        _check(checks, "current policy", policy_sha == verdict.policy_sha,
               f"evaluated under policy {verdict.policy_sha[:12]}, current policy is {policy_sha[:12]}"
               + ("" if policy_sha == verdict.policy_sha else
                  f"; re-run `toolkit gates {model_name} --version {v}`"))
        bundle_dir = root / "evidence"
        try:
            adapter.download_evidence(model_name, v, bundle_dir)
            bundle = bundle_sha256(bundle_dir)
        except (ToolkitError, OSError) as exc:
            _check(checks, "evidence intact", False, f"backtest evidence unreadable: {exc}")
            return out
        if not _check(checks, "evidence intact", bundle == tags.get("evidence.sha256"),
                      f"evidence artifacts hash to {bundle[:12]}, registered "
                      f"{str(tags.get('evidence.sha256'))[:12]}"):
            return out
        try:
            recomputed = _evidence_sha(bundle_dir, gate_files.evidence)
        except (ToolkitError, OSError, ValueError) as exc:
            _check(checks, "evidence matches verdict", False, f"evidence unreadable by the gates: {exc}")
            return out
        if not _check(checks, "evidence matches verdict", recomputed == verdict.evidence_sha,
                      f"evidence hashes to {str(recomputed)[:12]}, "
                      f"verdict was computed on {verdict.evidence_sha[:12]}"):
            return out
        if all(c["passed"] for c in checks):  # only a verdict that passed every integrity check is re-run
            try:
                again = _reevaluate(bundle_dir, gate_files.evidence, policy)
            except (ToolkitError, OSError, ValueError, KeyError, TypeError) as exc:
                again = None
                detail = f"re-evaluation failed: {exc}"
            follows = again is not None and again.encode("utf-8") == raw
            if again is not None:
                detail = ("re-evaluating the evidence under the policy in force reproduces the stored verdict"
                          if follows else
                          "verdict does not follow from the evidence under the policy in force (re-evaluating "
                          "it gives a different verdict)")
            _check(checks, "verdict reproduces", follows, detail)
    champion = adapter.alias_version(model_name, CHAMPION)
    _check(checks, "not already champion", champion != v, f"champion is {champion or 'unset'}")
    out["eligible"] = all(c["passed"] for c in checks)
    return out


def _refusal(checks: list[dict[str, Any]]) -> str:
    return "; ".join(f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]) or "not eligible"


def _policy_note(policy: dict[str, str]) -> str:
    """Return the audit note naming the policy in force (name, version, file)."""
    return f"policy in force: {policy['name']} version {policy['version']} ({policy['path']})"


def promote(model_name: str, version: str | int, reason: str, actor: str | None = None, clock: Clock = SYSTEM_CLOCK,
            audit_path: str | Path | None = None, lock_timeout: float = 120.0) -> dict[str, Any]:
    """Make ``version`` the champion of ``model_name`` if its verdict still holds; audit the attempt.

    The verdict must hold under the policy in force (``$TOOLKIT_POLICY``, else the shipped
    default); its name and version are written in the audit row's ``detail``.

    Raises
    ------
    PromotionRefused
        A check failed (message lists which and why); nothing in MLflow changed.
    ConfigurationError
        Unknown model or version, or an empty reason.
    TemporaryError
        The registry lock was not obtained within ``lock_timeout`` seconds.

    Every attempt that gets past the reason check writes a ``started`` row to the audit trail before
    anything changes, then ``done``, ``refused`` or ``error`` (also when it raised).
    """
    who = actor or default_actor()
    log = AuditLog(audit_path)
    # validate reason and actor before anything else
    AuditEvent(model=model_name, action="promote", outcome="done", actor=who, at="-", reason=reason)
    attempt = AuditAttempt(log, model_name, "promote", who, reason, clock, to_version=str(version).strip() or None)
    try:
        return _promote_locked(attempt, model_name, version, reason, who, clock, lock_timeout)
    except BaseException as exc:
        attempt.fail(exc)
        raise


def _promote_locked(attempt: AuditAttempt, model_name: str, version: str | int, reason: str, who: str, clock: Clock,
                    lock_timeout: float) -> dict[str, Any]:
    log = attempt
    with registry_lock(attempt.log.path, timeout=lock_timeout):
        previous = adapter.alias_version(model_name, CHAMPION)
        result = check_promotable(model_name, version)
        v = result["version"]
        now = clock.now()
        event = AuditEvent(model=model_name, action="promote", outcome="done", actor=who, at=now.isoformat(),
                           reason=reason, from_version=previous, to_version=v,
                           verdict_sha=result["verdict_sha"],
                           policy_sha=result["policy_sha"], detail=_policy_note(result["policy"]))
        if not result["eligible"]:
            why = _refusal(result["checks"])
            log.append(replace(event, outcome="refused", detail=f"{why} [{event.detail}]"))
            raise PromotionRefused(f"promotion of {model_name} version {v} refused: {why}")
        info = adapter.version_info(model_name, v)
        created = pd.Timestamp(info.created_at)
        cycle_hours = (now - created).total_seconds() / 3600.0
        snap = adapter.registry_snapshot(model_name)  # what a failure half-way is rolled back to
        try:
            tags = {"promotion.state": CHAMPION, "promotion.promoted_at": now.isoformat(),
                    "promotion.promoted_by": who, "promotion.reason": reason[:4000],
                    "promotion.previous_champion": previous or "",
                    "promotion.verdict_sha": result["verdict_sha"],
                    "promotion.policy_sha": result["policy_sha"], "promotion.audit_id": event.id,
                    "promotion.cycle_hours": f"{cycle_hours:.6f}"}
            for k, val in tags.items():
                adapter.set_version_tag(model_name, v, k, val)
            if previous is not None:
                adapter.set_version_tag(model_name, previous, "promotion.state", "retired")
            if adapter.alias_version(model_name, CANDIDATE) == v:
                adapter.delete_alias(model_name, CANDIDATE)
            adapter.set_alias(model_name, CHAMPION, v)  # last: the promotion takes effect here
        except Exception as exc:
            restored = adapter.restore_registry_snapshot(model_name, snap)
            log.append(replace(event, outcome="error", detail=f"{str(exc)[:2000]}; {restored} [{event.detail}]"))
            raise RegistryError(f"promotion of {model_name} version {v} failed half-way ({exc}); {restored}; "
                                f"champion is {previous or 'unset'}") from exc
        figures, book_error = record_cycle(model_name, now, "promote", cycle_hours)
        if book_error:
            event = replace(event, detail=f"promotion-cycle bookkeeping failed: {book_error} [{event.detail}]")
        row = log.append(event)
    return {"model": model_name, "promoted": True, "from_version": previous, "to_version": v, "actor": who,
            "at": now.isoformat(), "reason": reason, "verdict_sha": result["verdict_sha"],
            "policy_sha": result["policy_sha"], "policy": result["policy"], "audit_id": row["id"],
            "checks": result["checks"], "bookkeeping_error": book_error, **figures}


def rollback(model_name: str, reason: str, actor: str | None = None, clock: Clock = SYSTEM_CLOCK,
             audit_path: str | Path | None = None, lock_timeout: float = 120.0) -> dict[str, Any]:
    """Move ``champion`` back to the version it replaced (remembered at promote); audit the attempt.

    Raises
    ------
    PromotionRefused
        No champion, or the champion replaced nothing (or that version is gone); nothing changed.

    Audited like ``promote``: a ``started`` row first, then ``done``, ``refused`` or ``error``.
    """
    who = actor or default_actor()
    log = AuditLog(audit_path)
    AuditEvent(model=model_name, action="rollback", outcome="done", actor=who, at="-", reason=reason)
    attempt = AuditAttempt(log, model_name, "rollback", who, reason, clock, to_version=None)
    try:
        return _rollback_locked(attempt, model_name, reason, who, clock, lock_timeout)
    except BaseException as exc:
        attempt.fail(exc)
        raise


def _rollback_locked(attempt: AuditAttempt, model_name: str, reason: str, who: str, clock: Clock,
                     lock_timeout: float) -> dict[str, Any]:
    log = attempt
    adapter.require_model(model_name)
    with registry_lock(attempt.log.path, timeout=lock_timeout):
        current = adapter.alias_version(model_name, CHAMPION)
        now = clock.now()
        target = None
        why = ""
        if current is None:
            why = f"{model_name} has no champion"
        else:
            target = adapter.version_info(model_name, current).tags.get("promotion.previous_champion") or None
            if target is None:
                why = (f"champion version {current} replaced no earlier approved version: "
                       "nothing to roll back to")
            elif target not in adapter.list_versions(model_name):
                why = f"the previous champion, version {target}, no longer exists"
        target_tags = adapter.version_info(model_name, target).tags if target and not why else {}
        event = AuditEvent(model=model_name, action="rollback", outcome="done", actor=who, at=now.isoformat(),
                           reason=reason, from_version=current, to_version=target,
                           verdict_sha=target_tags.get("gate.verdict_sha"),
                           policy_sha=target_tags.get("gate.policy_sha"), detail="")
        if why:
            log.append(replace(event, outcome="refused", detail=why))
            raise PromotionRefused(f"rollback of {model_name} refused: {why}")
        assert current is not None and target is not None
        snap = adapter.registry_snapshot(model_name)  # what a failure half-way is rolled back to
        try:
            for k, val in {"promotion.state": "rolled_back", "rollback.rolled_back_at": now.isoformat(),
                           "rollback.rolled_back_by": who, "rollback.reason": reason[:4000],
                           "rollback.audit_id": event.id}.items():
                adapter.set_version_tag(model_name, current, k, val)
            adapter.set_version_tag(model_name, target, "promotion.state", CHAMPION)
            adapter.set_version_tag(model_name, target, "rollback.restored_at", now.isoformat())
            adapter.set_alias(model_name, CHAMPION, target)  # last: the rollback takes effect here
        except Exception as exc:
            restored = adapter.restore_registry_snapshot(model_name, snap)
            log.append(replace(event, outcome="error", detail=f"{str(exc)[:2000]}; {restored}"))
            raise RegistryError(f"rollback of {model_name} failed half-way ({exc}); {restored}; champion is "
                                f"{current}") from exc
        figures, book_error = record_cycle(model_name, now, "rollback", None)
        if book_error:
            event = replace(event, detail=f"promotion-cycle bookkeeping failed: {book_error}")
        row = log.append(event)
    return {"model": model_name, "rolled_back": True, "from_version": current, "to_version": target,
            "actor": who, "at": now.isoformat(), "reason": reason, "verdict_sha": event.verdict_sha,
            "audit_id": row["id"], "bookkeeping_error": book_error, **figures}
