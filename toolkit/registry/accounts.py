"""The desk's accounts on the shared registry's authenticated server (``toolkit registry up --auth``).

Three roles besides MLflow's ``admin`` (password ``MLFLOW_AUTH_ADMIN_PASSWORD``), each created
when its password is set in the environment of ``toolkit registry up --auth``, its password
reset to that value on every ``up``:

=============  ==================================  ===========================================
account        password from                       may
=============  ==================================  ===========================================
``promotion``  ``TOOLKIT_AUTH_PROMOTION_PASSWORD``  EDIT every registered model and experiment;
                                                   a promoter: moves ``paper`` / ``champion``
``researcher`` ``TOOLKIT_AUTH_RESEARCHER_PASSWORD`` EDIT every registered model and experiment
                                                   (runs, versions, tags); no alias
``runner``     ``TOOLKIT_AUTH_RUNNER_PASSWORD``     READ every registered model and experiment
=============  ==================================  ===========================================

The grants are MLflow's wildcard grants (``resource_id "*"``), so they cover models registered
later; MLflow still grants MANAGE on a model to whoever creates it (a researcher's first
backtest), which is why the alias rule lives in the server app (``toolkit.registry.auth_app``),
not in permissions. Further promoters (engineers) are named in ``TOOLKIT_AUTH_PROMOTERS``
(comma-separated) and written to the server's auth configuration.

Talks to the server's REST API with ``urllib`` as the admin; no password is printed, logged or
put in a URL (HTTP basic authentication headers only).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolkit.errors import ConfigurationError, RegistryError

__all__ = ["ACCOUNTS", "ADMIN_USER", "Account", "ensure_accounts", "promoters"]

ADMIN_USER = "admin"
PROMOTERS_ENV = "TOOLKIT_AUTH_PROMOTERS"
_ALL = ("registered_model", "experiment")


@dataclass(frozen=True)
class Account:
    """One desk account: its name, where its password comes from, what it may do."""

    username: str
    password_env: str
    permission: str  # on every registered model and experiment (wildcard grants)
    promoter: bool

    def __repr__(self) -> str:
        return f"Account({self.username!r}, password from ${self.password_env}, {self.permission})"


ACCOUNTS = (
    Account("promotion", "TOOLKIT_AUTH_PROMOTION_PASSWORD", "EDIT", promoter=True),
    Account("researcher", "TOOLKIT_AUTH_RESEARCHER_PASSWORD", "EDIT", promoter=False),
    Account("runner", "TOOLKIT_AUTH_RUNNER_PASSWORD", "READ", promoter=False),
)


def promoters(env: Mapping[str, str]) -> list[str]:
    """Return the promoter accounts: ``promotion`` and those named in ``TOOLKIT_AUTH_PROMOTERS``.

    Raises
    ------
    ConfigurationError
        A name in ``TOOLKIT_AUTH_PROMOTERS`` is not a plain account name.
    """
    extra = [n.strip() for n in env.get(PROMOTERS_ENV, "").split(",") if n.strip()]
    for name in extra:
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigurationError(PROMOTERS_ENV, "comma-separated account names (letters, digits, - _ .)", name)
    return list(dict.fromkeys([*(a.username for a in ACCOUNTS if a.promoter), *extra]))


def _call(uri: str, admin_password: str, method: str, path: str, body: dict[str, Any] | None = None,
          query: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    url = f"{uri}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    token = base64.b64encode(f"{ADMIN_USER}:{admin_password}".encode()).decode()
    req = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw.strip() else {}
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, {"message": raw.decode(errors="replace")[:300]}
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"registry server {uri}: {method} {path} failed: {exc}") from exc


def _expect(status: int, answer: dict[str, Any], what: str, ok: tuple[int, ...] = (200,)) -> None:
    if status not in ok:
        hint = " (is MLFLOW_AUTH_ADMIN_PASSWORD the admin's password?)" if status == 401 else ""
        raise RegistryError(f"registry server: {what} failed with HTTP {status}: "
                            f"{answer.get('message', answer)}{hint}")


def _ensure_user(uri: str, admin_pw: str, username: str, password: str) -> str:
    status, answer = _call(uri, admin_pw, "GET", "/api/2.0/mlflow/users/get", query={"username": username})
    if status == 200:
        status, answer = _call(uri, admin_pw, "PATCH", "/api/2.0/mlflow/users/update-password",
                               {"username": username, "password": password})
        _expect(status, answer, f"setting the password of account {username!r}")
        return "updated"
    _expect(status, answer, f"looking up account {username!r}", ok=(404,))
    status, answer = _call(uri, admin_pw, "POST", "/api/2.0/mlflow/users/create",
                           {"username": username, "password": password})
    _expect(status, answer, f"creating account {username!r}")
    return "created"


def _grant(uri: str, admin_pw: str, username: str, resource_type: str, permission: str) -> None:
    body = {"username": username, "resource_type": resource_type, "resource_id": "*", "permission": permission}
    status, answer = _call(uri, admin_pw, "POST", "/api/3.0/mlflow/users/permissions/grant", body)
    if status != 200 and answer.get("error_code") == "RESOURCE_ALREADY_EXISTS":  # re-grant at this level
        status, answer = _call(uri, admin_pw, "POST", "/api/3.0/mlflow/users/permissions/revoke",
                               {k: body[k] for k in ("username", "resource_type", "resource_id")})
        _expect(status, answer, f"revoking {username!r}'s previous grant on every {resource_type}")
        status, answer = _call(uri, admin_pw, "POST", "/api/3.0/mlflow/users/permissions/grant", body)
    _expect(status, answer, f"granting {username!r} {permission} on every {resource_type}")


def ensure_accounts(uri: str, env: Mapping[str, str]) -> list[str]:
    """Create (or reset the password of) every account whose password is in ``env``; grant its permissions.

    Returns one line per account, naming no password.

    Raises
    ------
    ConfigurationError
        ``MLFLOW_AUTH_ADMIN_PASSWORD`` is unset.
    RegistryError
        The server refused or failed a call (the message names which, never a password).
    """
    admin_pw = env.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    if not admin_pw:
        raise ConfigurationError("MLFLOW_AUTH_ADMIN_PASSWORD", "the basic-auth admin's password in the environment",
                                 "unset")
    lines = []
    for acc in ACCOUNTS:
        password = env.get(acc.password_env)
        if not password:
            lines.append(f"account {acc.username}: not created (${acc.password_env} unset)")
            continue
        done = _ensure_user(uri, admin_pw, acc.username, password)
        for resource_type in _ALL:
            _grant(uri, admin_pw, acc.username, resource_type, acc.permission)
        lines.append(f"account {acc.username}: {done}, {acc.permission} on every registered model and experiment"
                     + (", promoter" if acc.promoter else ""))
    return lines
