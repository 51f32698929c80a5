"""Gate verdicts in the registry: parse a stored verdict, record a new one on a version.

A gate verdict is recorded as one run in experiment ``gates`` (tags ``model``,
``version``) whose artifacts are ``verdict/verdict.json``, the extra evidence the
gates measured (``evidence/``), the HTML report (``report/``) and the executed
notebook (``notebook/``); then the version gets the tags ``gate.verdict``,
``gate.policy_sha``, ``gate.evidence_sha``, ``gate.verdict_sha``, ``gate.run_id``,
``gate.evaluated_at`` and ``gate.verdict_file_sha256`` (sha256 of the verdict
file's bytes), and alias ``candidate`` when it passed (a failed re-evaluation
withdraws ``candidate`` from the version; either move is written to the audit
trail as action ``candidate``). A failed verdict for the current champion also
tags it ``gate.champion_failed_reevaluation=true`` (the champion alias stays;
``toolkit status`` prints a warning); a later passing verdict removes the tag. The
version tags are set only after every artifact is stored, and under the registry
lock, so a failure leaves the version as it was and a concurrent promote never sees
half of them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import ConfigurationError, RegistryError
from toolkit.gates.result import GateResult
from toolkit.registry import adapter
from toolkit.registry.adapter import CANDIDATE, CHAMPION, VERDICT_FILE
from toolkit.registry.audit import AuditAttempt, AuditEvent, AuditLog, default_actor, registry_lock

__all__ = [
    "CHAMPION_FAILED_TAG",
    "GATES_EXPERIMENT",
    "VERDICT_FILE",
    "RecordedVerdict",
    "StoredVerdict",
    "parse_verdict",
    "record_verdict",
]

GATES_EXPERIMENT = "gates"
#: set to "true" on the champion when a re-evaluation of it failed (``toolkit status`` warns)
CHAMPION_FAILED_TAG = "gate.champion_failed_reevaluation"
_SHA_KEYS = ("policy_sha", "evidence_sha", "verdict_sha")


@dataclass(frozen=True)
class StoredVerdict:
    """A verdict document as stored: the fields the registry relies on, the gates, the parsed JSON."""

    passed: bool
    policy_sha: str
    evidence_sha: str
    verdict_sha: str
    bundle_sha: str | None
    gates: tuple[GateResult, ...]
    document: dict[str, Any]

    @property
    def failed(self) -> list[str]:
        """Return the names of the failed gates, in gate order."""
        return [g.name for g in self.gates if not g.passed]


@dataclass(frozen=True)
class RecordedVerdict:
    """What ``record_verdict`` did: the gates run, the verdict, the tags set on the version."""

    model: str
    version: str
    run_id: str
    verdict: StoredVerdict
    tags: dict[str, str]


def _gate(i: int, raw: object, source: str) -> GateResult:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not isinstance(raw.get("passed"), bool):
        raise ConfigurationError(f"{source}.gates[{i}]", "an object with a name and passed true/false", raw)
    return GateResult(name=raw["name"], category=str(raw.get("category", "")), passed=raw["passed"],
                      inputs=dict(raw.get("inputs") or {}), threshold=dict(raw.get("threshold") or {}),
                      explanation=str(raw.get("explanation", "")))


def parse_verdict(text: str, source: str = "verdict") -> StoredVerdict:
    """Parse a verdict JSON document and check the fields the registry relies on (named when wrong)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(source, "a JSON object", f"invalid JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(source, "a JSON object", type(data).__name__)
    for key in ("passed", *_SHA_KEYS):
        if key not in data:
            raise ConfigurationError(f"{source}.{key}", "present", "missing")
    if not isinstance(data["passed"], bool):
        raise ConfigurationError(f"{source}.passed", "true or false", data["passed"])
    for key in _SHA_KEYS:
        value = data[key]
        if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
            raise ConfigurationError(f"{source}.{key}", "a sha256 hex digest", value)
    gates = data.get("gates") or []
    if not isinstance(gates, list):
        raise ConfigurationError(f"{source}.gates", "a list of gate results", type(gates).__name__)
    bundle = data.get("bundle_sha")
    return StoredVerdict(passed=data["passed"], policy_sha=data["policy_sha"], evidence_sha=data["evidence_sha"],
                         verdict_sha=data["verdict_sha"], bundle_sha=str(bundle) if bundle is not None else None,
                         gates=tuple(_gate(i, g, source) for i, g in enumerate(gates)), document=data)


def _store_artifacts(run_id: str, raw: bytes, extra_evidence: str | Path | None, html: str | Path | None,
                     notebook: str | Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="toolkit-verdict-") as tmp:
        (Path(tmp) / VERDICT_FILE).write_bytes(raw)
        adapter.log_artifact(run_id, Path(tmp) / VERDICT_FILE, "verdict")
    if extra_evidence is not None:
        extra = Path(extra_evidence)
        for f in sorted(extra.iterdir()) if extra.is_dir() else []:
            if f.name == VERDICT_FILE or f.name.endswith(".ipynb") or f.name.endswith(".html"):
                continue
            if f.is_dir():
                adapter.log_artifacts(run_id, f, f"evidence/{f.name}")
            else:
                adapter.log_artifact(run_id, f, "evidence")
    if html is not None:
        adapter.log_artifact(run_id, html, "report")
    if notebook is not None:
        adapter.log_artifact(run_id, notebook, "notebook")


def record_verdict(model_name: str, version: str | int, verdict_path: str | Path,
                   extra_evidence: str | Path | None = None, html: str | Path | None = None,
                   notebook: str | Path | None = None, clock: Clock = SYSTEM_CLOCK, actor: str | None = None,
                   audit_path: str | Path | None = None) -> RecordedVerdict:
    """Log a gate verdict for a version: a run in experiment ``gates``, then the version's tags.

    Parameters
    ----------
    model_name, version
        The registered version the verdict is about.
    verdict_path
        The verdict JSON written by the gates (``Verdict.to_json()``); logged byte for byte.
    extra_evidence
        Directory of the evidence the gates measured beyond the backtest bundle
        (latency samples and the like); logged under ``evidence/``. Files named like
        the verdict are skipped.
    html, notebook
        The rendered gate report and the executed notebook, attached when given.
    clock
        The evaluation time (UTC) stored in ``gate.evaluated_at`` and the audit rows.
    actor, audit_path
        Who records it (default ``$USER``) and the audit trail (default beside the store): setting
        or withdrawing alias ``candidate`` is audited (action ``candidate``: ``started`` then
        ``done`` or ``error``).
    """
    vpath = Path(verdict_path)
    if not vpath.is_file():
        raise ConfigurationError("verdict_path", "an existing verdict JSON file", str(vpath))
    raw = vpath.read_bytes()
    verdict = parse_verdict(raw.decode("utf-8"), source=str(vpath.name))
    info = adapter.version_info(model_name, version)  # checks model and version
    v = info.version
    evaluated_at = clock.now().isoformat()
    outcome = "passed" if verdict.passed else "failed"
    run_tags = {
        "toolkit.kind": "gates", "model": model_name, "version": v, "gate.verdict": outcome,
        "gate.policy_sha": verdict.policy_sha, "gate.evidence_sha": verdict.evidence_sha,
        "gate.verdict_sha": verdict.verdict_sha,
        "evidence.sha256": info.tags.get("evidence.sha256", ""), "source_run_id": info.run_id or "",
    }
    run_id = adapter.create_run(adapter.ensure_experiment(GATES_EXPERIMENT), f"{model_name} v{v} gates", run_tags)
    try:
        _store_artifacts(run_id, raw, extra_evidence, html, notebook)
        adapter.log_metric(run_id, "gate.passed", 1.0 if verdict.passed else 0.0)
        if verdict.gates:
            adapter.log_metric(run_id, "gate.count", float(len(verdict.gates)))
            adapter.log_metric(run_id, "gate.failed_count", float(len(verdict.failed)))
        version_tags = {
            "gate.verdict": outcome,
            "gate.policy_sha": verdict.policy_sha,
            "gate.evidence_sha": verdict.evidence_sha,
            "gate.verdict_sha": verdict.verdict_sha,
            "gate.verdict_file_sha256": hashlib.sha256(raw).hexdigest(),
            "gate.run_id": run_id,
            "gate.evaluated_at": evaluated_at,
        }
        _tag_version(model_name, v, info.tags, verdict, version_tags, clock, actor, audit_path)
    except Exception as exc:
        try:
            adapter.end_run(run_id, "FAILED")
        except Exception:  # pragma: no cover - best effort
            pass
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError(f"recording the verdict of {model_name} version {v} failed: {exc}") from exc
    adapter.end_run(run_id, "FINISHED")
    return RecordedVerdict(model=model_name, version=v, run_id=run_id, verdict=verdict, tags=version_tags)


def _tag_version(model_name: str, v: str, old_tags: Mapping[str, str], verdict: StoredVerdict,
                 version_tags: dict[str, str], clock: Clock, actor: str | None,
                 audit_path: str | Path | None) -> None:
    """Set the gate tags and move ``candidate`` under the registry lock; audit the move."""
    log = AuditLog(audit_path)
    with registry_lock(log.path):  # a promote never reads a half-updated set of gate tags
        before = adapter.alias_version(model_name, CANDIDATE)
        after = v if verdict.passed else (None if before == v else before)
        attempt = None
        if after != before:
            why = (f"gate verdict passed (verdict {verdict.verdict_sha[:12]})" if after
                   else f"re-evaluation failed (verdict {verdict.verdict_sha[:12]}): candidate withdrawn")
            attempt = AuditAttempt(log, model_name, CANDIDATE, actor or default_actor(), why, clock,
                                   to_version=after)
        try:
            for key, value in version_tags.items():
                adapter.set_version_tag(model_name, v, key, value)
            if not verdict.passed and adapter.alias_version(model_name, CHAMPION) == v:
                adapter.set_version_tag(model_name, v, CHAMPION_FAILED_TAG, "true")  # loud: status warns
                version_tags[CHAMPION_FAILED_TAG] = "true"
            elif verdict.passed and CHAMPION_FAILED_TAG in old_tags:
                adapter.delete_version_tag(model_name, v, CHAMPION_FAILED_TAG)
            if after is not None and after != before:
                adapter.set_alias(model_name, CANDIDATE, v)
            elif after is None and before is not None:
                adapter.delete_alias(model_name, CANDIDATE)
        except BaseException as exc:
            if attempt is not None:
                attempt.fail(exc)
            raise
        if attempt is not None:
            attempt.append(AuditEvent(
                model=model_name, action="candidate", outcome="done", actor=attempt.base.actor,
                at=clock.now().isoformat(), reason=attempt.base.reason, from_version=before,
                to_version=after, verdict_sha=verdict.verdict_sha, policy_sha=verdict.policy_sha,
                detail=f"candidate {before or 'unset'} -> {after or 'unset'}"))
