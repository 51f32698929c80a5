"""Connection, registered models, versions, aliases, tags and registry snapshots (MLflow)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.errors import AccessDenied, ConfigurationError, RegistryError
from toolkit.naming import safe_filename

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
    "delete_alias",
    "delete_model_tag",
    "delete_version_tag",
    "ensure_experiment",
    "list_versions",
    "may_move_aliases",
    "mlflow_call",
    "model_aliases",
    "model_exists",
    "model_tags",
    "registry_snapshot",
    "require_model",
    "restore_registry_snapshot",
    "set_alias",
    "set_model_tag",
    "set_version_tag",
    "version_info",
]


#: The alias the runner trades with real capital (stage ``live``); moved only by ``toolkit.registry.promotion``.
CHAMPION = "champion"
#: The alias the runner trades on paper (stage ``paper``); moved only by ``toolkit.registry.promotion``.
PAPER = "paper"
#: stage -> the alias a promotion at that stage moves
STAGE_ALIAS = {"paper": PAPER, "live": CHAMPION}
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
    # against a tracking server MLflow prints a "View run" link on stdout, which would break `--json` output
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def connect(tracking_uri: str | None = None) -> str:
    """Import MLflow, point it at the store and open its tracking and model-registry stores; return the URI.

    Reads only (an sqlite store is created on first use, as by any MLflow call). In a fresh process
    this costs seconds (MLflow's import, each store's schema check), so a workflow connects while a
    template's kernel starts rather than after its last cell.
    """
    uri = configure(tracking_uri)
    c = _client()
    with mlflow_call("connecting to the registry"):
        c.search_experiments(max_results=1)
        c.search_registered_models(max_results=1)
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
        if _denied(exc):
            raise AccessDenied(what, os.environ.get("MLFLOW_TRACKING_USERNAME"), exc.message) from exc
        raise RegistryError(f"MLflow: {what} failed: {exc.message}") from exc


def _denied(exc: Exception) -> bool:
    """Return True for the server's HTTP 403 (``PERMISSION_DENIED``, or a plain 403 body turned into an error)."""
    return getattr(exc, "error_code", "") == "PERMISSION_DENIED" or getattr(exc, "get_http_status_code",
                                                                            lambda: 0)() == 403


def ensure_experiment(name: str) -> str:
    """Return the id of experiment ``name``, creating it under the toolkit's artifact root."""
    c = _client()
    with mlflow_call(f"opening experiment {name!r}"):
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        try:
            root = config.artifact_root()  # None: the tracking server's own (proxied) artifact store
            location = f"{root}/{safe_filename(name)}" if root else None
            return str(c.create_experiment(name, artifact_location=location))
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


def may_move_aliases() -> tuple[bool, str | None]:
    """Ask the tracking server whether this account may move aliases: ``(allowed, account)``.

    A desk-auth server (``toolkit registry up --auth``) answers ``GET /api/2.0/desk-auth/promoter``;
    any other store or server (404) says nothing, so ``(True, None)``: the alias write itself is
    where a server refuses. Asking first lets a promotion be refused before it writes a tag.

    Raises
    ------
    AccessDenied
        The server does not know this account (HTTP 401: no or a wrong ``MLFLOW_TRACKING_PASSWORD``).
    """
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    import mlflow

    uri = mlflow.get_tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return True, None
    try:
        resp = http_request(get_default_host_creds(uri), "/api/2.0/desk-auth/promoter", "GET", max_retries=0,
                            timeout=30, raise_on_status=False)
    except Exception as exc:  # requests' connection errors: the writes that follow would fail the same way
        raise RegistryError(f"MLflow: asking {uri} whether this account may move aliases failed: {exc}") from exc
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if resp.status_code == 401:
        raise AccessDenied("any request", user, "not authenticated (check MLFLOW_TRACKING_USERNAME / "
                           "MLFLOW_TRACKING_PASSWORD)")
    if resp.status_code != 200:
        return True, None
    answer = resp.json()
    return bool(answer.get("promoter")), answer.get("user")


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
    return RESTORED


RESTORED = "tags and aliases restored from the snapshot taken before the change"


