"""The MLflow adapter: the only toolkit module that imports MLflow's tracking and registry APIs.

(The one other file that imports ``mlflow`` is ``strategy_model.py``, the models-from-code
entry point logged *inside* each version, which runs in the model's own environment.)

Thin on purpose: it reads registered models, versions, aliases, tags and runs, downloads
artifacts, and writes tags, aliases, runs and logged models. It imports nothing of the
backtest or the gates, so a process that only reads the registry (the runner, ``toolkit
status``) starts without pandas-heavy areas or vectorbt. MLflow errors are converted here:
a missing model or version is a ``ConfigurationError`` naming it, anything else a
``RegistryError`` naming what was being done.

State is read with ``get_model_version`` / ``get_model_version_by_alias`` /
``get_registered_model``: in MLflow 3.x ``search_model_versions`` returns empty ``aliases``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.errors import ConfigurationError, RegistryError
from toolkit.naming import safe_filename

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "GateArtifacts",
    "VersionInfo",
    "alias_version",
    "configure",
    "create_run",
    "delete_alias",
    "delete_model_tag",
    "delete_version_tag",
    "download_artifacts",
    "download_evidence",
    "download_gate_artifacts",
    "end_run",
    "ensure_experiment",
    "find_runs",
    "list_artifact_paths",
    "list_versions",
    "log_artifact",
    "log_artifacts",
    "log_metric",
    "log_metrics",
    "log_model_from_code",
    "log_params",
    "mlflow_call",
    "model_aliases",
    "model_exists",
    "model_tags",
    "purge_failed_recording",
    "registry_snapshot",
    "registry_trial_count",
    "require_model",
    "restore_registry_snapshot",
    "run_tags",
    "set_alias",
    "set_model_tag",
    "set_version_tag",
    "version_info",
]

#: The alias the runner trades; moved only by ``toolkit.registry.promotion``.
CHAMPION = "champion"
#: The alias on the newest version whose gate verdict passed.
CANDIDATE = "candidate"
VERDICT_FILE = "verdict.json"


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as the registry holds it (times UTC ISO 8601)."""

    model: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: Mapping[str, str] = field(default_factory=dict)
    status: str = ""
    created_at: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"model": self.model, "version": self.version, "run_id": self.run_id,
                "aliases": list(self.aliases), "tags": dict(self.tags), "status": self.status,
                "created_at": self.created_at, "source": self.source}


@dataclass(frozen=True)
class GateArtifacts:
    """Files of a version's latest gates run, downloaded: the verdict and the extra evidence directory."""

    verdict: Path
    evidence: Path


# -- connection and errors ---------------------------------------------------------------------------
def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (default ``toolkit.config.tracking_uri()``) and return it."""
    import mlflow

    uri = tracking_uri or config.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient()


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


def ensure_experiment(name: str) -> str:
    """Return the id of experiment ``name``, creating it under the toolkit's artifact root."""
    c = _client()
    with mlflow_call(f"opening experiment {name!r}"):
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            return str(c.create_experiment(name, artifact_location=f"{config.artifact_root()}/{safe_filename(name)}"))
        except Exception:  # a concurrent creator won the race
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
            return str(exp.experiment_id)


# -- registered models and versions -------------------------------------------------------------------
def model_exists(model_name: str) -> bool:
    """Return True when ``model_name`` is a registered model."""
    from mlflow.exceptions import MlflowException

    configure()
    try:
        _client().get_registered_model(model_name)
    except MlflowException as exc:
        if _missing(exc):
            return False
        raise RegistryError(f"MLflow: reading model {model_name!r} failed: {exc.message}") from exc
    return True


def require_model(model_name: str) -> Any:
    """Return the registered model ``model_name`` or raise ``ConfigurationError`` naming it."""
    from mlflow.exceptions import MlflowException

    configure()
    try:
        return _client().get_registered_model(model_name)
    except MlflowException as exc:
        if _missing(exc):
            raise ConfigurationError("model", "a registered model name", model_name) from None
        raise RegistryError(f"MLflow: reading model {model_name!r} failed: {exc.message}") from exc


def model_tags(model_name: str) -> dict[str, str]:
    """Return the registered model's own tags."""
    return {str(k): str(v) for k, v in sorted(dict(require_model(model_name).tags or {}).items())}


def list_versions(model_name: str) -> list[str]:
    """Return the versions of ``model_name``, oldest first (numeric order)."""
    require_model(model_name)
    with mlflow_call(f"listing versions of {model_name!r}"):
        found = _client().search_model_versions(f"name = '{model_name}'")
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
        return str(_client().get_model_version_by_alias(model_name, alias).version)


def _iso_ms(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(int(ms) / 1000, tz=UTC).isoformat()


def version_info(model_name: str, version: str | int) -> VersionInfo:
    """Return one version's state: tags, run id, aliases, status and creation time.

    Raises
    ------
    ConfigurationError
        The model or the version does not exist, or ``version`` is not a positive integer.
    """
    from mlflow.exceptions import MlflowException

    require_model(model_name)
    v = str(version).strip()
    if not v.isdigit() or int(v) < 1:
        raise ConfigurationError("version", "a positive integer", version)
    try:
        mv = _client().get_model_version(model_name, v)
    except MlflowException as exc:
        if _missing(exc):
            raise ConfigurationError("version", f"one of {list_versions(model_name)} of model {model_name!r}",
                                     version) from None
        raise RegistryError(f"MLflow: reading {model_name!r} version {v} failed: {exc.message}") from exc
    return VersionInfo(
        model=model_name, version=str(mv.version), run_id=mv.run_id or None,
        aliases=tuple(sorted(str(a) for a in (mv.aliases or []))),
        tags={str(k): str(val) for k, val in sorted(dict(mv.tags or {}).items())},
        status=str(mv.status), created_at=_iso_ms(mv.creation_timestamp), source=mv.source,
    )


def set_version_tag(model_name: str, version: str, key: str, value: str) -> None:
    """Set one tag on a version."""
    with mlflow_call(f"tagging {model_name!r} version {version} with {key}"):
        _client().set_model_version_tag(model_name, version, key, value)


def delete_version_tag(model_name: str, version: str, key: str) -> None:
    """Remove one tag from a version."""
    with mlflow_call(f"removing tag {key} from {model_name!r} version {version}"):
        _client().delete_model_version_tag(model_name, version, key)


def set_alias(model_name: str, alias: str, version: str) -> None:
    """Point ``alias`` at ``version``."""
    with mlflow_call(f"setting alias {alias!r} of {model_name!r} to version {version}"):
        _client().set_registered_model_alias(model_name, alias, version)


def delete_alias(model_name: str, alias: str) -> None:
    """Remove ``alias`` from the model."""
    with mlflow_call(f"removing alias {alias!r} of {model_name!r}"):
        _client().delete_registered_model_alias(model_name, alias)


def set_model_tag(model_name: str, key: str, value: str) -> None:
    """Set one tag on the registered model."""
    with mlflow_call(f"tagging model {model_name!r} with {key}"):
        _client().set_registered_model_tag(model_name, key, value)


def delete_model_tag(model_name: str, key: str) -> None:
    """Remove one tag from the registered model."""
    with mlflow_call(f"removing tag {key} from model {model_name!r}"):
        _client().delete_registered_model_tag(model_name, key)


def registry_snapshot(model_name: str) -> dict[str, Any]:
    """Return everything a promote or rollback may change: aliases, model tags, every version's tags.

    Two snapshots compare equal exactly when no alias or tag of the model changed.
    """
    rm = require_model(model_name)
    versions = {v: version_info(model_name, v) for v in list_versions(model_name)}
    return {
        "aliases": {str(k): str(val) for k, val in sorted(dict(rm.aliases or {}).items())},
        "model_tags": {str(k): str(val) for k, val in sorted(dict(rm.tags or {}).items())},
        "versions": {v: {"tags": dict(i.tags), "aliases": list(i.aliases)} for v, i in versions.items()},
    }


def restore_registry_snapshot(model_name: str, snap: dict[str, Any]) -> str:
    """Put every alias, model tag and version tag back as in ``snap`` (from ``registry_snapshot``).

    Returns
    -------
    str
        One line saying what happened; a failure to restore is reported here, never raised
        (the caller is already handling the failure that made the restore necessary).
    """
    c = _client()
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


# -- runs ---------------------------------------------------------------------------------------------
def run_tags(run_id: str) -> dict[str, str]:
    """Return the tags of run ``run_id``."""
    with mlflow_call(f"reading run {run_id}"):
        return {str(k): str(v) for k, v in _client().get_run(run_id).data.tags.items()}


def create_run(experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
    """Create a run (status RUNNING) and return its id."""
    with mlflow_call(f"starting run {run_name!r}"):
        return str(_client().create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id)


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark a run as ended with ``status`` (FINISHED or FAILED)."""
    with mlflow_call(f"ending run {run_id}"):
        _client().set_terminated(run_id, status=status)


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Store one file among the run's artifacts."""
    with mlflow_call(f"storing {Path(path).name} in run {run_id}"):
        _client().log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_artifacts(run_id: str, directory: str | Path, artifact_path: str | None = None) -> None:
    """Store a directory's files among the run's artifacts."""
    with mlflow_call(f"storing {Path(directory).name}/ in run {run_id}"):
        _client().log_artifacts(run_id, str(directory), artifact_path=artifact_path)


def log_metric(run_id: str, key: str, value: float, timestamp: int | None = None, step: int | None = None) -> None:
    """Log one metric value on a run."""
    with mlflow_call(f"logging metric {key} on run {run_id}"):
        _client().log_metric(run_id, key, float(value), timestamp=timestamp, step=step)


def log_params(run_id: str, params: Mapping[str, object]) -> None:
    """Log run parameters (None becomes an empty string)."""
    from mlflow.entities import Param

    with mlflow_call(f"logging parameters of run {run_id}"):
        _client().log_batch(run_id, params=[Param(k, "" if v is None else str(v)) for k, v in params.items()])


def log_metrics(run_id: str, metrics: Mapping[str, float]) -> None:
    """Log several metric values on a run at once."""
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    with mlflow_call(f"logging metrics of run {run_id}"):
        _client().log_batch(run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()])


def log_model_from_code(run_id: str, model_name: str, code_file: Path, code_paths: list[Path],
                        model_config: Mapping[str, Any], inputs: list[tuple[str, str]],
                        outputs: list[tuple[str, str]], requirements: list[str]) -> str:
    """Log a models-from-code pyfunc in run ``run_id``, register it as a new version of ``model_name``.

    ``inputs``/``outputs`` are (MLflow column type, name) pairs of the signature. Returns the version.
    """
    import warnings

    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema

    import mlflow

    signature = ModelSignature(inputs=Schema([ColSpec(t, n) for t, n in inputs]),  # type: ignore[arg-type]
                               outputs=Schema([ColSpec(t, n) for t, n in outputs]))  # type: ignore[arg-type]
    with mlflow_call(f"logging the model of run {run_id} as a version of {model_name!r}"), \
            mlflow.start_run(run_id=run_id), warnings.catch_warnings():
        # the signature is explicit; MLflow's advice to add an input example is noise here
        warnings.filterwarnings("ignore", message=".*An input example was not provided")
        info = mlflow.pyfunc.log_model(
            name="strategy", python_model=str(code_file), code_paths=[str(p) for p in code_paths],
            model_config=dict(model_config), signature=signature, pip_requirements=requirements,
            registered_model_name=model_name,
        )
    return str(info.registered_model_version)


def find_runs(experiment_id: str, filter_string: str, max_results: int = 1,
              order_by: list[str] | None = None) -> list[str]:
    """Return the ids of runs of an experiment matching ``filter_string``."""
    with mlflow_call(f"searching runs ({filter_string})"):
        found = _client().search_runs([experiment_id], filter_string=filter_string, max_results=max_results,
                                      order_by=order_by)
    return [str(r.info.run_id) for r in found]


def list_artifact_paths(run_id: str) -> list[str]:
    """Return the top-level artifact paths of a run."""
    with mlflow_call(f"listing artifacts of run {run_id}"):
        return [str(a.path) for a in _client().list_artifacts(run_id)]


def registry_trial_count(model_name: str, version: str | int) -> int:
    """Return the trials the registry recorded for this version's strategy and market, up to its run.

    Sums the ``n_combinations`` param of every backtest run, in any experiment and including
    deleted runs, tagged with the same ``ledger.key`` and started no later than the version's
    own run. The gates take the larger of this and the bundle's ledger as the deflated Sharpe
    ratio's N, so a fresh or swapped local ledger cannot hide trials.
    """
    from mlflow.entities import ViewType

    info = version_info(model_name, version)
    c = _client()
    with mlflow_call(f"reading run {info.run_id}"):
        run = c.get_run(info.run_id)
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


def purge_failed_recording(run_id: str | None, model_name: str, version: str | None, model_was_new: bool) -> str:
    """Remove what a failed recording left: the version, the registered model it created, the run and its model.

    The run and the logged model (MLflow 3 keeps a model's files apart from its run) are
    deleted and, on a SQL tracking store (sqlite, PostgreSQL), purged with their local
    artifacts, as ``mlflow gc`` would. Returns a line saying what was removed; a failure to
    clean up is reported in it, never raised (the caller is raising the original error).
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking._tracking_service.utils import _get_store

    done: list[str] = []
    c = _client()
    try:
        if version is not None:
            c.delete_model_version(model_name, version)
            done.append(f"version {version}")
        if model_was_new and model_exists(model_name) and not list_versions(model_name):
            c.delete_registered_model(model_name)
            done.append(f"model {model_name!r}")
        if run_id is not None:
            run = c.get_run(run_id)
            store = _get_store()
            purge = isinstance(store, SqlAlchemyStore)
            for logged in c.search_logged_models([run.info.experiment_id],
                                                 filter_string=f"source_run_id = '{run_id}'"):
                c.delete_logged_model(logged.model_id)
                if purge:
                    store._hard_delete_logged_model(logged.model_id)  # what `mlflow gc` does
                    _remove_local_artifacts(logged.artifact_location)
                done.append(f"logged model {logged.model_id}")
            c.delete_run(run_id)
            if purge:
                store._hard_delete_run(run_id)  # what `mlflow gc` does; no public call exists
                _remove_local_artifacts(run.info.artifact_uri)
                done.append(f"run {run_id} (purged)")
            else:
                done.append(f"run {run_id} (deleted; `mlflow gc` purges it)")
    except Exception as exc:
        return f"cleanup removed {', '.join(done) or 'nothing'} and then failed: {exc}"
    return f"removed {', '.join(done) or 'nothing'}"


def _remove_local_artifacts(artifact_uri: str | None) -> None:
    if artifact_uri and artifact_uri.startswith("file://"):
        from urllib.parse import unquote, urlparse

        shutil.rmtree(unquote(urlparse(artifact_uri).path), ignore_errors=True)


# -- artifacts ----------------------------------------------------------------------------------------
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


def download_artifacts(run_id: str, artifact_path: str, dst: str | Path, what: str) -> Path:
    """Download directory ``artifact_path`` of ``run_id`` and move its files directly into ``dst``."""
    import mlflow

    target_dir = Path(dst)
    target_dir.mkdir(parents=True, exist_ok=True)
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
            target = target_dir / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), str(target))
    return target_dir


def download_evidence(model_name: str, version: str | int, dst: str | Path) -> Path:
    """Copy the ``evidence/`` files of the version's backtest run into ``dst`` and return ``dst``."""
    info = version_info(model_name, version)
    if not info.run_id:
        raise RegistryError(f"{model_name} version {info.version}: no source run to read evidence from")
    return download_artifacts(info.run_id, "evidence", dst, f"{model_name} version {info.version}")


def download_gate_artifacts(model_name: str, version: str | int, dst: str | Path) -> GateArtifacts:
    """Download the latest gates run of a version: its verdict file and its extra evidence.

    Raises
    ------
    RegistryError
        The version has no ``gate.run_id`` or the run's artifacts cannot be read.
    """
    info = version_info(model_name, version)
    run_id = info.tags.get("gate.run_id")
    what = f"{model_name} version {info.version}"
    if not run_id:
        raise RegistryError(f"{what}: no gates run recorded (tag gate.run_id missing)")
    root = Path(dst)
    download_artifacts(run_id, "verdict", root / "verdict", what)
    evidence = root / "evidence"
    evidence.mkdir(parents=True, exist_ok=True)
    if "evidence" in list_artifact_paths(run_id):
        download_artifacts(run_id, "evidence", evidence, what)
    verdict = root / "verdict" / VERDICT_FILE
    if not verdict.is_file():
        raise RegistryError(f"{what}: gates run {run_id} has no verdict/{VERDICT_FILE}")
    return GateArtifacts(verdict=verdict, evidence=evidence)
