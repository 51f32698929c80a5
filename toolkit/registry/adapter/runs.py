"""Runs, metrics, artifacts, logged models and the clean-up of a failed recording (MLflow)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from toolkit.errors import RegistryError
from toolkit.registry.adapter.models import (
    VERDICT_FILE,
    GateArtifacts,
    _client,
    list_versions,
    mlflow_call,
    model_exists,
    version_info,
)

__all__ = [
    "create_run",
    "download_artifacts",
    "download_evidence",
    "download_gate_artifacts",
    "end_run",
    "find_runs",
    "list_artifact_paths",
    "log_artifact",
    "log_artifacts",
    "log_metric",
    "log_metrics",
    "log_model_from_code",
    "log_params",
    "purge_failed_recording",
    "registry_trial_count",
    "run_metrics",
    "run_tags",
]


# -- runs ---------------------------------------------------------------------------------------------
def run_tags(run_id: str) -> dict[str, str]:
    """Return the tags of run ``run_id``."""
    with mlflow_call(f"reading run {run_id}"):
        return {str(k): str(v) for k, v in _client().get_run(run_id).data.tags.items()}


def run_metrics(run_id: str) -> dict[str, float]:
    """Return the latest value of each metric of run ``run_id``."""
    with mlflow_call(f"reading run {run_id}"):
        return {str(k): float(v) for k, v in _client().get_run(run_id).data.metrics.items()}


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


def download_gate_artifacts(model_name: str, version: str | int, dst: str | Path, stage: str) -> GateArtifacts:
    """Download the latest gates run of a version at ``stage``: its verdict file and its extra evidence.

    Raises
    ------
    RegistryError
        The version has no ``gate.<stage>.run_id`` or the run's artifacts cannot be read.
    """
    info = version_info(model_name, version)
    tag = f"gate.{stage}.run_id"
    run_id = info.tags.get(tag)
    what = f"{model_name} version {info.version}"
    if not run_id:
        raise RegistryError(f"{what}: no {stage} gates run recorded (tag {tag} missing)")
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


def load_python_model(model_name: str, version: str | int) -> tuple[Any, dict[str, Any]]:
    """Load a registered version (models-from-code pyfunc); return its python model and its ``model_config``.

    The python model is the version's own object (``strategy_model.StrategyModel``, built from
    the strategies package shipped with the version), so its strategy and sizing are the code
    the version was backtested with.

    Raises
    ------
    RegistryError
        The version cannot be loaded.
    """
    import mlflow

    uri = f"models:/{model_name}/{version}"
    try:
        loaded = mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MlflowException, or the model code failing to import
        raise RegistryError(f"MLflow: loading {uri} failed: {exc}") from exc
    return loaded.unwrap_python_model(), dict(loaded.model_config or {})
