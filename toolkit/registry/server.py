"""The desk's shared registry on loopback: a real PostgreSQL and ``mlflow server`` over it.

``up`` initialises (first time) a PostgreSQL cluster with the system's binaries in
``<state>/pgdata`` (``toolkit.config.registry_state_dir()``: ``mlflow/server``, git-ignored),
starts it on a free loopback port (no Unix socket, password logins only), creates the roles
and databases, and starts ``mlflow server`` with PostgreSQL as its backend store and proxied
artifacts (``--serve-artifacts``, ``<state>/artifacts``) on another free loopback port. With
``auth=True`` the server runs the desk's ``desk-auth`` app (``toolkit.registry.auth_app``: MLflow's
``basic-auth`` plus "only promoters move aliases"), its user store in PostgreSQL too, and the
desk's accounts are created from the environment (``toolkit.registry.accounts``).
``down`` stops both and checks that no process or port is left.

Roles: ``desk_admin`` (the cluster's superuser, owns the toolkit's tables) and ``toolkit`` (what
the desk's processes log in as: owns MLflow's database, may only ``SELECT`` and ``INSERT`` the
audit trail and the trial ledger, so it cannot drop their triggers). Passwords are generated
on first start and kept only in ``<state>/pgpass`` (mode 0600), libpq's password file, which
clients name with ``PGPASSFILE``: no password is printed, logged or put in a URL.

PostgreSQL refuses to run as root: when this process is root, the cluster runs as the system
user ``postgres`` (which must be able to traverse to the state folder).

This module starts programs; it imports neither MLflow nor psycopg (``toolkit.database`` does).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.database import Database
from toolkit.errors import ConfigurationError, RegistryError
from toolkit.registry.accounts import ensure_accounts, promoters

__all__ = ["RegistryEndpoints", "down", "postgres_bin", "running", "up"]

STATE_FILE = "state.json"
ADMIN, APP = "desk_admin", "toolkit"
DATABASES = ("mlflow", "desk", "mlflow_auth")
HOST = "127.0.0.1"
AUTH_APP = "desk-auth"  # toolkit.registry.auth_app: MLflow's basic-auth + only promoters move aliases


@dataclass(frozen=True)
class RegistryEndpoints:
    """Where the running shared registry is (no secret in here)."""

    root: Path
    tracking_uri: str
    database_url: str
    pgpass: Path
    pg_port: int
    mlflow_port: int
    auth: bool
    postgres_pid: int
    mlflow_pgid: int

    def env(self) -> dict[str, str]:
        """Return the environment a desk process needs to use this registry."""
        return {"MLFLOW_TRACKING_URI": self.tracking_uri, "TOOLKIT_DATABASE_URL": self.database_url,
                "PGPASSFILE": str(self.pgpass)}

    def lines(self) -> list[str]:
        """Return ``NAME=value`` lines (``MLFLOW_TRACKING_URI`` first) to export."""
        return [f"{k}={v}" for k, v in self.env().items()]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"root": str(self.root), "tracking_uri": self.tracking_uri, "database_url": self.database_url,
                "pgpass": str(self.pgpass), "pg_port": self.pg_port, "mlflow_port": self.mlflow_port,
                "auth": self.auth, "postgres_pid": self.postgres_pid, "mlflow_pgid": self.mlflow_pgid}


def postgres_bin() -> Path:
    """Return the folder of the system's PostgreSQL server binaries (``TOOLKIT_PG_BIN`` overrides it).

    Raises
    ------
    ConfigurationError
        No folder with ``initdb``, ``pg_ctl`` and ``postgres`` was found.
    """
    env = os.environ.get("TOOLKIT_PG_BIN")
    candidates = [Path(env)] if env else sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                                key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                                                reverse=True)
    if not env and (which := shutil.which("pg_ctl")):
        candidates.append(Path(which).parent)
    for c in candidates:
        if all((c / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return c
    raise ConfigurationError("TOOLKIT_PG_BIN", "a folder holding PostgreSQL's initdb, pg_ctl and postgres "
                             "(Debian: apt-get install postgresql)", env or "none under /usr/lib/postgresql/*/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _pg_user() -> pwd.struct_passwd | None:
    """Return the user the cluster runs as when this process is root (else None: this user)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ConfigurationError("user", "a system user 'postgres' (PostgreSQL refuses to run as root)",
                                 "no such user") from None


def _run_pg(cmd: list[str], what: str, timeout: float = 120.0) -> str:
    user = _pg_user()
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          cwd="/", **kwargs)
    if proc.returncode != 0:
        raise RegistryError(f"PostgreSQL: {what} failed (exit {proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc.stdout


def _check_traversable(path: Path) -> None:
    user = _pg_user()
    if user is None:
        return
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid != user.pw_uid and not st.st_mode & stat.S_IXOTH:
            raise ConfigurationError("registry state folder", f"a path the user 'postgres' can traverse "
                                     f"(PostgreSQL runs as 'postgres' when started by root): {parent} "
                                     "lacks o+x", str(path))


def _read_pgpass(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split(":")
            if len(parts) == 5:
                out[parts[3]] = parts[4]
    return out


def _write_pgpass(path: Path, port: int, passwords: Mapping[str, str]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        for user, pw in passwords.items():
            fh.write(f"{HOST}:{port}:*:{user}:{pw}\n")
    os.chmod(path, 0o600)


def _init_cluster(root: Path, pgdata: Path, bin_dir: Path, passwords: dict[str, str]) -> None:
    user = _pg_user()
    pgdata.mkdir(mode=0o700)
    pwfile = root / ".initdb-pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(passwords[ADMIN] + "\n")
    try:
        if user is not None:
            os.chown(pgdata, user.pw_uid, user.pw_gid)
            os.chown(pwfile, user.pw_uid, user.pw_gid)
        _run_pg([str(bin_dir / "initdb"), "-D", str(pgdata), "-U", ADMIN, f"--pwfile={pwfile}", "-E", "UTF8",
                 "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--no-instructions"], "initdb")
    finally:
        pwfile.unlink(missing_ok=True)


def _admin_db(port: int, pgpass: Path, dbname: str) -> Database:
    return Database(f"postgresql://{ADMIN}@{HOST}:{port}/{dbname}?passfile={pgpass}")


def _provision(port: int, pgpass: Path, app_password: str) -> None:
    """Create the app role, the databases and the toolkit's tables (idempotent)."""
    from toolkit.backtest.ledger import PG_DDL as LEDGER_DDL
    from toolkit.registry.audit_pg import AUDIT_DDL

    if not app_password.replace("-", "").replace("_", "").isalnum():  # token_urlsafe: safe to quote inline
        raise RegistryError(f"the password of role {APP} in {pgpass} holds characters other than A-Z a-z 0-9 - _")
    with _admin_db(port, pgpass, "postgres").connect("creating the roles and databases", autocommit=True) as con:
        if con.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP,)).fetchone() is None:
            con.execute(f"CREATE ROLE {APP} LOGIN PASSWORD '{app_password}'")
        for db in DATABASES:
            if con.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,)).fetchone() is None:
                con.execute(f"CREATE DATABASE {db} OWNER {ADMIN if db == 'desk' else APP}")
    _admin_db(port, pgpass, "desk").execute_script("creating the toolkit's tables", [
        *AUDIT_DDL, *LEDGER_DDL,
        "REVOKE ALL ON DATABASE desk FROM PUBLIC",
        f"GRANT CONNECT ON DATABASE desk TO {APP}",
        f"GRANT USAGE ON SCHEMA toolkit TO {APP}",
        f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA toolkit TO {APP}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA toolkit TO {APP}",
    ])


def _auth_ini(root: Path, port: int, promoters: list[str]) -> Path:
    """Write the auth app's configuration: basic-auth's ``[mlflow]`` and the desk's ``[desk_auth]`` promoters."""
    ini = root / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = postgresql+psycopg://{APP}@{HOST}:{port}/mlflow_auth\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # a checked password is trusted for 60 s instead of paying PBKDF2 (werkzeug's 600,000 rounds) on every
        # request; a password change or a deleted account takes up to 60 s to reach the other worker
        "auth_cache_ttl_seconds = 60\n"
        "\n[desk_auth]\n"
        f"promoters = {', '.join(promoters)}\n")
    return ini


def _flask_secret(root: Path) -> str:
    """Return the auth app's CSRF secret key: generated at the first start, kept in ``<state>/flask-secret`` (0600)."""
    path = root / "flask-secret"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _mlflow_exe() -> list[str]:
    exe = Path(sys.executable).parent / "mlflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RegistryError(f"mlflow server exited with status {proc.returncode} while starting; "
                                f"its log {log} ends with: {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RegistryError(f"mlflow server did not answer {url} within {timeout:.0f} s; its log {log} "
                        f"ends with: {_tail(log)}")


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip() or "(empty)"
    except OSError:
        return "(no log)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit status when it is this process's child (a zombie would look alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    """Return whether a live (not zombie) process is in group ``pgid``.

    The server may have been started by another test worker, whose child it is: once stopped it stays a
    zombie until that worker reaps it, and ``killpg(pgid, 0)`` still finds it. /proc tells the states apart.
    """
    _reap(pgid)
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: signal 0 (a zombie counts as alive there)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in proc.glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
            return True
    return False


def _load(root: Path) -> RegistryEndpoints | None:
    f = root / STATE_FILE
    if not f.exists():
        return None
    d = json.loads(f.read_text())
    d["root"], d["pgpass"] = Path(d["root"]), Path(d["pgpass"])
    return RegistryEndpoints(**d)


def running(root: Path | None = None) -> RegistryEndpoints | None:
    """Return the endpoints of the registry running from ``root``, or None when it is not (fully) running."""
    ep = _load(root or config.registry_state_dir())
    if ep is None or not (_alive(ep.postgres_pid) and _group_alive(ep.mlflow_pgid)):
        return None
    return ep


def up(root: Path | None = None, auth: bool = False, timeout: float = 240.0,
       env: Mapping[str, str] | None = None) -> RegistryEndpoints:
    """Start PostgreSQL and ``mlflow server`` on loopback (or return the running pair) and return where they are.

    ``auth`` runs the ``desk-auth`` app (basic-auth + only promoters move aliases); its admin password
    comes from ``MLFLOW_AUTH_ADMIN_PASSWORD`` (in ``env`` or the environment; required the first time),
    the desk's accounts from ``TOOLKIT_AUTH_*`` (``toolkit.registry.accounts``), created or updated
    on every call.

    Raises
    ------
    ConfigurationError
        No PostgreSQL binaries, the state folder unusable, or ``auth`` without an admin password.
    RegistryError
        PostgreSQL or the server failed to start (the message quotes its log); whatever had
        started is stopped again.
    """
    root = (root or config.registry_state_dir()).resolve()
    existing = running(root)
    if existing is not None:
        if existing.auth != auth:
            raise ConfigurationError("auth", f"{existing.auth} (the registry running from {root}); "
                                     "run `toolkit registry down` first to change it", auth)
        if auth:  # accounts whose passwords were set since: create them (the promoters list needs a restart)
            ensure_accounts(existing.tracking_uri, {**os.environ, **(env or {})})
        return existing
    if _load(root) is not None:  # half-running leftovers of a crash: stop them first
        down(root)
    environ = {**os.environ, **(env or {})}
    if auth and not environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        raise ConfigurationError("MLFLOW_AUTH_ADMIN_PASSWORD", "the basic-auth admin's password in the environment",
                                 "unset")
    if auth:
        promoters(environ)  # a bad TOOLKIT_AUTH_PROMOTERS fails before anything starts
    bin_dir = postgres_bin()
    root.mkdir(parents=True, exist_ok=True)
    _check_traversable(root)
    pgdata, pgpass, artifacts = root / "pgdata", root / "pgpass", root / "artifacts"
    artifacts.mkdir(exist_ok=True)
    passwords = _read_pgpass(pgpass)
    fresh = not (pgdata / "PG_VERSION").exists()
    if fresh:
        if pgdata.exists():
            shutil.rmtree(pgdata)
        passwords = {ADMIN: secrets.token_urlsafe(24), APP: secrets.token_urlsafe(24)}
        _init_cluster(root, pgdata, bin_dir, passwords)
    elif set(passwords) != {ADMIN, APP}:
        raise ConfigurationError("pgpass", f"the password file {pgpass} written when {pgdata} was created",
                                 "missing or incomplete")
    pg_port = _free_port()
    _write_pgpass(pgpass, pg_port, passwords)  # the port changes with every start
    log = root / "postgres.log"
    if _pg_user() is not None:
        log.touch()
        user = _pg_user()
        assert user is not None
        os.chown(log, user.pw_uid, user.pw_gid)
    _run_pg([str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-t", "60", "-o",
             f"-c listen_addresses={HOST} -c port={pg_port} -c unix_socket_directories=''", "start"],
            f"starting PostgreSQL on {HOST}:{pg_port} (log {log})")
    postgres_pid = int((pgdata / "postmaster.pid").read_text().split()[0])
    proc: subprocess.Popen[bytes] | None = None
    try:
        _provision(pg_port, pgpass, passwords[APP])
        mlflow_port = _free_port()
        server_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # MLflow's GenAI job workers: not used here
                      **{k: v for k, v in environ.items() if not k.startswith("TOOLKIT_AUTH_")},  # not its business
                      "PGPASSFILE": str(pgpass)}
        # uvicorn kills a worker that does not answer its health check within 5 s, which a worker still
        # importing MLflow on a loaded 2-core machine does not: it would be restarted, and killed, forever
        cmd = [*_mlflow_exe(), "server", "--host", HOST, "--port", str(mlflow_port), "--workers", "2",
               "--uvicorn-opts", "--timeout-worker-healthcheck 120",
               "--backend-store-uri", f"postgresql+psycopg://{APP}@{HOST}:{pg_port}/mlflow",
               "--serve-artifacts", "--artifacts-destination", str(artifacts)]
        if auth:
            server_env["MLFLOW_AUTH_CONFIG_PATH"] = str(_auth_ini(root, pg_port, promoters(environ)))
            server_env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = _flask_secret(root)
            cmd += ["--app-name", AUTH_APP]
        server_log = root / "mlflow-server.log"
        with server_log.open("ab") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=server_env, cwd=root, start_new_session=True)
        ep = RegistryEndpoints(root=root, tracking_uri=f"http://{HOST}:{mlflow_port}",
                               database_url=f"postgresql://{APP}@{HOST}:{pg_port}/desk", pgpass=pgpass,
                               pg_port=pg_port, mlflow_port=mlflow_port, auth=auth, postgres_pid=postgres_pid,
                               mlflow_pgid=proc.pid)
        (root / STATE_FILE).write_text(json.dumps(ep.to_dict(), indent=2))
        _wait_http(f"{ep.tracking_uri}/health", proc, server_log, timeout)
        if auth:
            ensure_accounts(ep.tracking_uri, environ)
    except BaseException:
        if proc is not None:
            _stop_group(proc.pid, 20.0)
        _run_pg([str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"], "stopping PostgreSQL")
        (root / STATE_FILE).unlink(missing_ok=True)
        raise
    return ep


def _stop_group(pgid: int, timeout: float) -> bool:
    """SIGTERM the process group, SIGKILL what is left after ``timeout``; return True when it had to kill."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return False
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 10
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def down(root: Path | None = None, timeout: float = 60.0) -> list[str]:
    """Stop the server and PostgreSQL started from ``root``; return one line per thing stopped.

    The data directory stays (the next ``up`` starts on the same registry).

    Raises
    ------
    RegistryError
        A process or a port is still there afterwards.
    """
    root = (root or config.registry_state_dir()).resolve()
    ep = _load(root)
    done: list[str] = []
    if ep is None:
        return done
    if _group_alive(ep.mlflow_pgid):
        killed = _stop_group(ep.mlflow_pgid, min(10.0, timeout / 2))
        done.append(f"mlflow server (process group {ep.mlflow_pgid}) {'killed' if killed else 'stopped'}")
    pgdata = root / "pgdata"
    if _alive(ep.postgres_pid) and (pgdata / "postmaster.pid").exists():
        _run_pg([str(postgres_bin() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "-t", str(int(timeout)),
                 "stop"], "stopping PostgreSQL")
        done.append(f"PostgreSQL (pid {ep.postgres_pid}) stopped")
    deadline = time.monotonic() + 10
    left = []
    while time.monotonic() < deadline:
        left = [what for what, on in (
            (f"mlflow server process group {ep.mlflow_pgid}", _group_alive(ep.mlflow_pgid)),
            (f"PostgreSQL pid {ep.postgres_pid}", _alive(ep.postgres_pid)),
            (f"port {ep.mlflow_port}", _port_open(ep.mlflow_port)),
            (f"port {ep.pg_port}", _port_open(ep.pg_port))) if on]
        if not left:
            break
        time.sleep(0.1)
    if left:
        raise RegistryError(f"registry in {root}: still running after stop: {', '.join(left)}")
    (root / STATE_FILE).unlink(missing_ok=True)
    return done
