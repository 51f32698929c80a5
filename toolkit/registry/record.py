"""Record a backtest: one MLflow run and one new version of a registered model, logged *from code*.

The run holds params, metrics, tags, the evidence bundle, the executed notebook and the
HTML report; the version is the chosen configuration as a models-from-code pyfunc
(``strategy_model.py`` plus the self-contained strategies package, shipped under a
name unique to its code so two versions with different strategy code load side by side
in one process). Everything is computed and checked before the run is created; if
anything fails after that, the version, a registered model this attempt created and the
run are removed again (``adapter.purge_failed_recording``), so a failure leaves no FAILED
run, no half-registered version and no empty model behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit import __version__, config
from toolkit.backtest.bundle import Bundle, bundle_sha256, load_bundle
from toolkit.errors import RegistryError
from toolkit.naming import validate_model_name
from toolkit.registry import adapter
from toolkit.registry.adapter import STAGE_ALIAS

__all__ = [
    "STRATEGIES_DIR",
    "STRATEGY_MODEL_FILE",
    "RecordedVersion",
    "file_sha256",
    "git_commit",
    "record_backtest",
    "strategies_package_name",
]

STRATEGY_MODEL_FILE = Path(__file__).with_name("strategy_model.py")
STRATEGIES_DIR = Path(__file__).resolve().parents[1] / "strategies"
SIGNATURE_INPUTS = [("datetime", "timestamp")] + [("double", c) for c in ("open", "high", "low", "close", "volume")]
SIGNATURE_OUTPUTS = [("double", "direction"), ("double", "target"), ("double", "position")]


@dataclass(frozen=True)
class RecordedVersion:
    """What a recorded backtest produced in MLflow."""

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    model_uri: str


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


def _strategies_sha(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(directory.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def strategies_package_name(directory: Path | None = None) -> str:
    """Return the top-level name the strategies code ships under: ``desk_strategies_<sha256[:12]>``."""
    return f"desk_strategies_{_strategies_sha(directory or STRATEGIES_DIR)[:12]}"


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{p}=={version(p)}" for p in ("mlflow", "pandas", "numpy", "pydantic", "numba")]


def _backtest_fields(bundle: Bundle, evidence_sha: str, template_sha: str | None) -> tuple[
        dict[str, str], dict[str, object], dict[str, float]]:
    cfg = bundle.config
    tags = {
        "toolkit.kind": "backtest",
        "toolkit.version": __version__,
        "git.commit": git_commit(),
        "data.hash": bundle.data_hash,
        "data.quality": "passed" if bundle.certificate.get("passed") else "failed",
        "template.sha256": template_sha or "none",
        "config.sha256": bundle.config_sha256,
        "evidence.sha256": evidence_sha,
        "backtest.id": bundle.backtest_id,
        "ledger.key": f"{cfg.strategy}|{cfg.symbol}",
        "strategy": cfg.strategy,
        "strategy.type": bundle.strategy_type,
        "symbol": cfg.symbol,
        "timeframe": cfg.timeframe,
    }
    params: dict[str, object] = {
        "strategy": cfg.strategy, "symbol": cfg.symbol, "timeframe": cfg.timeframe,
        "start": cfg.start, "end": cfg.end, "capital": cfg.capital, "split": cfg.split,
        "split_at": bundle.split_at, "grid": json.dumps(cfg.grid, sort_keys=True),
        "n_combinations": bundle.n_trials_run,
        **{f"cost.{k}": v for k, v in cfg.costs.model_dump().items()},
        **{f"param.{k}": v for k, v in bundle.chosen.items()},
    }
    metrics = {f"oos.{k}": v for k, v in bundle.metrics.items()}
    metrics.update({f"is.{k}": v for k, v in bundle.metrics_is.items()})
    metrics.update({f"benchmark.{k}": v for k, v in bundle.benchmark.items()})
    metrics["trials.ledger_total"] = bundle.n_trials
    return tags, params, {k: float(v) for k, v in metrics.items() if v is not None}


def record_backtest(bundle_dir: str | Path, notebook: str | Path | None = None,
                    html: str | Path | None = None, template_sha: str | None = None,
                    tracking_uri: str | None = None, allow_failed_quality: bool = False) -> RecordedVersion:
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
    allow_failed_quality
        Register even when the bars failed their data-quality certificate (tagged
        ``data.quality=failed``); refused by default.

    Raises
    ------
    DataQualityError
        The bars failed their certificate and ``allow_failed_quality`` is not set (nothing recorded).
    ConfigurationError
        The bundle's model name is not a valid name.
    RegistryError
        MLflow failed; whatever this call had created was removed again.
    """
    from toolkit.errors import DataQualityError

    bundle = load_bundle(bundle_dir)  # validates the bundle before anything touches MLflow
    name = validate_model_name(bundle.model_name)
    if not bundle.certificate.get("passed") and not allow_failed_quality:
        failed = ", ".join(str(f) for f in bundle.certificate.get("failed", [])) or "unknown checks"
        raise DataQualityError(
            f"{name}: the bars failed their data-quality certificate ({failed}); nothing was registered. "
            "Fix the data, or pass allow_failed_quality (CLI: --allow-failed-quality) to register it "
            "tagged data.quality=failed")
    evidence_sha = bundle_sha256(bundle_dir)
    tags, params, metrics = _backtest_fields(bundle, evidence_sha, template_sha)
    adapter.configure(tracking_uri)
    experiment_id = adapter.ensure_experiment(bundle.config.experiment)
    model_was_new = not adapter.model_exists(name)
    code = Path(tempfile.mkdtemp(prefix="toolkit-model-code-"))
    run_id: str | None = None
    version: str | None = None
    try:
        package = strategies_package_name()
        shutil.copytree(STRATEGIES_DIR, code / package, ignore=shutil.ignore_patterns("__pycache__"))
        run_id = adapter.create_run(experiment_id, f"{name} {bundle.backtest_id[:8]}", tags)
        adapter.log_params(run_id, params)
        adapter.log_metrics(run_id, metrics)
        adapter.log_artifacts(run_id, bundle_dir, "evidence")
        if notebook is not None:
            adapter.log_artifact(run_id, notebook, "notebook")
        if html is not None:
            adapter.log_artifact(run_id, html, "report")
        version = adapter.log_model_from_code(
            run_id, name, STRATEGY_MODEL_FILE, [code / package],
            {"strategy": bundle.config.strategy, "params": bundle.chosen, "timeframe": bundle.config.timeframe,
             "symbol": bundle.config.symbol, "strategies_package": package,
             "sizing": bundle.config.sizing.model_dump(), "bar_minutes": bundle.config.bar_minutes(),
             "required_history": bundle.required_history},
            SIGNATURE_INPUTS, SIGNATURE_OUTPUTS, _requirements())
        for key in ("data.hash", "data.quality", "evidence.sha256", "config.sha256", "strategy.type",
                    "backtest.id", "git.commit"):
            adapter.set_version_tag(name, version, key, tags[key])
        adapter.set_version_tag(name, version, "strategies.package", package)
        adapter.set_version_tag(name, version, "registered_at", bundle.created_at)
        for stage in STAGE_ALIAS:  # a verdict per stage, none yet
            adapter.set_version_tag(name, version, f"gate.{stage}.verdict", "not_evaluated")
        adapter.end_run(run_id, "FINISHED")
    except BaseException as exc:
        cleaned = adapter.purge_failed_recording(run_id, name, version, model_was_new)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise RegistryError(f"recording backtest {bundle.backtest_id} failed: {exc}; {cleaned}") from exc
    finally:
        shutil.rmtree(code, ignore_errors=True)
    assert run_id is not None and version is not None  # the try either set both or raised
    return RecordedVersion(run_id=run_id, experiment_id=experiment_id, model_name=name,
                           model_version=version, model_uri=f"models:/{name}/{version}")
