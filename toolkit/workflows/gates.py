"""The gates workflow for a registered version: download → check → run ``templates/gates.ipynb`` → render → record.

The evidence is downloaded from the version's backtest run and checked against its
``evidence.sha256`` tag before a kernel starts (tampered evidence is not evaluated).
``templates/gates.ipynb`` then measures the extra evidence, evaluates the policy and
writes ``verdict.json``; the verdict is checked (its own sha, its policy sha against the
policy asked for, its bundle sha against the version) and only then recorded in MLflow
by ``toolkit.registry.verdicts.record_verdict``. A failing cell leaves MLflow exactly as
it was.

Under a policy other than the one in force (``--policy`` for a what-if), nothing is
written to the registry: no run, no tag, no alias move. The report is rendered (its file
name says ``whatif``) and the result says it was not recorded.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import ExecutionFailed, RegistryError
from toolkit.naming import child_path, safe_filename, validate_model_name
from toolkit.reporting.index import append_index_entry
from toolkit.reporting.notebooks import execute_template, render_html, template_path

__all__ = ["GatesRun", "run_gates_workflow"]


@dataclass(frozen=True)
class GatesRun:
    """What a gates workflow produced."""

    model: str
    version: str
    passed: bool
    failed: tuple[str, ...]
    gates: tuple[dict[str, Any], ...]
    verdict_sha: str
    policy_sha: str
    evidence_sha: str
    recorded: bool
    run_id: str | None
    candidate: bool
    report_path: str
    notebook_path: str
    policy_path: str

    @property
    def verdict(self) -> str:
        """``passed`` or ``failed``."""
        return "passed" if self.passed else "failed"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = asdict(self)
        out.update(verdict=self.verdict, failed=list(self.failed), gates=list(self.gates))
        return out


def run_gates_workflow(model_name: str, version: str | int, policy_path: str | Path | None = None,
                       reports: Path | None = None, clock: Clock = SYSTEM_CLOCK) -> GatesRun:
    """Evaluate the promotion gates of ``model_name`` version ``version``; record the verdict unless a what-if.

    Parameters
    ----------
    model_name, version
        The registered version to evaluate.
    policy_path
        Gate policy YAML. None, or a file whose sha equals the policy in force (``$TOOLKIT_POLICY``,
        else the shipped default), records the verdict; any other policy is a what-if that
        changes nothing in the registry.
    reports
        Reports root (default ``toolkit.config.reports_dir()``); files go to ``<reports>/gates/``.
    clock
        Names the report files and times the verdict (UTC).

    Raises
    ------
    ConfigurationError
        Unknown model, version, or an invalid policy (before any kernel starts).
    RegistryError
        The version's evidence no longer matches its ``evidence.sha256`` tag, or the verdict
        written by the notebook is inconsistent.
    ExecutionFailed
        A notebook cell failed; nothing was recorded in MLflow.
    """
    from toolkit.backtest.bundle import bundle_sha256
    from toolkit.gates import load_policy, verify_verdict_json
    from toolkit.gates.policy import policy_in_force_path
    from toolkit.registry import adapter
    from toolkit.registry.verdicts import VERDICT_FILE, parse_verdict, record_verdict

    validate_model_name(model_name, "model")
    info = adapter.version_info(model_name, version)
    v = info.version
    in_force = load_policy(policy_in_force_path())
    policy_file = Path(policy_path if policy_path is not None else policy_in_force_path()).resolve()
    policy = load_policy(policy_file)
    whatif = policy.sha256() != in_force.sha256()
    root = reports or config.reports_dir()
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%fZ")
    base = f"{safe_filename(model_name)}-v{v}-{'whatif-' if whatif else ''}{stamp}"
    nb_path = child_path(root, "gates", f"{base}.ipynb")
    work = Path(tempfile.mkdtemp(prefix="toolkit-gates-"))
    try:
        bundle_dir = adapter.download_evidence(model_name, v, work / "bundle")
        sha = bundle_sha256(bundle_dir)
        if sha != info.tags.get("evidence.sha256"):
            raise RegistryError(f"{model_name} version {v}: evidence artifacts hash to {sha[:12]}, the version "
                                f"was registered with {str(info.tags.get('evidence.sha256'))[:12]}; "
                                "not evaluating altered evidence")
        out_dir = work / "out"
        out_dir.mkdir()
        nb = execute_template(template_path("gates"), nb_path, {
            "model_name": model_name, "version": v, "policy_path": str(policy_file),
            "output_dir": str(out_dir), "evidence_dir": str(bundle_dir),
            "registry_trials": adapter.registry_trial_count(model_name, v),
        })
        html = render_html(nb, nb_path.with_suffix(".html"),
                           title=f"Gates {model_name} v{v}" + (" (what-if policy)" if whatif else ""))
        verdict_path = out_dir / VERDICT_FILE
        if not verdict_path.is_file():
            raise ExecutionFailed(f"gates.ipynb ran but wrote no {VERDICT_FILE} into output_dir "
                                  f"(executed notebook kept at {nb})")
        text = verdict_path.read_text(encoding="utf-8")
        verdict = parse_verdict(text, source=VERDICT_FILE)
        problems = []
        if not verify_verdict_json(text):
            problems.append("its verdict_sha does not match its content")
        if verdict.policy_sha != policy.sha256():
            problems.append(f"policy sha {verdict.policy_sha[:12]} is not the policy asked for "
                            f"({policy.sha256()[:12]})")
        if verdict.bundle_sha not in (None, sha):
            problems.append(f"it was computed on bundle {str(verdict.bundle_sha)[:12]}, not {sha[:12]}")
        if problems:
            raise RegistryError(f"gates.ipynb wrote an inconsistent verdict for {model_name} version {v}: "
                                + "; ".join(problems))
        run_id = None
        if not whatif:
            run_id = record_verdict(model_name, v, verdict_path, extra_evidence=out_dir, html=html, notebook=nb,
                                    clock=clock).run_id
    except KeyboardInterrupt:
        for f in (nb_path, nb_path.with_suffix(".html")):
            f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gates = tuple(g.to_dict() for g in verdict.gates)
    n, failed = len(gates), verdict.failed
    append_index_entry({
        "created_at": clock.now().isoformat(timespec="seconds"),
        "kind": "gates (what-if, not recorded)" if whatif else "gates", "model": model_name, "version": v,
        "run_id": run_id, "html": str(html.relative_to(root.resolve())),
        "summary": f"{'PASSED' if verdict.passed else 'FAILED'}: {n - len(failed)}/{n} gates passed"
                   + (f"; failed {', '.join(failed)}" if failed else "")
                   + f"; verdict {verdict.verdict_sha[:12]}" + (f"; what-if policy {policy.name}" if whatif else ""),
        "status": "ok" if verdict.passed else "failed",
    }, root)
    return GatesRun(
        model=model_name, version=v, passed=verdict.passed, failed=tuple(failed), gates=gates,
        verdict_sha=verdict.verdict_sha, policy_sha=verdict.policy_sha, evidence_sha=verdict.evidence_sha,
        recorded=not whatif, run_id=run_id, candidate=bool(verdict.passed and not whatif),
        report_path=str(html), notebook_path=str(nb), policy_path=str(policy_file),
    )
