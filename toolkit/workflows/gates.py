"""The gates workflow of a version at a stage: download → check → run ``templates/gates.ipynb`` → render → record.

A stage is ``paper`` or ``live``; the policy in force for it is ``$TOOLKIT_POLICY_PAPER`` /
``$TOOLKIT_POLICY_LIVE``, else the shipped one. The evidence is downloaded from the
version's backtest run and checked against its ``evidence.sha256`` tag before any cell
runs (tampered evidence is not evaluated); the template's kernel starts meanwhile, so that
its start-up and imports overlap these registry reads, and is stopped if a check fails.
``templates/gates.ipynb`` then measures the extra evidence, evaluates the policy and
writes ``verdict.json``; the verdict is checked (its own sha, its stage, its policy sha
against the policy asked for, its bundle sha against the version) and only then recorded
in MLflow by ``toolkit.registry.verdicts.record_verdict``. A failing cell leaves MLflow exactly as it was.

Under a policy other than the stage's one in force (``--policy`` for a what-if), nothing is
written to the registry: no run, no tag. The report is rendered (its file name says
``whatif``) and the result says it was not recorded. Recording a verdict moves no alias
(``toolkit promote`` does).

The ``paper_record`` gate reads the version's latest paper-stage attribution (version tag
``attribution.paper.run_id``, artifact ``paper_record/paper_record.json``; ``toolkit attribute``).

Latency is measured once per version: when an earlier gates run of the version (either
stage) recorded latency samples on the same bundle under the same latency settings, they
are reused (``toolkit.gates.rederive.reusable_latency``), so evaluating a version twice
gives a byte-identical verdict.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import ExecutionFailed, RegistryError, interrupted
from toolkit.naming import child_path, safe_filename, validate_model_name
from toolkit.reporting.index import append_index_entry
from toolkit.reporting.notebooks import prepare_rendering, render_html, start_template, template_path
from toolkit.workflows.overview import refresh_overview

__all__ = ["GatesRun", "run_gates_workflow"]


@dataclass(frozen=True)
class GatesRun:
    """What a gates workflow produced."""

    model: str
    version: str
    stage: str
    passed: bool
    failed: tuple[str, ...]
    advisory_failed: tuple[str, ...]
    gates: tuple[dict[str, Any], ...]
    verdict_sha: str
    policy_sha: str
    evidence_sha: str
    recorded: bool
    run_id: str | None
    latency_reused_from: str | None
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
        out.update(verdict=self.verdict, failed=list(self.failed), advisory_failed=list(self.advisory_failed),
                   gates=list(self.gates))
        return out


def _earlier_latency(model_name: str, v: str, tags: dict[str, str], stage: str, policy: Any, bundle_sha: str,
                     work: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Return a latency block recorded by an earlier gates run of the version that fits, and that run's id."""
    from toolkit.gates.evidence import EXTRAS_FILE
    from toolkit.gates.rederive import read_extras, reusable_latency
    from toolkit.registry import adapter

    for s in (stage, *(x for x in ("paper", "live") if x != stage)):
        run_id = tags.get(f"gate.{s}.run_id")
        if not run_id:
            continue
        files = adapter.download_gate_artifacts(model_name, v, work / f"earlier-{s}", s)
        if not (files.evidence / EXTRAS_FILE).is_file():
            continue
        try:
            block = reusable_latency(read_extras(files.evidence), policy, bundle_sha)
        except ValueError:  # unreadable JSON: measure again
            block = None
        if block is not None:
            return block, run_id
    return None, None


def _paper_record(model_name: str, v: str, tags: dict[str, str], work: Path) -> Path | None:
    """Return the version's latest paper record (``paper_record.json`` of its paper-stage attribution run)."""
    from toolkit.attribution import PAPER_RECORD_FILE
    from toolkit.registry import adapter

    run_id = tags.get("attribution.paper.run_id")
    if not run_id:
        return None
    folder = adapter.download_artifacts(run_id, "paper_record", work / "paper_record",
                                        f"{model_name} version {v}'s paper record")
    path = folder / PAPER_RECORD_FILE
    if not path.is_file():
        raise RegistryError(f"{model_name} version {v}: attribution run {run_id} has no paper_record/"
                            f"{PAPER_RECORD_FILE}")
    return path


def run_gates_workflow(model_name: str, version: str | int, stage: str, policy_path: str | Path | None = None,
                       reports: Path | None = None, clock: Clock = SYSTEM_CLOCK) -> GatesRun:
    """Evaluate the gates of ``model_name`` version ``version`` at ``stage``; record the verdict unless a what-if.

    Parameters
    ----------
    model_name, version
        The registered version to evaluate.
    stage
        ``paper`` or ``live``: the policy in force, and the tags the verdict is recorded under.
    policy_path
        Gate policy YAML of that stage. None, or a file whose sha equals the stage's policy in force
        (``$TOOLKIT_POLICY_<STAGE>``, else the shipped one), records the verdict; any other policy is
        a what-if that changes nothing in the registry.
    reports
        Reports root (default ``toolkit.config.reports_dir()``); files go to ``<reports>/gates/``.
    clock
        Names the report files and times the verdict (UTC).

    Raises
    ------
    ConfigurationError
        Unknown stage, model, version, or an invalid policy or one of another stage (before any
        cell runs: the template's kernel starts while they are checked, and is stopped).
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
    from toolkit.registry.verdicts import VERDICT_FILE, parse_verdict, record_verdict, require_stage

    require_stage(stage)
    validate_model_name(model_name, "model")
    root = reports or config.reports_dir()
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%fZ")
    work = Path(tempfile.mkdtemp(prefix="toolkit-gates-"))
    nb_path: Path | None = None
    try:
        # the kernel starts and imports the template's modules while the version and its evidence are
        # checked here; a check that fails stops it before any cell runs
        with start_template(template_path("gates")) as run:
            info = adapter.version_info(model_name, version)
            v = info.version
            in_force = load_policy(policy_in_force_path(stage), stage=stage)
            policy_file = Path(policy_path if policy_path is not None else policy_in_force_path(stage)).resolve()
            policy = load_policy(policy_file, stage=stage)
            whatif = policy.sha256() != in_force.sha256()
            base = f"{safe_filename(model_name)}-v{v}-{stage}-{'whatif-' if whatif else ''}{stamp}"
            nb_path = child_path(root, "gates", f"{base}.ipynb")
            bundle_dir = adapter.download_evidence(model_name, v, work / "bundle")
            sha = bundle_sha256(bundle_dir)
            if sha != info.tags.get("evidence.sha256"):
                raise RegistryError(f"{model_name} version {v}: evidence artifacts hash to {sha[:12]}, the version "
                                    f"was registered with {str(info.tags.get('evidence.sha256'))[:12]}; "
                                    "not evaluating altered evidence")
            latency, reused_from = _earlier_latency(model_name, v, dict(info.tags), stage, policy, sha, work)
            latency_path = None
            if latency is not None:
                latency_path = work / "latency.json"
                latency_path.write_text(json.dumps(latency), encoding="utf-8")
            record_path = _paper_record(model_name, v, dict(info.tags), work)
            out_dir = work / "out"
            out_dir.mkdir()
            parameters = {
                "model_name": model_name, "version": v, "stage": stage, "policy_path": str(policy_file),
                "output_dir": str(out_dir), "evidence_dir": str(bundle_dir),
                "registry_trials": adapter.registry_trial_count(model_name, v),
                "latency_path": None if latency_path is None else str(latency_path),
                "paper_record_path": None if record_path is None else str(record_path),
            }
            prepare_rendering()
            nb = run.execute(nb_path, parameters)
        html = render_html(nb, nb_path.with_suffix(".html"),
                           title=f"Gates {model_name} v{v} ({stage})" + (" (what-if policy)" if whatif else ""))
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
        if verdict.stage != stage:
            problems.append(f"it is a {verdict.stage} verdict, not {stage}")
        if verdict.bundle_sha not in (None, sha):
            problems.append(f"it was computed on bundle {str(verdict.bundle_sha)[:12]}, not {sha[:12]}")
        if problems:
            raise RegistryError(f"gates.ipynb wrote an inconsistent verdict for {model_name} version {v}: "
                                + "; ".join(problems))
        run_id = None
        if not whatif:
            run_id = record_verdict(model_name, v, verdict_path, extra_evidence=out_dir, html=html, notebook=nb,
                                    clock=clock).run_id
    except BaseException as exc:
        if interrupted(exc):  # the CLI reports it as an interruption (see toolkit.errors.interrupted)
            for f in () if nb_path is None else (nb_path, nb_path.with_suffix(".html")):
                f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gates = tuple(g.to_dict() for g in verdict.gates)
    n, failed = len(gates), verdict.failed
    refresh_overview([model_name], root)
    append_index_entry({
        "created_at": clock.now().isoformat(timespec="seconds"),
        "kind": f"{stage} gates (what-if, not recorded)" if whatif else f"{stage} gates", "model": model_name,
        "version": v,
        "run_id": run_id, "html": str(html.relative_to(root.resolve())),
        "summary": f"{'PASSED' if verdict.passed else 'FAILED'}: {n - len(failed)}/{n} gates passed"
                   + (f"; failed {', '.join(failed)}" if failed else "")
                   + f"; verdict {verdict.verdict_sha[:12]}" + (f"; what-if policy {policy.name}" if whatif else ""),
        "status": "ok" if verdict.passed else "failed",
    }, root)
    return GatesRun(
        model=model_name, version=v, stage=stage, passed=verdict.passed, failed=tuple(failed),
        advisory_failed=tuple(verdict.advisory_failed), gates=gates,
        verdict_sha=verdict.verdict_sha, policy_sha=verdict.policy_sha, evidence_sha=verdict.evidence_sha,
        recorded=not whatif, run_id=run_id, latency_reused_from=reused_from,
        report_path=str(html), notebook_path=str(nb), policy_path=str(policy_file),
    )
