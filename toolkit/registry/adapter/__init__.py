"""The MLflow adapter: the only toolkit code that imports MLflow's tracking and registry APIs.

(The one other file that imports ``mlflow`` is ``strategy_model.py``, the models-from-code
entry point logged *inside* each version, which runs in the model's own environment.)

Thin on purpose: it reads registered models, versions, aliases, tags and runs, downloads
artifacts, and writes tags, aliases, runs and logged models. It imports nothing of the
backtest or the gates, so a process that only reads the registry (the runner, ``toolkit
status``) starts without pandas-heavy areas or vectorbt. MLflow errors are converted here:
a missing model or version is a ``ConfigurationError`` naming it, anything else a
``RegistryError`` naming what was being done.

``models`` holds the connection, registered models, versions, aliases, tags and snapshots;
``runs`` the runs, metrics, artifacts, logged models and the clean-up of a failed recording.
State is read with ``get_model_version`` / ``get_model_version_by_alias`` /
``get_registered_model``: in MLflow 3.x ``search_model_versions`` returns empty ``aliases``.
"""

from toolkit.registry.adapter.models import (
    CHAMPION,
    PAPER,
    RESTORED,
    STAGE_ALIAS,
    VERDICT_FILE,
    GateArtifacts,
    VersionInfo,
    alias_version,
    configure,
    connect,
    delete_alias,
    delete_model_tag,
    delete_version_tag,
    ensure_experiment,
    list_versions,
    may_move_aliases,
    mlflow_call,
    model_aliases,
    model_exists,
    model_tags,
    registry_snapshot,
    require_model,
    restore_registry_snapshot,
    set_alias,
    set_model_tag,
    set_version_tag,
    version_info,
)
from toolkit.registry.adapter.runs import (
    create_run,
    download_artifacts,
    download_evidence,
    download_gate_artifacts,
    end_run,
    find_runs,
    list_artifact_paths,
    load_python_model,
    log_artifact,
    log_artifacts,
    log_metric,
    log_metrics,
    log_model_from_code,
    log_params,
    purge_failed_recording,
    registry_trial_count,
    run_metrics,
    run_tags,
)

__all__ = [
    "CHAMPION",
    "PAPER",
    "RESTORED",
    "STAGE_ALIAS",
    "VERDICT_FILE",
    "GateArtifacts",
    "VersionInfo",
    "alias_version",
    "configure",
    "connect",
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
    "load_python_model",
    "log_artifact",
    "log_artifacts",
    "log_metric",
    "log_metrics",
    "log_model_from_code",
    "log_params",
    "may_move_aliases",
    "mlflow_call",
    "model_aliases",
    "model_exists",
    "model_tags",
    "purge_failed_recording",
    "registry_snapshot",
    "registry_trial_count",
    "require_model",
    "restore_registry_snapshot",
    "run_metrics",
    "run_tags",
    "set_alias",
    "set_model_tag",
    "set_version_tag",
    "version_info",
]
