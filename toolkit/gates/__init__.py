"""Deterministic promotion gates: a typed policy, measured evidence, a pure verdict.

The public API (the contract with the registry)::

    policy = load_policy(path_or_None)              # GatePolicy; policy.sha256() is its identity
    evidence = collect_evidence(bundle_dir, policy)   # measures latency, lookahead, costs, neighbours
    evidence.write(out_dir)                           # gate_evidence.json (raw latency samples included)
    evidence = Evidence.read(dir_with_bundle_and_extras)
    verdict = evaluate(evidence, policy)              # pure; verdict.to_json() is byte-identical on re-run
    evidence, verdict = evaluate_bundle(bundle_dir, policy, out_dir)  # all of it; writes verdict.json too

No MLflow or papermill import happens in this package.
"""

from toolkit.gates.checks import GateResult
from toolkit.gates.evidence import EXTRAS_FILE, Evidence, collect_evidence
from toolkit.gates.policy import DEFAULT_POLICY_PATH, GatePolicy, load_policy
from toolkit.gates.verdict import (
    VERDICT_FILE,
    Verdict,
    evaluate,
    evaluate_bundle,
    verdict_sha256,
    verify_verdict_json,
)

__all__ = [
    "DEFAULT_POLICY_PATH",
    "EXTRAS_FILE",
    "VERDICT_FILE",
    "Evidence",
    "GatePolicy",
    "GateResult",
    "Verdict",
    "collect_evidence",
    "evaluate",
    "evaluate_bundle",
    "load_policy",
    "verdict_sha256",
    "verify_verdict_json",
]
