"""Registered model versions: read their state, fetch their evidence, record gate verdicts.

Part of the registry's MLflow adapter (with ``mlflow_store``). State is always read
with ``get_model_version`` / ``get_model_version_by_alias`` / ``get_registered_model``:
in MLflow 3.x ``search_model_versions`` returns empty ``aliases``.

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
``toolkit status`` prints a warning); a later passing verdict removes the tag. The version tags are set only after
every artifact is stored, and under the registry lock, so a failure leaves the
version as it was and a concurrent promote never sees half of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.errors import ConfigurationError, RegistryError
from toolkit.registry.audit import AuditAttempt, AuditEvent, AuditLog, default_actor, registry_lock
from toolkit.registry.mlflow_store import client, configure, ensure_experiment

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "CHAMPION_FAILED_TAG",
    "GATES_EXPERIMENT",
    "VERDICT_FILE",
    "alias_version",
    "download_evidence",
    "download_gate_artifacts",
    "list_versions",
    "mlflow_call",
    "model_aliases",
    "parse_verdict",
    "record_verdict",
    "registry_snapshot",
    "registry_trial_count",
    "require_model",
    "restore_registry_snapshot",
    "utc_now",
    "version_info",
]

GATES_EXPERIMENT = "gates"
#: set to "true" on the champion when a re-evaluation of it failed (``toolkit status`` warns)
CHAMPION = "champion"
CANDIDATE = "candidate"
CHAMPION_FAILED_TAG = "gate.champion_failed_reevaluation"
VERDICT_FILE = "verdict.json"
_VERDICT_KEYS = ("passed", "policy_sha", "evidence_sha", "verdict_sha")


def utc_now() -> pd.Timestamp:
    """Return the current time, tz-aware UTC (the default clock)."""
    return pd.Timestamp.now(tz="UTC")


def _missing(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"


@contextmanager
def mlflow_call(what: str) -> Iterator[None]:
    """Convert MLflow errors raised inside the block into ``RegistryError`` naming ``what``."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"MLflow: {what} failed: {exc.message}") from exc


def require_model(model_name: str) -> Any:
    """Return the registered model ``model_name`` or raise ``ConfigurationError`` naming it."""
    from mlflow.exceptions import MlflowException

    configure()
    try:
        return client().get_registered_model(model_name)
    except MlflowException as exc:
        if _missing(exc):
            raise ConfigurationError("model", "a registered model name", model_name) from None
        raise RegistryError(f"MLflow: reading model {model_name!r} failed: {exc.message}") from exc


def list_versions(model_name: str) -> list[str]:
    """Return the versions of ``model_name``, oldest first (numeric order)."""
    require_model(model_name)
    with mlflow_call(f"listing versions of {model_name!r}"):
        found = client().search_model_versions(f"name = '{model_name}'")
    return sorted((str(v.version) for v in found), key=int)


def model_aliases(model_name: str) -> dict[str, str]:
    """Return alias -> version for ``model_name`` (read from the registered model, not a search)."""
    rm = require_model(model_name)
    return {str(k): str(v) for k, v in sorted(dict(rm.aliases or {}).items())}


def alias_version(model_name: str, alias: str) -> str | None:
    """Return the version ``alias`` points at, or None when the alias is not set."""
    if alias not in model_aliases(model_name):
        return None
    with mlflow_call(f"reading alias {alias!r} of {model_name!r}"):
        return str(client().get_model_version_by_alias(model_name, alias).version)


def _get_version(model_name: str, version: str | int) -> Any:
    from mlflow.exceptions import MlflowException

    require_model(model_name)
    v = str(version).strip()
    if not v.isdigit():
        raise ConfigurationError("version", "a positive integer", version)
    try:
        return client().get_model_version(model_name, v)
    except MlflowException as exc:
        if _missing(exc):
            raise ConfigurationError("version", f"one of {list_versions(model_name)} of model {model_name!r}",
                                     version) from None
        raise RegistryError(f"MLflow: reading {model_name!r} version {v} failed: {exc.message}") from exc


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else pd.Timestamp(int(ms), unit="ms", tz="UTC").isoformat()


def version_info(model_name: str, version: str | int) -> dict[str, Any]:
    """Return one version's state: tags, run id, aliases, status and creation time (UTC ISO).

    Raises
    ------
    ConfigurationError
        The model or the version does not exist.
    """
    mv = _get_version(model_name, version)
    return {
        "model": model_name,
        "version": str(mv.version),
        "run_id": mv.run_id,
        "aliases": sorted(str(a) for a in (mv.aliases or [])),
        "tags": {str(k): str(v) for k, v in sorted(dict(mv.tags or {}).items())},
        "status": str(mv.status),
        "created_at": _iso_ms(mv.creation_timestamp),
        "source": mv.source,
    }


def registry_trial_count(model_name: str, version: str | int) -> int:
    """Return the trials the registry recorded for this version's strategy and market, up to its run.

    Sums the ``n_combinations`` param of every backtest run, in any experiment and including
    deleted runs, tagged with the same ``ledger.key`` and started no later than the version's
    own run. The gates take the larger of this and the bundle's ledger as the deflated Sharpe
    ratio's N, so a fresh or swapped local ledger cannot hide trials.
    """
    from mlflow.entities import ViewType

    mv = _get_version(model_name, version)
    c = client()
    with mlflow_call(f"reading run {mv.run_id}"):
        run = c.get_run(mv.run_id)
    key = run.data.tags.get("ledger.key")
    if not key:
        return 0
    total, token = 0, None
    with mlflow_call(f"counting the trials of {key}"):
        ids = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
        while True:
            page = c.search_runs(ids, filter_string=f"tags.`ledger.key` = '{key}'",
                                 run_view_type=ViewType.ALL, max_results=1000, page_token=token)
            for r in page:
                if r.info.start_time <= run.info.start_time:
                    total += int(r.data.params.get("n_combinations", 0) or 0)
            token = page.token
            if not token:
                break
    return total


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _download(run_id: str, artifact_path: str, dst: Path, what: str) -> Path:
    """Download ``artifact_path`` of ``run_id`` and move its files directly into ``dst``."""
    import mlflow

    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="toolkit-dl-") as tmp, _no_progress_bar():
        try:
            local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                             dst_path=tmp))
        except Exception as exc:  # MlflowException or OSError from the artifact repository
            raise RegistryError(f"{what}: downloading {artifact_path!r} of run {run_id} failed: {exc}") \
                from exc
        if not local.is_dir():
            raise RegistryError(f"{what}: expected a directory {artifact_path!r} in run {run_id}, "
                                "found a file")
        for item in sorted(local.iterdir()):
            target = dst / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), str(target))
    return dst


def download_evidence(model_name: str, version: str | int, dst: str | Path) -> Path:
    """Copy the ``evidence/`` files of the version's backtest run into ``dst`` and return ``dst``."""
    info = version_info(model_name, version)
    if not info["run_id"]:
        raise RegistryError(f"{model_name} version {info['version']}: no source run to read evidence from")
    return _download(info["run_id"], "evidence", Path(dst), f"{model_name} version {info['version']}")


def download_gate_artifacts(model_name: str, version: str | int, dst: str | Path) -> dict[str, Path]:
    """Download the latest gates run of a version: its verdict file and its extra evidence.

    Returns
    -------
    dict with ``verdict`` (path of ``verdict.json``) and ``evidence`` (directory of the extra
    evidence files, possibly empty), both under ``dst``.

    Raises
    ------
    RegistryError
        The version has no ``gate.run_id`` or the run's artifacts cannot be read.
    """
    info = version_info(model_name, version)
    run_id = info["tags"].get("gate.run_id")
    what = f"{model_name} version {info['version']}"
    if not run_id:
        raise RegistryError(f"{what}: no gates run recorded (tag gate.run_id missing)")
    root = Path(dst)
    _download(run_id, "verdict", root / "verdict", what)
    evidence = root / "evidence"
    evidence.mkdir(parents=True, exist_ok=True)
    with mlflow_call(f"listing artifacts of gates run {run_id}"):
        has_extra = any(a.path == "evidence" for a in client().list_artifacts(run_id))
    if has_extra:
        _download(run_id, "evidence", evidence, what)
    verdict = root / "verdict" / VERDICT_FILE
    if not verdict.is_file():
        raise RegistryError(f"{what}: gates run {run_id} has no verdict/{VERDICT_FILE}")
    return {"verdict": verdict, "evidence": evidence}


def parse_verdict(text: str, source: str = "verdict") -> dict[str, Any]:
    """Parse a verdict JSON document and check the fields the registry relies on."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(source, "a JSON object", f"invalid JSON ({exc.msg} at {exc.pos})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(source, "a JSON object", type(data).__name__)
    for key in _VERDICT_KEYS:
        if key not in data:
            raise ConfigurationError(f"{source}.{key}", "present", "missing")
    if not isinstance(data["passed"], bool):
        raise ConfigurationError(f"{source}.passed", "true or false", data["passed"])
    for key in _VERDICT_KEYS[1:]:
        value = data[key]
        if not (isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
            raise ConfigurationError(f"{source}.{key}", "a sha256 hex digest", value)
    return data


def record_verdict(model_name: str, version: str | int, verdict_path: str | Path,
                   extra_evidence: str | Path | None = None, html: str | Path | None = None,
                   notebook: str | Path | None = None,
                   clock: Callable[[], pd.Timestamp] = utc_now, actor: str | None = None,
                   audit_path: str | Path | None = None) -> dict[str, Any]:
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
        Returns the evaluation time (UTC) stored in ``gate.evaluated_at``.
    actor, audit_path
        Who records it (default ``$USER``) and the audit trail (default beside the store): setting
        or withdrawing alias ``candidate`` is audited (action ``candidate``: ``started`` then
        ``done`` or ``error``).

    Returns
    -------
    dict with run_id, passed, verdict (the parsed JSON), and the tags set on the version.
    """
    vpath = Path(verdict_path)
    if not vpath.is_file():
        raise ConfigurationError("verdict_path", "an existing verdict JSON file", str(vpath))
    raw = vpath.read_bytes()
    verdict = parse_verdict(raw.decode("utf-8"), source=str(vpath.name))
    info = version_info(model_name, version)  # configures MLflow, checks model and version
    v = info["version"]
    evaluated_at = clock().tz_convert("UTC").isoformat()
    outcome = "passed" if verdict["passed"] else "failed"
    run_tags = {
        "toolkit.kind": "gates", "model": model_name, "version": v, "gate.verdict": outcome,
        "gate.policy_sha": verdict["policy_sha"], "gate.evidence_sha": verdict["evidence_sha"],
        "gate.verdict_sha": verdict["verdict_sha"],
        "evidence.sha256": info["tags"].get("evidence.sha256", ""),
        "source_run_id": info["run_id"] or "",
    }
    with mlflow_call("opening experiment 'gates'"):
        experiment_id = ensure_experiment(GATES_EXPERIMENT)
    with mlflow_call(f"starting the gates run of {model_name} version {v}"):
        run = client().create_run(experiment_id, run_name=f"{model_name} v{v} gates", tags=run_tags)
    run_id = run.info.run_id
    try:
        c = client()
        with tempfile.TemporaryDirectory(prefix="toolkit-verdict-") as tmp:
            (Path(tmp) / VERDICT_FILE).write_bytes(raw)
            c.log_artifact(run_id, str(Path(tmp) / VERDICT_FILE), artifact_path="verdict")
        if extra_evidence is not None:
            extra = Path(extra_evidence)
            for f in sorted(extra.iterdir()) if extra.is_dir() else []:
                if f.name == VERDICT_FILE or f.name.endswith(".ipynb") or f.name.endswith(".html"):
                    continue
                if f.is_dir():
                    c.log_artifacts(run_id, str(f), artifact_path=f"evidence/{f.name}")
                else:
                    c.log_artifact(run_id, str(f), artifact_path="evidence")
        if html is not None:
            c.log_artifact(run_id, str(html), artifact_path="report")
        if notebook is not None:
            c.log_artifact(run_id, str(notebook), artifact_path="notebook")
        gates = verdict.get("gates") or []
        c.log_metric(run_id, "gate.passed", 1.0 if verdict["passed"] else 0.0)
        if isinstance(gates, list) and gates:
            c.log_metric(run_id, "gate.count", float(len(gates)))
            c.log_metric(run_id, "gate.failed_count",
                         float(sum(1 for g in gates if isinstance(g, dict) and not g.get("passed"))))
        version_tags = {
            "gate.verdict": outcome,
            "gate.policy_sha": verdict["policy_sha"],
            "gate.evidence_sha": verdict["evidence_sha"],
            "gate.verdict_sha": verdict["verdict_sha"],
            "gate.verdict_file_sha256": hashlib.sha256(raw).hexdigest(),
            "gate.run_id": run_id,
            "gate.evaluated_at": evaluated_at,
        }
        log = AuditLog(audit_path)
        with registry_lock(log.path):  # a promote never reads a half-updated set of gate tags
            before = alias_version(model_name, CANDIDATE)
            after = v if verdict["passed"] else (None if before == v else before)
            attempt = None
            if after != before:
                why = (f"gate verdict passed (verdict {verdict['verdict_sha'][:12]})" if after
                       else f"re-evaluation failed (verdict {verdict['verdict_sha'][:12]}): candidate withdrawn")
                attempt = AuditAttempt(log, model_name, CANDIDATE, actor or default_actor(), why, clock,
                                       to_version=after)
            try:
                for key, value in version_tags.items():
                    c.set_model_version_tag(model_name, v, key, value)
                if not verdict["passed"] and alias_version(model_name, CHAMPION) == v:
                    c.set_model_version_tag(model_name, v, CHAMPION_FAILED_TAG, "true")  # loud: status warns
                    version_tags[CHAMPION_FAILED_TAG] = "true"
                elif verdict["passed"] and CHAMPION_FAILED_TAG in info["tags"]:
                    c.delete_model_version_tag(model_name, v, CHAMPION_FAILED_TAG)
                if after is not None and after != before:
                    c.set_registered_model_alias(model_name, CANDIDATE, v)
                elif after is None and before is not None:
                    c.delete_registered_model_alias(model_name, CANDIDATE)
            except BaseException as exc:
                if attempt is not None:
                    attempt.fail(exc)
                raise
            if attempt is not None:
                attempt.append(AuditEvent(
                    model=model_name, action="candidate", outcome="done", actor=attempt.base.actor,
                    at=clock().tz_convert("UTC").isoformat(), reason=attempt.base.reason, from_version=before,
                    to_version=after, verdict_sha=verdict["verdict_sha"], policy_sha=verdict["policy_sha"],
                    detail=f"candidate {before or 'unset'} -> {after or 'unset'}"))
    except Exception as exc:
        try:
            client().set_terminated(run_id, status="FAILED")
        except Exception:  # pragma: no cover - best effort
            pass
        if isinstance(exc, RegistryError):
            raise
        raise RegistryError(f"recording the verdict of {model_name} version {v} failed: {exc}") from exc
    client().set_terminated(run_id, status="FINISHED")
    return {"run_id": run_id, "passed": verdict["passed"], "verdict": verdict, "tags": version_tags,
            "model": model_name, "version": v}


def registry_snapshot(model_name: str) -> dict[str, Any]:
    """Return everything a promote or rollback may change: aliases, model tags, every version's tags.

    Two snapshots compare equal exactly when no alias or tag of the model changed.
    """
    rm = require_model(model_name)
    versions = {v: version_info(model_name, v) for v in list_versions(model_name)}
    return {
        "aliases": {str(k): str(val) for k, val in sorted(dict(rm.aliases or {}).items())},
        "model_tags": {str(k): str(val) for k, val in sorted(dict(rm.tags or {}).items())},
        "versions": {v: {"tags": i["tags"], "aliases": i["aliases"]} for v, i in versions.items()},
    }


def restore_registry_snapshot(model_name: str, snap: dict[str, Any]) -> str:
    """Put every alias, model tag and version tag back as in ``snap`` (from ``registry_snapshot``).

    Returns
    -------
    str
        One line saying what happened; a failure to restore is reported here, never raised
        (the caller is already handling the failure that made the restore necessary).
    """
    c = client()
    try:
        now = registry_snapshot(model_name)
        for v, state in snap["versions"].items():
            was, cur = state["tags"], now["versions"].get(v, {}).get("tags", {})
            for k in sorted(set(cur) - set(was)):
                c.delete_model_version_tag(model_name, v, k)
            for k, val in sorted(was.items()):
                if cur.get(k) != val:
                    c.set_model_version_tag(model_name, v, k, val)
        for k in sorted(set(now["model_tags"]) - set(snap["model_tags"])):
            c.delete_registered_model_tag(model_name, k)
        for k, val in sorted(snap["model_tags"].items()):
            if now["model_tags"].get(k) != val:
                c.set_registered_model_tag(model_name, k, val)
        for alias in sorted(set(now["aliases"]) - set(snap["aliases"])):
            c.delete_registered_model_alias(model_name, alias)
        for alias, v in sorted(snap["aliases"].items()):
            if now["aliases"].get(alias) != v:
                c.set_registered_model_alias(model_name, alias, v)
    except Exception as exc:  # report, do not mask the original failure
        return f"restoring the tags and aliases from the snapshot ALSO failed ({exc}); check `toolkit status`"
    return "tags and aliases restored from the snapshot taken before the change"
