"""The desk's MLflow server app: MLflow's basic-auth, plus "only promoters move aliases".

``mlflow server --app-name desk-auth`` (the ``mlflow.app`` entry point in pyproject.toml) serves
MLflow's own ``basic-auth`` app unchanged -- users, passwords, per-resource permissions, the
creator's MANAGE grant -- and adds one rule after it: setting or deleting a registered model
alias (``POST`` / ``DELETE`` on ``/api/2.0/mlflow/registered-models/alias`` and the
``/ajax-api/2.0/...`` twin the UI calls) is refused with HTTP 403 and MLflow's error JSON
(``PERMISSION_DENIED``) unless the authenticated user is an admin or a promoter. Deleting a
model version that holds an alias, or a registered model that has one, removes the alias too,
so both are refused to non-promoters in the same way.

Basic-auth decides first (a wrong password is its 401, a missing EDIT permission its 403); this
rule only ever refuses more. Promoters are listed on the server, in the auth configuration file
that ``MLFLOW_AUTH_CONFIG_PATH`` names::

    [desk_auth]
    promoters = promotion, alice

The aliases of prompts share the endpoint and are guarded alike. Read by every server worker at
start: a change needs a server restart.

Every authenticated user may also ask ``GET /api/2.0/desk-auth/promoter`` (``{"user", "promoter"}``),
registered in basic-auth's validator table as open to any authenticated user (basic-auth refuses a
route it has no validator for); ``toolkit promote`` asks before it writes anything.

This is the one module that imports MLflow's server (Flask) code; it runs inside ``mlflow server``.
"""

from __future__ import annotations

import configparser
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["PROMOTERS_KEY", "PROMOTER_PATH", "SECTION", "create_app", "read_promoters"]

SECTION, PROMOTERS_KEY = "desk_auth", "promoters"
ALIAS_PATH = "/mlflow/registered-models/alias"
DELETE_VERSION_PATH = "/mlflow/model-versions/delete"
DELETE_MODEL_PATH = "/mlflow/registered-models/delete"
PROMOTER_PATH = "/desk-auth/promoter"


def read_promoters(path: str | Path) -> frozenset[str]:
    """Return the accounts in ``[desk_auth] promoters`` (comma-separated) of the auth ini at ``path``.

    A missing section or key means no promoter but the admins.
    """
    parser = configparser.ConfigParser()
    parser.read(path)
    raw = parser.get(SECTION, PROMOTERS_KEY, fallback="")
    return frozenset(name.strip() for name in raw.split(",") if name.strip())


def _config_path() -> str:
    from mlflow.server.auth.config import _get_auth_config_path

    return str(_get_auth_config_path())


@contextmanager
def _bootstrap_lock(path: str) -> Iterator[None]:
    """Serialise basic-auth's store set-up (schema migrations, admin user) across this host's workers.

    ``mlflow server`` does that set-up once before starting the workers only for the app named
    ``basic-auth``; for any other app each worker does it, concurrently on a fresh database.
    """
    with open(path) as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _refusal(user: str, what: str) -> Any:
    from flask import Response
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    exc = MlflowException(
        f"Permission denied: user '{user}' may not {what}. Only promoters move registered model aliases "
        f"(admins and the accounts in [{SECTION}] {PROMOTERS_KEY} of the server's auth configuration).",
        error_code=PERMISSION_DENIED)
    return Response(exc.serialize_as_json(), status=403, mimetype="application/json")


def _params() -> dict[str, Any]:
    from flask import request

    body = request.get_json(silent=True, force=True)
    params: dict[str, Any] = dict(request.args)
    if isinstance(body, dict):
        params.update(body)
    return params


def _what(path: str, method: str, paths: dict[str, frozenset[str]]) -> str | None:
    """Return what the request would do to an alias (for the message), or None when it touches none."""
    from mlflow.server.handlers import _get_model_registry_store

    p = _params()
    name = str(p.get("name", ""))
    if path in paths["alias"] and method in ("POST", "DELETE"):
        verb = "set" if method == "POST" else "delete"
        return f"{verb} alias '{p.get('alias', '')}' of registered model '{name}'"
    if path in paths["version"] and method == "DELETE":
        try:
            aliases = list(_get_model_registry_store().get_model_version(name, str(p.get("version", ""))).aliases)
        except Exception:  # unknown version: basic-auth and the handler answer that
            return None
        return (f"delete version {p.get('version')} of registered model '{name}', which holds alias(es) "
                f"{', '.join(sorted(aliases))}") if aliases else None
    if path in paths["model"] and method == "DELETE":
        try:
            aliases = _alias_names(_get_model_registry_store().get_registered_model(name).aliases)
        except Exception:
            return None
        return f"delete registered model '{name}', which has alias(es) {', '.join(aliases)}" if aliases else None
    return None


def _alias_names(aliases: Any) -> list[str]:
    """Return the alias names of a registered model (a dict alias -> version, or alias entities)."""
    if isinstance(aliases, dict):
        return sorted(map(str, aliases))
    return sorted(str(getattr(a, "alias", a)) for a in aliases or ())


def _guard(promoters: frozenset[str]) -> Callable[[], Any]:
    from flask import g, request
    from mlflow.server.auth import store
    from mlflow.server.handlers import _get_paths

    paths = {"alias": frozenset(_get_paths(ALIAS_PATH)), "version": frozenset(_get_paths(DELETE_VERSION_PATH)),
             "model": frozenset(_get_paths(DELETE_MODEL_PATH))}
    watched = paths["alias"] | paths["version"] | paths["model"]

    def refuse_alias_changes_to_non_promoters() -> Any:
        if request.path not in watched or request.method not in ("POST", "DELETE"):
            return None
        user = g.get("mlflow_authenticated_user")
        if user is None:  # basic-auth authenticates every such route first; never let one through unnamed
            return _refusal("(unauthenticated)", "change registered model aliases")
        if user in promoters or store.get_user(user).is_admin:
            return None
        try:
            what = _what(request.path, request.method, paths)
        except Exception:  # never let an unexpected shape through: refuse (fail closed)
            what = "change registered model aliases (the request could not be read)"
        return None if what is None else _refusal(user, what)

    return refuse_alias_changes_to_non_promoters


def _promoter_view(promoters: frozenset[str]) -> Callable[[], Any]:
    from flask import g, jsonify
    from mlflow.server.auth import store

    def am_i_a_promoter() -> Any:
        user = g.get("mlflow_authenticated_user")
        return jsonify({"user": user, "promoter": bool(user) and (user in promoters or store.get_user(user).is_admin)})

    return am_i_a_promoter


def create_app(app: Any = None) -> Any:
    """Return MLflow's basic-auth app with the alias rule added (the ``desk-auth`` app factory).

    Also serves ``GET /api/2.0/desk-auth/promoter`` (and its ``/ajax-api`` twin) to every authenticated
    user: ``{"user": ..., "promoter": true|false}``, so ``toolkit promote`` can refuse before writing.
    """
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server import auth
    from mlflow.server.auth import create_app as basic_auth_app
    from mlflow.server.handlers import _get_paths

    flask_app = mlflow_flask_app if app is None else app
    path = _config_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MLFLOW_AUTH_CONFIG_PATH: expected the auth configuration file, found {path!r}")
    promoters = read_promoters(path)
    with _bootstrap_lock(path):
        served = basic_auth_app(flask_app)
    view = _promoter_view(promoters)
    for rule in _get_paths(PROMOTER_PATH):
        flask_app.add_url_rule(rule, "desk_auth_promoter" + rule.replace("/", "_"), view, methods=["GET"])
        # basic-auth refuses a route it has no validator for (fail-closed): any authenticated user may ask
        auth.BEFORE_REQUEST_VALIDATORS[(rule, "GET")] = lambda: True
    flask_app.before_request(_guard(promoters))  # after basic-auth's: it authenticates first
    return served
