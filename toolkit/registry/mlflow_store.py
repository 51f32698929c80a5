"""The MLflow adapter: the only toolkit module that talks to MLflow's tracking and registry APIs.

A backtest becomes one MLflow run (params, metrics, tags, evidence, notebook,
HTML report) and one new version of a registered model, logged *from code*
(``strategy_model.py`` plus the self-contained ``strategies`` package). The
version is created last; if anything fails after the run started, the run is
marked FAILED and a version created on the way is deleted, so a failure never
leaves a half-registered version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import __version__, config
from toolkit.backtest.bundle import bundle_sha256, load_bundle
from toolkit.errors import RegistryError

__all__ = [
    "STRATEGY_MODEL_FILE",
    "RecordedVersion",
    "client",
    "configure",
    "ensure_experiment",
    "file_sha256",
    "git_commit",
    "record_backtest",
]

log = logging.getLogger(__name__)

STRATEGY_MODEL_FILE = Path(__file__).with_name("strategy_model.py")
STRATEGIES_DIR = Path(__file__).resolve().parents[1] / "strategies"


@dataclass(frozen=True)
class RecordedVersion:
    """What a recorded backtest produced in MLflow."""

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    model_uri: str


def configure(tracking_uri: str | None = None) -> str:
    """Point MLflow at ``tracking_uri`` (default ``toolkit.config.tracking_uri()``) and return it."""
    import mlflow

    uri = tracking_uri or config.tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def client() -> Any:
    """Return an ``MlflowClient`` on the configured store."""
    from mlflow import MlflowClient

    return MlflowClient()


def ensure_experiment(name: str) -> str:
    """Return the id of experiment ``name``, creating it with the toolkit's artifact root."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    try:
        return str(c.create_experiment(name, artifact_location=f"{config.artifact_root()}/{safe}"))
    except Exception:  # a concurrent creator won the race
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def git_commit() -> str:
    """Return the project's git commit (suffixed ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=config.PROJECT_ROOT, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=config.PROJECT_ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_sha256(path: str | Path) -> str:
    """Return the sha256 hex digest of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _signature() -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    columns: list[ColSpec | TensorSpec] = [ColSpec("datetime", "timestamp")]
    columns += [ColSpec("double", c) for c in ("open", "high", "low", "close", "volume")]
    inputs = Schema(columns)
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "position")]))


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "pandas", "numpy", "pydantic")]


def _log_strategy_model(cfg: Any, chosen: dict[str, Any], name: str) -> Any:
    """Log the chosen configuration as a models-from-code pyfunc and register it as a new version of ``name``."""
    import mlflow

    return mlflow.pyfunc.log_model(
        name="strategy",
        python_model=str(STRATEGY_MODEL_FILE),
        code_paths=[str(STRATEGIES_DIR)],
        model_config={"strategy": cfg.strategy, "params": chosen, "timeframe": cfg.timeframe,
                      "symbol": cfg.symbol},
        signature=_signature(),
        pip_requirements=_requirements(),
        registered_model_name=name,
    )


def record_backtest(bundle_dir: str | Path, notebook: str | Path | None = None,
                    html: str | Path | None = None, template_sha: str | None = None,
                    tracking_uri: str | None = None) -> RecordedVersion:
    """Log a saved backtest bundle as an MLflow run and register its chosen configuration.

    Parameters
    ----------
    bundle_dir
        Directory written by ``toolkit.backtest.bundle.save_bundle``.
    notebook, html
        The executed notebook and its rendered report, attached when given.
    template_sha
        sha256 of the template that produced the bundle.
    tracking_uri
        Overrides ``toolkit.config.tracking_uri()``.
    """
    import mlflow

    bundle = load_bundle(bundle_dir)  # validates the bundle before anything touches MLflow
    evidence_sha = bundle_sha256(bundle_dir)
    cfg = bundle["config"]
    configure(tracking_uri)
    name = bundle["model_name"]
    tags = {
        "toolkit.kind": "backtest",
        "toolkit.version": __version__,
        "git.commit": git_commit(),
        "data.hash": bundle["data_hash"],
        "data.quality": "passed" if bundle["certificate"].get("passed") else "failed",
        "template.sha256": template_sha or "none",
        "config.sha256": bundle["config_sha256"],
        "evidence.sha256": evidence_sha,
        "backtest.id": bundle["backtest_id"],
        "ledger.key": f"{cfg.strategy}|{cfg.symbol}",
        "strategy": cfg.strategy,
        "strategy.type": bundle["strategy_type"],
        "symbol": cfg.symbol,
        "timeframe": cfg.timeframe,
    }
    params = {
        "strategy": cfg.strategy, "symbol": cfg.symbol, "timeframe": cfg.timeframe,
        "start": cfg.start, "end": cfg.end, "capital": cfg.capital, "split": cfg.split,
        "split_at": bundle["split_at"], "grid": json.dumps(cfg.grid, sort_keys=True),
        "n_combinations": bundle["n_trials_run"],
        **{f"cost.{k}": v for k, v in cfg.costs.model_dump().items()},
        **{f"param.{k}": v for k, v in bundle["chosen"].items()},
    }
    metrics = {f"oos.{k}": v for k, v in bundle["metrics"].items()}
    metrics.update({f"is.{k}": v for k, v in bundle["metrics_is"].items()})
    metrics.update({f"benchmark.{k}": v for k, v in bundle["benchmark"].items()})
    metrics["trials.ledger_total"] = bundle["n_trials"]
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}

    try:
        experiment_id = ensure_experiment(cfg.experiment)
    except Exception as exc:
        raise RegistryError(f"MLflow at {mlflow.get_tracking_uri()}: could not open experiment "
                            f"{cfg.experiment!r}: {exc}") from exc
    version = None
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{name} {bundle['backtest_id'][:8]}", tags=tags)
    try:
        mlflow.log_params({k: ("" if v is None else v) for k, v in params.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(bundle_dir), artifact_path="evidence")
        if notebook is not None:
            mlflow.log_artifact(str(notebook), artifact_path="notebook")
        if html is not None:
            mlflow.log_artifact(str(html), artifact_path="report")
        with warnings.catch_warnings():
            # the signature is explicit; MLflow's advice to add an input example is noise here
            warnings.filterwarnings("ignore", message="An input example was not provided")
            info = _log_strategy_model(cfg, bundle["chosen"], name)
        version = str(info.registered_model_version)
        c = client()
        for key in ("data.hash", "evidence.sha256", "config.sha256", "strategy.type", "backtest.id", "git.commit"):
            c.set_model_version_tag(name, version, key, tags[key])
        c.set_model_version_tag(name, version, "registered_at", bundle["created_at"])
        c.set_model_version_tag(name, version, "gate.verdict", "not_evaluated")
    except Exception as exc:
        mlflow.end_run(status="FAILED")
        if version is not None:
            try:
                client().delete_model_version(name, version)
            except Exception:  # pragma: no cover - best effort cleanup
                log.exception("could not delete half-registered version %s/%s", name, version)
        raise RegistryError(f"recording backtest {bundle['backtest_id']} failed: {exc}") from exc
    mlflow.end_run(status="FINISHED")
    return RecordedVersion(run_id=run.info.run_id, experiment_id=experiment_id, model_name=name,
                           model_version=version, model_uri=f"models:/{name}/{version}")

