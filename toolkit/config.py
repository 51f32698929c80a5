"""Locations and defaults shared by the whole toolkit.

Everything here can be overridden from the environment so that tests, CI and a
desk's shared server use the same code with other paths:

``MLFLOW_TRACKING_URI``   tracking store (default: sqlite file under ``mlflow/``)
``TOOLKIT_ARTIFACTS``     artifact root for new experiments (default ``mlflow/artifacts``)
``TOOLKIT_DATA_DIR``      user bar cache (default ``~/.cache/toolkit/bars``)
``TOOLKIT_REPORTS_DIR``   rendered reports (default ``reports/``)
``TOOLKIT_DATABASE_URL``  the desk's shared PostgreSQL database: trial ledger, audit trail and the
                          promotion lock live there (``toolkit.database``; docs/registry.md)
``TOOLKIT_REGISTRY_STATE`` where ``toolkit registry up`` keeps its PostgreSQL data directory,
                          artifacts, logs and pgpass file (default ``mlflow/server``)

With a shared tracking server (``MLFLOW_TRACKING_URI=http://...``) the ledger and the audit
trail must be shared too: without ``TOOLKIT_DATABASE_URL`` (or explicit ``TOOLKIT_LEDGER`` /
``TOOLKIT_AUDIT`` paths) the toolkit refuses to keep a private copy on one host.
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
    "registry_state_dir",
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


def artifact_root() -> str | None:
    """Return the artifact root used when the toolkit creates an experiment.

    None for a tracking server (``http(s)://``) when ``TOOLKIT_ARTIFACTS`` is unset: the server
    decides (``--serve-artifacts`` proxies uploads to its own store), so no host writes to a path
    only it can see.
    """
    env = os.environ.get("TOOLKIT_ARTIFACTS")
    if env:
        return env if "://" in env else Path(env).resolve().as_uri()
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        return None
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
    from toolkit.errors import ConfigurationError

    raise ConfigurationError(
        "TOOLKIT_DATABASE_URL",
        f"the desk's shared PostgreSQL database (postgresql://USER@HOST:PORT/DB) when the registry is shared, "
        f"or an explicit {env_var} path: the {name} of a shared registry must not be a private copy on one host",
        f"unset, with MLFLOW_TRACKING_URI={_redacted(uri)}")


def _redacted(uri: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{parts.username}:***@{host}", parts.path, parts.query, parts.fragment))


def registry_state_dir() -> Path:
    """Return where ``toolkit registry up`` keeps the local shared registry's state (git-ignored)."""
    env = os.environ.get("TOOLKIT_REGISTRY_STATE")
    return Path(env).resolve() if env else PROJECT_ROOT / "mlflow" / "server"


def cache_dir() -> Path:
    """Return the user's bar cache directory (fetched data lands here)."""
    env = os.environ.get("TOOLKIT_DATA_DIR")
    return Path(env) if env else Path.home() / ".cache" / "toolkit" / "bars"


def reports_dir() -> Path:
    """Return where rendered notebooks and HTML reports are written."""
    env = os.environ.get("TOOLKIT_REPORTS_DIR")
    return Path(env) if env else PROJECT_ROOT / "reports"
