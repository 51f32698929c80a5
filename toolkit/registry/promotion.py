"""Promote and roll back per stage: the registry enforces the gate verdict (MLflow 3 aliases).

Two stages, each with its alias and its policy in force
(``toolkit.gates.policy.policy_in_force_path(stage)``: ``$TOOLKIT_POLICY_PAPER`` /
``$TOOLKIT_POLICY_LIVE``, else the shipped file; the caller cannot pass another):
``paper`` moves alias ``paper``, ``live`` moves alias ``champion``. A version goes
paper -> live, never straight to live: promotion to live requires that the version
holds alias ``paper`` or held it (replaced by a later paper version, not rolled back).

``promote`` moves the stage's alias to a version only when, re-checked at that moment:
the version was evaluated at that stage; its verdict passed; the verdict file in the
gates run is byte-identical to what was recorded and hashes to ``gate.<stage>.verdict_sha``;
it names that stage; the verdict's policy sha equals the sha of the stage's policy in
force; the backtest evidence recomputed from the run's artifacts still hashes to
``evidence.sha256`` and, with the gates' extra evidence, to the verdict's ``evidence_sha``;
the verdict re-computed from that evidence under the policy in force (``evaluate``) is
byte-identical to the stored one, so a hand-edited verdict whose ``verdict_sha`` was
recomputed (a plain content hash anyone can redo) is refused; and the measured evidence
itself re-derives from the bundle (``toolkit.gates.rederive``: every deterministic figure
equal, the registry's trial count recounted, the host-dependent latency samples
plausible), so an edited ``gate_evidence.json`` with a verdict honestly recomputed from
it is refused too, naming the forged field. Otherwise it raises ``PromotionRefused``
and changes nothing in MLflow (the refused attempt is still written to the audit
trail, which is not part of MLflow).

The replaced holder of the alias is remembered on the new one (tag
``promotion.<stage>.previous``); ``rollback`` moves the stage's alias back to it.
Both take a ``registry_snapshot`` first, write the tags, and move the alias last; a
failure on the way restores every tag and alias from the snapshot. The promotion-cycle
bookkeeping runs after the alias moved: its failure does not undo the promotion but is
reported (``bookkeeping_error`` and the audit row). Both run under an inter-process
lock (``toolkit.registry.audit.promotion_lock``: a file lock on local files, a PostgreSQL advisory
lock per model and stage on the desk's shared database, which holds across hosts) and
append to the audit trail (the stage in every row); their figures (time from registration
to promotion, promotion and rollback counts, per stage) are logged by
``toolkit.registry.status.record_cycle``, and ``toolkit.registry.status.status`` reports them.

Tags a promotion writes on the version (``<stage>`` is ``paper`` or ``live``):
``promotion.<stage>.state`` (``current``, then ``retired`` when replaced or
``rolled_back``), ``.promoted_at``, ``.promoted_by``, ``.reason``, ``.previous``,
``.verdict_sha``, ``.policy_sha``, ``.audit_id``, ``.cycle_hours``; a rollback writes
``rollback.<stage>.rolled_back_at``, ``.rolled_back_by``, ``.reason``, ``.audit_id`` on
the version it withdraws and ``rollback.<stage>.restored_at`` on the one it restores.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.backtest.bundle import bundle_sha256
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import AccessDenied, PromotionRefused, RegistryError, ToolkitError
from toolkit.registry import adapter
from toolkit.registry.adapter import CHAMPION, PAPER, STAGE_ALIAS
from toolkit.registry.audit import (
    AuditAttempt,
    AuditEvent,
    AuditLog,
    default_actor,
    promotion_lock,
)
from toolkit.registry.status import record_cycle
from toolkit.registry.verdicts import gate_tag, parse_verdict, require_stage

__all__ = [
    "CHAMPION",
    "PAPER",
    "STAGE_ALIAS",
    "check_promotable",
    "current_policy_sha",
    "default_actor",
    "held_paper",
    "promote",
    "promotion_tag",
    "rollback",
    "rollback_tag",
]


def promotion_tag(stage: str, key: str) -> str:
    """Return the version tag of a stage's promotion field (``promotion.<stage>.<key>``)."""
    return f"promotion.{require_stage(stage)}.{key}"


def rollback_tag(stage: str, key: str) -> str:
    """Return the version tag of a stage's rollback field (``rollback.<stage>.<key>``)."""
    return f"rollback.{require_stage(stage)}.{key}"


def held_paper(tags: Mapping[str, str], aliases: Sequence[str]) -> bool:
    """Return True when a version holds alias ``paper`` or held it without being rolled back."""
    return PAPER in aliases or tags.get(promotion_tag("paper", "state")) in ("current", "retired")


def audited_paper(events: Sequence[Mapping[str, Any]], version: str) -> bool:
    """Return True when the audit trail's completed paper promotions and rollbacks leave ``version`` having
    held alias ``paper`` without being rolled back from it (the trail, not a version tag a researcher with
    EDIT rights could write)."""
    held = False
    for e in events:
        if e.get("stage") != "paper" or e.get("outcome") != "done" or e.get("action") not in ("promote", "rollback"):
            continue
        if str(e.get("to_version")) == version:
            held = True
        elif e.get("action") == "rollback" and str(e.get("from_version")) == version:
            held = False
    return held


def current_policy_sha(stage: str) -> str:
    """Return the sha256 of the stage's gate policy in force (``$TOOLKIT_POLICY_<STAGE>``, else the shipped one)."""
    from toolkit.gates import load_policy

    return str(load_policy(None, stage=require_stage(stage)).sha256())


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


def _rederived(bundle_dir: Path, extras_dir: Path, policy: Any, registry_trials: int) -> list[str]:
    """Return one line per stored measurement that does not re-derive from the bundle (empty: all do)."""
    from toolkit.gates.rederive import read_extras, rederive

    return [m.describe() for m in rederive(bundle_dir, read_extras(extras_dir), policy, registry_trials)]


def check_promotable(model_name: str, version: str | int, stage: str,
                     audit: AuditLog | None = None) -> dict[str, Any]:
    """Re-check, without changing anything, whether a version may take the stage's alias.

    The policy checked against is the stage's policy in force
    (``toolkit.gates.policy.policy_in_force_path(stage)``: ``$TOOLKIT_POLICY_<STAGE>``, else the
    shipped file); the caller cannot choose it.

    Returns
    -------
    dict with ``stage``, ``alias``, ``eligible``, ``checks`` (check, passed, detail), ``verdict_sha``,
    ``policy_sha`` and ``policy`` (name, version, stage, path of the policy in force), ``evidence_sha``.

    Raises
    ------
    ConfigurationError
        Unknown stage, model or version, or the stage's policy in force is missing, invalid or
        of another stage.
    """
    from toolkit.gates import load_policy
    from toolkit.gates.policy import policy_in_force_path

    require_stage(stage)
    alias = STAGE_ALIAS[stage]
    policy_file = policy_in_force_path(stage)
    policy = load_policy(policy_file, stage=stage)
    info = adapter.version_info(model_name, version)
    v, tags = info.version, info.tags
    checks: list[dict[str, Any]] = []
    out: dict[str, Any] = {"model": model_name, "version": v, "stage": stage, "alias": alias, "checks": checks,
                           "eligible": False, "verdict_sha": tags.get(gate_tag(stage, "verdict_sha")),
                           "policy_sha": str(policy.sha256()),
                           "policy": {"name": policy.name, "version": policy.version, "stage": policy.stage,
                                      "path": str(policy_file)},
                           "evidence_sha": tags.get(gate_tag(stage, "evidence_sha"))}
    if stage == "live":  # the alias (only promoters move it) or the audit trail, never a tag alone
        audited = PAPER in info.aliases or audited_paper((audit or AuditLog()).events(model_name), v)
        _check(checks, "paper first", audited,
               f"version {v} holds alias paper" if PAPER in info.aliases else
               f"version {v} held alias paper (audit trail)" if audited else
               (f"version {v}'s tags say it held alias paper, but the audit trail holds no completed paper "
                "promotion of it (a tag is not evidence)" if held_paper(tags, info.aliases) else
                f"version {v} never traded on paper (or was rolled back from it): a version goes paper -> live; "
                f"run `toolkit promote {model_name} --version {v} --stage paper` first"))
    outcome = tags.get(gate_tag(stage, "verdict"), "not_evaluated")
    evaluated = outcome in ("passed", "failed")
    hint = "" if evaluated else f"; run `toolkit gates {model_name} --version {v} --stage {stage}` first"
    if not _check(checks, "evaluated", evaluated, f"gate.{stage}.verdict is {outcome!r}{hint}"):
        return out
    if not _check(checks, "verdict passed", outcome == "passed",
                  f"gate.{stage}.verdict is {outcome!r}"
                  + (f" ({'; '.join(tags[gate_tag(stage, 'why')].splitlines())})"
                     if tags.get(gate_tag(stage, "why")) else "")):
        return out
    with tempfile.TemporaryDirectory(prefix="toolkit-promote-") as tmp:
        root = Path(tmp)
        try:
            gate_files = adapter.download_gate_artifacts(model_name, v, root / "gates", stage)
        except RegistryError as exc:
            _check(checks, "verdict file", False, str(exc))
            return out
        raw = gate_files.verdict.read_bytes()
        file_sha = hashlib.sha256(raw).hexdigest()
        recorded_file_sha = tags.get(gate_tag(stage, "verdict_file_sha256"))
        if not _check(checks, "verdict file", file_sha == recorded_file_sha,
                      f"sha256 of the stored verdict.json is {file_sha[:12]}, recorded {str(recorded_file_sha)[:12]}"):
            return out
        try:
            verdict = parse_verdict(raw.decode("utf-8"), source="verdict.json")
        except (ToolkitError, UnicodeDecodeError) as exc:
            _check(checks, "verdict content", False, str(exc))
            return out
        self_ok = _verdict_self_consistent(raw.decode("utf-8"))
        consistent = (verdict.passed is True and self_ok and verdict.stage == stage
                      and verdict.verdict_sha == tags.get(gate_tag(stage, "verdict_sha"))
                      and verdict.policy_sha == tags.get(gate_tag(stage, "policy_sha"))
                      and verdict.evidence_sha == tags.get(gate_tag(stage, "evidence_sha"))
                      and (verdict.bundle_sha or tags.get("evidence.sha256")) == tags.get("evidence.sha256"))
        if not _check(checks, "verdict content", consistent,
                      f"verdict.json says passed={verdict.passed} at stage {verdict.stage}, "
                      f"verdict_sha {verdict.verdict_sha[:12]} "
                      f"({'matches' if self_ok else 'does not match'} its content), "
                      f"tags say {str(tags.get(gate_tag(stage, 'verdict_sha')))[:12]} at stage {stage}"):
            return out
        policy_sha = out["policy_sha"]
        _check(checks, "current policy", policy_sha == verdict.policy_sha,
               f"evaluated under policy {verdict.policy_sha[:12]}, the {stage} policy in force is {policy_sha[:12]}"
               + ("" if policy_sha == verdict.policy_sha else
                  f"; re-run `toolkit gates {model_name} --version {v} --stage {stage}`"))
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
            if not _check(checks, "verdict reproduces", follows, detail):
                return out
            try:
                forged = _rederived(bundle_dir, gate_files.evidence, policy,
                                    adapter.registry_trial_count(model_name, v))
                detail = ("every deterministic measurement re-derives from the bundle; latency samples plausible"
                          if not forged else
                          "the stored measurements do not re-derive from the bundle (forged, or measured by "
                          f"other code: re-run `toolkit gates {model_name} --version {v} --stage {stage}`): "
                          + "; ".join(forged))
            except (ToolkitError, OSError, ValueError, KeyError, TypeError) as exc:
                forged, detail = ["error"], f"re-deriving the measurements failed: {exc}"
            _check(checks, "measured evidence", not forged, detail)
    holder = adapter.alias_version(model_name, alias)
    _check(checks, f"not already {alias}", holder != v, f"{alias} is {holder or 'unset'}")
    out["eligible"] = all(c["passed"] for c in checks)
    return out


def _refusal(checks: list[dict[str, Any]]) -> str:
    return "; ".join(f"{c['check']}: {c['detail']}" for c in checks if not c["passed"]) or "not eligible"


def _not_a_promoter(alias: str) -> str:
    """Return why this account may not move ``alias`` on the tracking server ('' when it may, or it does not say)."""
    allowed, account = adapter.may_move_aliases()
    return "" if allowed else (f"the registry server's account {account!r} is not a promoter: only promoters "
                               f"move {alias} (nothing was written)")


def _policy_note(policy: dict[str, str]) -> str:
    """Return the audit note naming the policy in force (stage, name, version, file)."""
    return (f"{policy['stage']} policy in force: {policy['name']} version {policy['version']} "
            f"({policy['path']})")


def promote(model_name: str, version: str | int, stage: str, reason: str, actor: str | None = None,
            clock: Clock = SYSTEM_CLOCK, audit_path: str | Path | None = None,
            lock_timeout: float = 120.0) -> dict[str, Any]:
    """Move the stage's alias (``paper`` or ``champion``) to ``version`` if its verdict still holds; audit it.

    The verdict must hold under the stage's policy in force (``$TOOLKIT_POLICY_<STAGE>``, else the
    shipped file); its stage, name and version are written in the audit row's ``detail``. For
    ``live`` the version must hold or have held alias ``paper``.

    Raises
    ------
    PromotionRefused
        A check failed (message lists which and why); nothing in MLflow changed.
    ConfigurationError
        Unknown stage, model or version, or an empty reason.
    TemporaryError
        The registry lock was not obtained within ``lock_timeout`` seconds.

    Every attempt that gets past the stage and reason checks writes a ``started`` row to the audit
    trail before anything changes, then ``done``, ``refused`` or ``error`` (also when it raised).
    """
    require_stage(stage)
    who = actor or default_actor()
    log = AuditLog(audit_path)
    # validate reason and actor before anything else
    AuditEvent(model=model_name, action="promote", outcome="done", actor=who, stage=stage, at="-", reason=reason)
    attempt = AuditAttempt(log, model_name, "promote", stage, who, reason, clock,
                           to_version=str(version).strip() or None)
    try:
        return _promote_locked(attempt, model_name, version, stage, reason, who, clock, lock_timeout)
    except BaseException as exc:
        attempt.fail(exc)
        raise


def _promote_locked(attempt: AuditAttempt, model_name: str, version: str | int, stage: str, reason: str, who: str,
                    clock: Clock, lock_timeout: float) -> dict[str, Any]:
    log = attempt
    alias = STAGE_ALIAS[stage]
    # a live promotion reads the paper state too: it holds the paper lock as well (always taken first)
    stages = ("paper", "live") if stage == "live" else (stage,)
    with promotion_lock(attempt.log, model_name, stages, timeout=lock_timeout):
        previous = adapter.alias_version(model_name, alias)
        result = check_promotable(model_name, version, stage, attempt.log)
        v = result["version"]
        now = clock.now()
        event = AuditEvent(model=model_name, action="promote", outcome="done", actor=who, stage=stage,
                           at=now.isoformat(), reason=reason, from_version=previous, to_version=v,
                           verdict_sha=result["verdict_sha"],
                           policy_sha=result["policy_sha"], detail=_policy_note(result["policy"]))
        if not result["eligible"]:
            why = _refusal(result["checks"])
            log.append(replace(event, outcome="refused", detail=f"{why} [{event.detail}]"))
            raise PromotionRefused(f"promotion of {model_name} version {v} to {stage} ({alias}) refused: {why}")
        if why := _not_a_promoter(alias):
            log.append(replace(event, outcome="refused", detail=f"{why} [{event.detail}]"))
            raise PromotionRefused(f"promotion of {model_name} version {v} to {stage} ({alias}) refused: {why}")
        info = adapter.version_info(model_name, v)
        created = pd.Timestamp(info.created_at)
        cycle_hours = (now - created).total_seconds() / 3600.0
        snap = adapter.registry_snapshot(model_name)  # what a failure half-way is rolled back to
        try:
            tags = {"state": "current", "promoted_at": now.isoformat(), "promoted_by": who,
                    "reason": reason[:4000], "previous": previous or "", "verdict_sha": result["verdict_sha"],
                    "policy_sha": result["policy_sha"], "audit_id": event.id, "cycle_hours": f"{cycle_hours:.6f}"}
            for k, val in tags.items():
                adapter.set_version_tag(model_name, v, promotion_tag(stage, k), val)
            if previous is not None:
                adapter.set_version_tag(model_name, previous, promotion_tag(stage, "state"), "retired")
            adapter.set_alias(model_name, alias, v)  # last: the promotion takes effect here
        except Exception as exc:
            restored = adapter.restore_registry_snapshot(model_name, snap)
            if isinstance(exc, AccessDenied) and restored == adapter.RESTORED:  # the server said no: nothing moved
                log.append(replace(event, outcome="refused", detail=f"{str(exc)[:2000]}; {restored} [{event.detail}]"))
                raise PromotionRefused(f"promotion of {model_name} version {v} to {stage} ({alias}) refused: {exc}; "
                                       f"{restored}; {alias} is {previous or 'unset'}") from exc
            log.append(replace(event, outcome="error", detail=f"{str(exc)[:2000]}; {restored} [{event.detail}]"))
            raise RegistryError(f"promotion of {model_name} version {v} to {stage} failed half-way ({exc}); "
                                f"{restored}; {alias} is {previous or 'unset'}") from exc
        figures, book_error = record_cycle(model_name, now, "promote", stage, cycle_hours)
        if book_error:
            event = replace(event, detail=f"promotion-cycle bookkeeping failed: {book_error} [{event.detail}]")
        row = log.append(event)
    return {"model": model_name, "stage": stage, "alias": alias, "promoted": True, "from_version": previous,
            "to_version": v, "actor": who, "at": now.isoformat(), "reason": reason,
            "verdict_sha": result["verdict_sha"], "policy_sha": result["policy_sha"], "policy": result["policy"],
            "audit_id": row["id"], "checks": result["checks"], "bookkeeping_error": book_error, **figures}


def rollback(model_name: str, stage: str, reason: str, actor: str | None = None, clock: Clock = SYSTEM_CLOCK,
             audit_path: str | Path | None = None, lock_timeout: float = 120.0) -> dict[str, Any]:
    """Move the stage's alias back to the version it replaced (remembered at promote); audit the attempt.

    Raises
    ------
    PromotionRefused
        The alias is not set, or its holder replaced nothing (or that version is gone); nothing changed.
    ConfigurationError
        Unknown stage or model, or an empty reason.

    Audited like ``promote``: a ``started`` row first, then ``done``, ``refused`` or ``error``. The
    target's verdict is not re-checked, so an emergency rollback is never blocked.
    """
    require_stage(stage)
    who = actor or default_actor()
    log = AuditLog(audit_path)
    AuditEvent(model=model_name, action="rollback", outcome="done", actor=who, stage=stage, at="-", reason=reason)
    attempt = AuditAttempt(log, model_name, "rollback", stage, who, reason, clock, to_version=None)
    try:
        return _rollback_locked(attempt, model_name, stage, reason, who, clock, lock_timeout)
    except BaseException as exc:
        attempt.fail(exc)
        raise


def _rollback_locked(attempt: AuditAttempt, model_name: str, stage: str, reason: str, who: str, clock: Clock,
                     lock_timeout: float) -> dict[str, Any]:
    log = attempt
    alias = STAGE_ALIAS[stage]
    adapter.require_model(model_name)
    with promotion_lock(attempt.log, model_name, (stage,), timeout=lock_timeout):
        current = adapter.alias_version(model_name, alias)
        now = clock.now()
        target = None
        why = ""
        if current is None:
            why = f"{model_name} has no {alias} version"
        else:
            target = adapter.version_info(model_name, current).tags.get(promotion_tag(stage, "previous")) or None
            if target is None:
                why = (f"{alias} version {current} replaced no earlier {stage} version: "
                       "nothing to roll back to")
            elif target not in adapter.list_versions(model_name):
                why = f"the previous {alias} version, version {target}, no longer exists"
        target_tags = adapter.version_info(model_name, target).tags if target and not why else {}
        event = AuditEvent(model=model_name, action="rollback", outcome="done", actor=who, stage=stage,
                           at=now.isoformat(), reason=reason, from_version=current, to_version=target,
                           verdict_sha=target_tags.get(gate_tag(stage, "verdict_sha")),
                           policy_sha=target_tags.get(gate_tag(stage, "policy_sha")), detail="")
        why = _not_a_promoter(alias) or why  # who may act is answered before what there is to do
        if why:
            log.append(replace(event, outcome="refused", detail=why))
            raise PromotionRefused(f"rollback of {model_name} at {stage} refused: {why}")
        assert current is not None and target is not None
        snap = adapter.registry_snapshot(model_name)  # what a failure half-way is rolled back to
        try:
            adapter.set_version_tag(model_name, current, promotion_tag(stage, "state"), "rolled_back")
            for k, val in {"rolled_back_at": now.isoformat(), "rolled_back_by": who, "reason": reason[:4000],
                           "audit_id": event.id}.items():
                adapter.set_version_tag(model_name, current, rollback_tag(stage, k), val)
            adapter.set_version_tag(model_name, target, promotion_tag(stage, "state"), "current")
            adapter.set_version_tag(model_name, target, rollback_tag(stage, "restored_at"), now.isoformat())
            adapter.set_alias(model_name, alias, target)  # last: the rollback takes effect here
        except Exception as exc:
            restored = adapter.restore_registry_snapshot(model_name, snap)
            if isinstance(exc, AccessDenied) and restored == adapter.RESTORED:  # the server said no: nothing moved
                log.append(replace(event, outcome="refused", detail=f"{str(exc)[:2000]}; {restored}"))
                raise PromotionRefused(f"rollback of {model_name} at {stage} refused: {exc}; {restored}; "
                                       f"{alias} is {current}") from exc
            log.append(replace(event, outcome="error", detail=f"{str(exc)[:2000]}; {restored}"))
            raise RegistryError(f"rollback of {model_name} at {stage} failed half-way ({exc}); {restored}; "
                                f"{alias} is {current}") from exc
        figures, book_error = record_cycle(model_name, now, "rollback", stage, None)
        if book_error:
            event = replace(event, detail=f"promotion-cycle bookkeeping failed: {book_error}")
        row = log.append(event)
    return {"model": model_name, "stage": stage, "alias": alias, "rolled_back": True, "from_version": current,
            "to_version": target, "actor": who, "at": now.isoformat(), "reason": reason,
            "verdict_sha": event.verdict_sha, "audit_id": row["id"], "bookkeeping_error": book_error, **figures}
