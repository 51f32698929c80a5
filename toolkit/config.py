"""Locations and defaults shared by the whole toolkit.

Everything here can be overridden from the environment so that tests, CI and a
desk's shared server use the same code with other paths:

``MLFLOW_TRACKING_URI``   tracking store (default: sqlite file under ``mlflow/``)
``TOOLKIT_ARTIFACTS``     artifact root for new experiments (default ``mlflow/artifacts``)
``TOOLKIT_DATA_DIR``      user bar cache (default ``~/.cache/toolkit/bars``)
``TOOLKIT_REPORTS_DIR``   rendered reports (default ``reports/``)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "BUNDLED_DIR",
    "KERNEL_NAME",
    "PROJECT_ROOT",
    "TEMPLATES_DIR",
    "artifact_root",
    "cache_dir",
    "local_store_file",
    "reports_dir",
    "tracking_uri",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DIR = Path(__file__).resolve().parent / "data" / "bundled"
TEMPLATES_DIR = PROJECT_ROOT / "templates"
#: The Jupyter kernel installed into the project's venv by ``make``; templates
#: run on it so a user-level ``python3`` kernelspec elsewhere cannot win.
KERNEL_NAME = "desk-toolkit"


def tracking_uri() -> str:
    """Return the MLflow tracking URI (environment first, then the local sqlite store)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{PROJECT_ROOT / 'mlflow' / 'mlflow.db'}"


def artifact_root() -> str:
    """Return the artifact root used when the toolkit creates an experiment."""
    env = os.environ.get("TOOLKIT_ARTIFACTS")
    if env:
        return env if "://" in env else Path(env).resolve().as_uri()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return (PROJECT_ROOT / "mlflow" / "artifacts").as_uri()


def local_store_file(env_var: str, name: str) -> Path:
    """Return ``$env_var`` when set, else ``name`` beside the sqlite tracking store (or the user cache).

    The trial ledger and the audit trail live next to the registry they belong to.
    """
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / name
    return cache_dir().parent / name


def cache_dir() -> Path:
    """Return the user's bar cache directory (fetched data lands here)."""
    env = os.environ.get("TOOLKIT_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "toolkit" / "bars"


def reports_dir() -> Path:
    """Return where rendered notebooks and HTML reports are written."""
    env = os.environ.get("TOOLKIT_REPORTS_DIR")
    return Path(env) if env else PROJECT_ROOT / "reports"
