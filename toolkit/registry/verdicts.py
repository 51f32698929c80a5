"""Gate verdicts in the registry: parse a stored verdict, record a new one on a version, per stage.

A verdict belongs to a stage (``paper`` or ``live``, the ``stage`` of the policy it was
computed under; the verdict JSON names it). It is recorded as one run in experiment
``gates`` (tags ``model``, ``version``, ``stage``) whose artifacts are
``verdict/verdict.json``, the extra evidence the gates measured (``evidence/``), the
HTML report (``report/``) and the executed notebook (``notebook/``); then the version
gets the tags ``gate.<stage>.verdict``, ``.policy_sha``, ``.evidence_sha``,
``.verdict_sha``, ``.run_id``, ``.evaluated_at``, ``.verdict_file_sha256`` (sha256 of
the verdict file's bytes), ``.failed`` (the failed enforced gates) and ``.why`` (their
explanations, in plain words, one a line), so a paper verdict and a live verdict coexist on a version.

No alias moves when a verdict is recorded (the stage's verdict tags say which versions
may be promoted; ``toolkit promote`` moves ``paper`` or ``champion``). A failed verdict
for the version that holds the stage's alias tags it ``gate.<stage>.holder_failed_reevaluation=true``
(the alias stays; ``toolkit status`` prints a warning); a later passing verdict removes the
tag. The version tags are set only after every artifact is stored, and under the registry
lock, so a failure leaves the version as it was and a concurrent promote never sees half
of them.
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
from toolkit.gates.policy import STAGES
from toolkit.gates.result import GateResult
from toolkit.registry import adapter
from toolkit.registry.adapter import STAGE_ALIAS, VERDICT_FILE
from toolkit.registry.audit import AuditLog, promotion_lock

__all__ = [
    "GATES_EXPERIMENT",
    "STAGES",
    "VERDICT_FILE",
    "RecordedVerdict",
    "StoredVerdict",
    "gate_tag",
    "holder_failed_tag",
    "parse_verdict",
    "plain_reasons",
    "record_verdict",
    "require_stage",
]

GATES_EXPERIMENT = "gates"
_SHA_KEYS = ("policy_sha", "evidence_sha", "verdict_sha")


def require_stage(stage: object) -> str:
    """Return ``stage`` when it is ``paper`` or ``live``; raise ``ConfigurationError`` naming it otherwise."""
    if stage not in STAGES:
        raise ConfigurationError("stage", f"one of {list(STAGES)}", stage)
    return str(stage)


def gate_tag(stage: str, key: str) -> str:
    """Return the version tag of a stage's verdict field (``gate.<stage>.<key>``)."""
    return f"gate.{require_stage(stage)}.{key}"


def holder_failed_tag(stage: str) -> str:
    """Return the tag set to "true" on the holder of the stage's alias when its re-evaluation failed."""
    return gate_tag(stage, "holder_failed_reevaluation")


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
    stage: str | None = None

    @property
    def failed(self) -> list[str]:
        """Return the names of the failed enforced gates, in gate order (advisory ones do not fail it)."""
        return [g.name for g in self.gates if not g.passed and g.enforced]

    @property
    def advisory_failed(self) -> list[str]:
        """Return the names of the failed advisory gates."""
        return [g.name for g in self.gates if not g.passed and not g.enforced]


def plain_reasons(verdict: StoredVerdict) -> str:
    """Return why a verdict failed in plain words: each failed enforced gate's explanation, one a line."""
    return "\n".join(f"{g.name}: {g.explanation}" for g in verdict.gates if not g.passed and g.enforced)


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
    enforced = raw.get("enforced", True)
    if not isinstance(enforced, bool):
        raise ConfigurationError(f"{source}.gates[{i}].enforced", "true or false", enforced)
    return GateResult(name=raw["name"], category=str(raw.get("category", "")), passed=raw["passed"],
                      inputs=dict(raw.get("inputs") or {}), threshold=dict(raw.get("threshold") or {}),
                      explanation=str(raw.get("explanation", "")), enforced=enforced)


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
    stage = data.get("stage")
    if stage is not None and stage not in STAGES:
        raise ConfigurationError(f"{source}.stage", f"one of {list(STAGES)}", stage)
    return StoredVerdict(passed=data["passed"], policy_sha=data["policy_sha"], evidence_sha=data["evidence_sha"],
                         verdict_sha=data["verdict_sha"], bundle_sha=str(bundle) if bundle is not None else None,
                         gates=tuple(_gate(i, g, source) for i, g in enumerate(gates)), document=data,
                         stage=stage)


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
                   notebook: str | Path | None = None, clock: Clock = SYSTEM_CLOCK,
                   audit_path: str | Path | None = None) -> RecordedVerdict:
    """Log a gate verdict for a version at its stage: a run in experiment ``gates``, then the version's tags.

    Parameters
    ----------
    model_name, version
        The registered version the verdict is about.
    verdict_path
        The verdict JSON written by the gates (``Verdict.to_json()``); logged byte for byte.
        Its ``stage`` (``paper`` or ``live``) names the tags it sets.
    extra_evidence
        Directory of the evidence the gates measured beyond the backtest bundle
        (latency samples and the like); logged under ``evidence/``. Files named like
        the verdict are skipped.
    html, notebook
        The rendered gate report and the executed notebook, attached when given.
    clock
        The evaluation time (UTC) stored in ``gate.<stage>.evaluated_at``.
    audit_path
        The audit trail whose lock (``<audit>.lock``) serialises tagging with promotions.

    Raises
    ------
    ConfigurationError
        The file is missing, not a verdict, or names no stage; unknown model or version.
    RegistryError
        MLflow failed; the version's tags are as they were.
    """
    vpath = Path(verdict_path)
    if not vpath.is_file():
        raise ConfigurationError("verdict_path", "an existing verdict JSON file", str(vpath))
    raw = vpath.read_bytes()
    verdict = parse_verdict(raw.decode("utf-8"), source=str(vpath.name))
    if verdict.stage is None:
        raise ConfigurationError(f"{vpath.name}.stage", f"one of {list(STAGES)}", "missing")
    stage = verdict.stage
    info = adapter.version_info(model_name, version)  # checks model and version
    v = info.version
    evaluated_at = clock.now().isoformat()
    outcome = "passed" if verdict.passed else "failed"
    run_tags = {
        "toolkit.kind": "gates", "model": model_name, "version": v, "stage": stage, "gate.verdict": outcome,
        "gate.policy_sha": verdict.policy_sha, "gate.evidence_sha": verdict.evidence_sha,
        "gate.verdict_sha": verdict.verdict_sha,
        "evidence.sha256": info.tags.get("evidence.sha256", ""), "source_run_id": info.run_id or "",
    }
    run_id = adapter.create_run(adapter.ensure_experiment(GATES_EXPERIMENT), f"{model_name} v{v} {stage} gates",
                                run_tags)
    try:
        _store_artifacts(run_id, raw, extra_evidence, html, notebook)
        adapter.log_metric(run_id, "gate.passed", 1.0 if verdict.passed else 0.0)
        if verdict.gates:
            adapter.log_metric(run_id, "gate.count", float(len(verdict.gates)))
            adapter.log_metric(run_id, "gate.failed_count", float(len(verdict.failed)))
        version_tags = {gate_tag(stage, k): val for k, val in {
            "verdict": outcome,
            "policy_sha": verdict.policy_sha,
            "evidence_sha": verdict.evidence_sha,
            "verdict_sha": verdict.verdict_sha,
            "verdict_file_sha256": hashlib.sha256(raw).hexdigest(),
            "run_id": run_id,
            "evaluated_at": evaluated_at,
            "failed": ",".join(verdict.failed),
            "why": plain_reasons(verdict)[:4000],
        }.items()}
        _tag_version(model_name, v, stage, info.tags, verdict, version_tags, audit_path)
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


def _tag_version(model_name: str, v: str, stage: str, old_tags: Mapping[str, str], verdict: StoredVerdict,
                 version_tags: dict[str, str], audit_path: str | Path | None) -> None:
    """Set the stage's gate tags under the registry lock; flag (or clear) the alias holder's failure."""
    flag = holder_failed_tag(stage)
    # a promote never reads a half-updated set of gate tags
    with promotion_lock(AuditLog(audit_path), model_name, (stage,)):
        for key, value in version_tags.items():
            adapter.set_version_tag(model_name, v, key, value)
        if not verdict.passed and adapter.alias_version(model_name, STAGE_ALIAS[stage]) == v:
            adapter.set_version_tag(model_name, v, flag, "true")  # loud: status warns
            version_tags[flag] = "true"
        elif verdict.passed and flag in old_tags:
            adapter.delete_version_tag(model_name, v, flag)
