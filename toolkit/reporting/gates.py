"""Run the gate template for a registered version: download, execute, render, record, index.

The evidence is downloaded from the version's backtest run and checked against
its ``evidence.sha256`` tag before a kernel starts (tampered evidence is not
evaluated). ``templates/gates.ipynb`` then measures the extra evidence, evaluates
the policy and writes ``verdict.json``; the verdict is checked (its own sha, its
policy sha against the policy asked for, its bundle sha against the version) and
only then recorded in MLflow by ``toolkit.registry.versions.record_verdict``.
A failing cell therefore leaves MLflow exactly as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit import config
from toolkit.errors import ExecutionFailed, RegistryError
from toolkit.reporting.notebooks import append_index_entry, execute_template, render_html, template_path

__all__ = ["gates_report"]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def gates_report(model_name: str, version: str | int, policy_path: str | Path | None = None,
                 reports: Path | None = None, now: pd.Timestamp | None = None) -> dict[str, Any]:
    """Evaluate the promotion gates of ``model_name`` version ``version`` and record the verdict.

    Parameters
    ----------
    model_name, version
        The registered version to evaluate.
    policy_path
        Gate policy YAML for a what-if evaluation; None uses the policy in force
        (``$TOOLKIT_POLICY``, else the shipped default), the only one promotion accepts.
    reports
        Reports root (default ``toolkit.config.reports_dir()``); the notebook and HTML go to
        ``<reports>/gates/``.
    now
        Time used to name the report files (UTC; default now).

    Returns
    -------
    dict with model, version, passed, verdict, failed, gates, verdict_sha, policy_sha,
    evidence_sha, run_id, candidate (alias set), report_path, notebook_path.

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
    from toolkit.registry.versions import (
        VERDICT_FILE,
        download_evidence,
        parse_verdict,
        record_verdict,
        registry_trial_count,
        version_info,
    )

    info = version_info(model_name, version)
    v = info["version"]
    policy_file = Path(policy_path if policy_path is not None else policy_in_force_path()).resolve()
    policy = load_policy(policy_file)
    root = reports or config.reports_dir()
    stamp = (now or pd.Timestamp.now(tz="UTC")).strftime("%Y%m%dT%H%M%S%fZ")
    base = root / "gates" / f"{_safe(model_name)}-v{v}-{stamp}"
    work = Path(tempfile.mkdtemp(prefix="toolkit-gates-"))
    try:
        bundle_dir = download_evidence(model_name, v, work / "bundle")
        sha = bundle_sha256(bundle_dir)
        if sha != info["tags"].get("evidence.sha256"):
            raise RegistryError(f"{model_name} version {v}: evidence artifacts hash to {sha[:12]}, the version "
                                f"was registered with {str(info['tags'].get('evidence.sha256'))[:12]}; "
                                "not evaluating altered evidence")
        out_dir = work / "out"
        out_dir.mkdir()
        nb = execute_template(template_path("gates"), base.parent / f"{base.name}.ipynb", {
            "model_name": model_name, "version": v,
            "policy_path": str(policy_file),
            "output_dir": str(out_dir), "evidence_dir": str(bundle_dir),
            "registry_trials": registry_trial_count(model_name, v),
        })
        html = render_html(nb, base.parent / f"{base.name}.html", title=f"Gates {model_name} v{v}")
        verdict_path = out_dir / VERDICT_FILE
        if not verdict_path.is_file():
            raise ExecutionFailed(f"gates.ipynb ran but wrote no {VERDICT_FILE} into output_dir "
                                  f"(executed notebook kept at {nb})")
        text = verdict_path.read_text(encoding="utf-8")
        verdict = parse_verdict(text, source=VERDICT_FILE)
        problems = []
        if not verify_verdict_json(text):
            problems.append("its verdict_sha does not match its content")
        if verdict["policy_sha"] != policy.sha256():
            problems.append(f"policy sha {verdict['policy_sha'][:12]} is not the policy asked for "
                            f"({policy.sha256()[:12]})")
        if verdict.get("bundle_sha") not in (None, sha):
            problems.append(f"it was computed on bundle {str(verdict.get('bundle_sha'))[:12]}, not {sha[:12]}")
        if problems:
            raise RegistryError(f"gates.ipynb wrote an inconsistent verdict for {model_name} version {v}: "
                                + "; ".join(problems))
        recorded = record_verdict(model_name, v, verdict_path, extra_evidence=out_dir, html=html, notebook=nb)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gates = [g for g in verdict.get("gates", []) if isinstance(g, dict)]
    failed = [str(g.get("name")) for g in gates if not g.get("passed")]
    outcome = "passed" if verdict["passed"] else "failed"
    append_index_entry({
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "kind": "gates", "model": model_name, "version": v, "run_id": recorded["run_id"],
        "html": str(html.relative_to(root)) if html.is_relative_to(root) else str(html),
        "summary": f"{outcome.upper()}: {len(gates) - len(failed)}/{len(gates)} gates passed"
                   + (f"; failed {', '.join(failed)}" if failed else "")
                   + f"; verdict {verdict['verdict_sha'][:12]}",
        "status": "ok" if verdict["passed"] else "failed",
    }, root)
    return {
        "model": model_name, "version": v, "passed": bool(verdict["passed"]), "verdict": outcome,
        "failed": failed, "gates": gates, "verdict_sha": verdict["verdict_sha"],
        "policy_sha": verdict["policy_sha"], "evidence_sha": verdict["evidence_sha"],
        "run_id": recorded["run_id"], "candidate": bool(verdict["passed"]),
        "report_path": str(html), "notebook_path": str(nb),
    }
