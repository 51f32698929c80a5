"""The verdict: a pure, canonical function of (evidence, policy).

``Verdict.to_json()`` is canonical: keys sorted, two-space indent, floats at 12
significant digits, NaN as ``null``, infinities as the strings ``"inf"`` /
``"-inf"``, UTF-8, a trailing newline, and no clock readings except those that
come from the evidence (the backtest's ``created_at``). ``verdict_sha`` is the
sha256 of exactly that JSON text computed *without* the ``verdict_sha`` key;
to check a stored verdict, load it, drop ``verdict_sha``, re-serialise with
``canonical_json(d, indent=2) + "\\n"`` and hash (``verify_verdict_json`` does this).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.gates.checks import GateResult, run_gates
from toolkit.gates.evidence import Evidence, canonical_json, collect_evidence
from toolkit.gates.policy import GatePolicy

__all__ = [
    "VERDICT_FILE",
    "VERDICT_SCHEMA",
    "Verdict",
    "evaluate",
    "evaluate_bundle",
    "verdict_sha256",
    "verify_verdict_json",
]

VERDICT_SCHEMA = "toolkit.gates.verdict/1"
VERDICT_FILE = "verdict.json"


def _text(d: dict[str, Any]) -> str:
    return canonical_json(d, indent=2) + "\n"


def verdict_sha256(payload: dict[str, Any]) -> str:
    """Return the sha256 of the canonical JSON of ``payload`` without its ``verdict_sha`` key."""
    body = {k: v for k, v in payload.items() if k != "verdict_sha"}
    return hashlib.sha256(_text(body).encode()).hexdigest()


def verify_verdict_json(text: str) -> bool:
    """Return True when a stored verdict JSON's ``verdict_sha`` matches its content and formatting."""
    d = json.loads(text)
    return bool(d.get("verdict_sha") == verdict_sha256(d) and _text(d) == text)


@dataclass(frozen=True)
class Verdict:
    """The outcome of ``evaluate``: every gate's result plus the hashes binding it to its inputs."""

    passed: bool
    gates: tuple[GateResult, ...]
    policy_sha: str
    evidence_sha: str
    bundle_sha: str
    subject: dict[str, Any]
    policy: dict[str, str]
    toolkit_version: str = ""

    @property
    def failed(self) -> list[str]:
        """Return the names of the failed enforced gates, in gate order (advisory ones do not fail a verdict)."""
        return [g.name for g in self.gates if not g.passed and g.enforced]

    @property
    def advisory_failed(self) -> list[str]:
        """Return the names of the failed advisory gates."""
        return [g.name for g in self.gates if not g.passed and not g.enforced]

    def gate(self, name: str) -> GateResult:
        """Return the gate called ``name``."""
        for g in self.gates:
            if g.name == name:
                return g
        raise KeyError(f"gate {name!r}: expected one of {[g.name for g in self.gates]}")

    def _body(self) -> dict[str, Any]:
        return {
            "schema": VERDICT_SCHEMA,
            "passed": self.passed,
            "verdict": "passed" if self.passed else "failed",
            "failed": self.failed,
            "advisory_failed": self.advisory_failed,
            "stage": self.policy.get("stage"),
            "toolkit_version": self.toolkit_version,
            "gates": [g.to_dict() for g in self.gates],
            "policy_sha": self.policy_sha,
            "policy": self.policy,
            "evidence_sha": self.evidence_sha,
            "bundle_sha": self.bundle_sha,
            "subject": self.subject,
        }

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-safe values (as ``to_json`` writes them), ``verdict_sha`` included."""
        body = json.loads(_text(self._body()))
        body["verdict_sha"] = verdict_sha256(body)
        return body

    @property
    def verdict_sha(self) -> str:
        """Return the sha256 of the canonical JSON without this field."""
        return verdict_sha256(json.loads(_text(self._body())))

    def to_json(self) -> str:
        """Return the canonical JSON text (byte-identical for the same evidence and policy)."""
        return _text(self.to_dict())

    def summary(self) -> str:
        """Return one line: passed/failed, the failed gates and the short hashes."""
        state = "PASSED" if self.passed else f"FAILED ({', '.join(self.failed)})"
        return (
            f"{self.subject.get('model_name')}: {state}; {len(self.gates)} gates; policy "
            f"{self.policy_sha[:12]}, evidence {self.evidence_sha[:12]}, verdict {self.verdict_sha[:12]}"
        )


def evaluate(evidence: Evidence, policy: GatePolicy) -> Verdict:
    """Evaluate every gate on ``evidence`` under ``policy`` (pure and deterministic).

    Parameters
    ----------
    evidence
        From ``collect_evidence`` or ``Evidence.read``.
    policy
        From ``load_policy``.

    Returns
    -------
    Verdict
        ``passed`` only when every gate passed; ``to_json()`` is byte-identical
        for the same evidence and policy.
    """
    gates = tuple(run_gates(evidence, policy))
    b = evidence.bundle
    cfg = evidence.config
    subject = {
        "model_name": b.model_name,
        "backtest_id": b.backtest_id,
        "backtest_created_at": b.created_at,
        "strategy": cfg.strategy,
        "strategy_type": evidence.strategy_type,
        "symbol": cfg.symbol,
        "timeframe": cfg.timeframe,
        "params": b.chosen,
        "config_sha256": b.config_sha256,
        "data_hash": b.data_hash,
        "split_at": b.split_at,
        "n_trials": b.n_trials,
        "required_history": b.required_history,
        "sizing": cfg.sizing.model_dump(),
        "selection": cfg.selection,
    }
    from toolkit import __version__

    return Verdict(
        passed=all(g.passed for g in gates if g.enforced),
        gates=gates,
        policy_sha=policy.sha256(),
        evidence_sha=evidence.sha256(),
        bundle_sha=evidence.bundle_sha,
        subject=subject,
        policy={"name": policy.name, "version": policy.version, "stage": policy.stage},
        toolkit_version=__version__,
    )


def evaluate_bundle(
    bundle_dir: str | Path, policy: GatePolicy, output_dir: str | Path, registry_trials: int | None = None,
    latency: dict[str, Any] | None = None, paper_record: dict[str, Any] | None = None,
) -> tuple[Evidence, Verdict]:
    """Collect the evidence of a bundle, evaluate it, and write the extras and ``verdict.json``.

    Parameters
    ----------
    bundle_dir
        The backtest's evidence bundle (e.g. downloaded from the version's run).
    policy
        The gate policy.
    output_dir
        Receives ``gate_evidence.json`` and ``verdict.json`` (created if needed).
    registry_trials
        The registry's trial count for this strategy and market (see ``collect_evidence``).
    latency
        A latency block recorded earlier for this bundle, reused instead of measuring again
        (see ``collect_evidence``).
    paper_record
        The version's paper record from post-trade attribution (see ``collect_evidence``).

    Returns
    -------
    tuple[Evidence, Verdict]
        The evidence (re-read from ``bundle_dir`` + ``output_dir``, exactly what a
        later re-evaluation sees) and its verdict.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    collect_evidence(bundle_dir, policy, registry_trials, latency, paper_record).write(out)
    evidence = Evidence.read(bundle_dir, out)
    verdict = evaluate(evidence, policy)
    (out / VERDICT_FILE).write_text(verdict.to_json(), encoding="utf-8")
    return evidence, verdict
