"""The PostgreSQL adapter: the only toolkit module that imports psycopg.

When the desk shares a registry, the trial ledger, the audit trail and the promotion
lock live in one PostgreSQL database that every host reaches, so that no host keeps a
private copy and a runner's automatic rollback on one host and a researcher's promote
on another are serialised. The toolkit finds that database by ``TOOLKIT_DATABASE_URL``
(``postgresql://USER@HOST:PORT/DB``), else by ``MLFLOW_TRACKING_URI`` when that is
itself a PostgreSQL URI (a tracking store used without a server). An MLflow server's
REST address does not say where its database is, hence the separate variable.

The password never appears in a URL the toolkit prints: give it through libpq's own
mechanisms (``PGPASSFILE``, ``PGPASSWORD``) or inside ``TOOLKIT_DATABASE_URL`` (it is
redacted from every message). psycopg errors are converted here: an unreachable or
refusing database is a ``RegistryError`` naming the redacted URL.

``advisory_lock`` holds a session-level ``pg_advisory_lock`` on a key derived from a
name (sha256, first 8 bytes, signed): it is released when the block ends or when the
holding connection dies (TCP keepalives detect a dead host), so a crashed promote
never leaves the registry locked.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from toolkit.errors import ConfigurationError, RegistryError, TemporaryError

__all__ = ["DATABASE_ENV", "Database", "advisory_key", "advisory_lock", "database_url", "redact"]

DATABASE_ENV = "TOOLKIT_DATABASE_URL"
_SCHEMES = ("postgresql", "postgres")


def _libpq_url(url: str, field: str) -> str:
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]  # postgresql+psycopg:// (SQLAlchemy) -> postgresql://
    if scheme not in _SCHEMES or not parts.hostname or not parts.path.strip("/"):
        raise ConfigurationError(field, "postgresql://USER@HOST:PORT/DATABASE", redact(url))
    return urlunsplit(("postgresql", parts.netloc, parts.path, parts.query, ""))


def database_url() -> str | None:
    """Return the shared PostgreSQL database (libpq URL), or None when the toolkit runs on local files.

    Raises
    ------
    ConfigurationError
        ``TOOLKIT_DATABASE_URL`` is set but is not a ``postgresql://`` URL with a host and a database.
    """
    env = os.environ.get(DATABASE_ENV, "").strip()
    if env:
        return _libpq_url(env, DATABASE_ENV)
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "")
    if tracking.split(":", 1)[0].split("+", 1)[0] in _SCHEMES:
        return _libpq_url(tracking, "MLFLOW_TRACKING_URI")
    return None


def redact(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit((parts.scheme, f"{user}@{netloc[-1]}", parts.path, parts.query, parts.fragment))


def advisory_key(name: str) -> int:
    """Return the signed 64-bit advisory-lock key of ``name`` (first 8 bytes of its sha256)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big", signed=True)


class Database:
    """One PostgreSQL database: short connections for reads and appends, converted errors."""

    def __init__(self, url: str | None = None) -> None:
        found = url if url is not None else database_url()
        if found is None:
            raise ConfigurationError(DATABASE_ENV, "postgresql://USER@HOST:PORT/DATABASE", "unset")
        self.url = _libpq_url(found, DATABASE_ENV)

    @property
    def display(self) -> str:
        """The URL without its password (for messages and reports)."""
        return redact(self.url)

    def __repr__(self) -> str:
        return f"Database({self.display!r})"

    @contextmanager
    def connect(self, what: str, autocommit: bool = False) -> Iterator[Any]:
        """Yield a connection (a transaction committed at the end of the block unless ``autocommit``).

        Raises
        ------
        RegistryError
            The database is unreachable, refuses the login, or a statement failed (``what`` names it).
        """
        import psycopg

        try:
            con = psycopg.connect(self.url, autocommit=autocommit, connect_timeout=10, keepalives=1,
                                  keepalives_idle=30, keepalives_interval=10, keepalives_count=3,
                                  application_name="desk-toolkit")
        except psycopg.Error as exc:
            raise RegistryError(f"PostgreSQL {self.display}: {what}: cannot connect: "
                                f"{_first_line(exc)}") from None
        try:
            with con:
                yield con
        except psycopg.Error as exc:
            raise RegistryError(f"PostgreSQL {self.display}: {what} failed: {_first_line(exc)}") from exc
        finally:
            con.close()

    def execute_script(self, what: str, statements: Sequence[str]) -> None:
        """Run ``statements`` in one transaction, serialised with every other schema change of the toolkit."""
        with self.connect(what) as con:
            con.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key("toolkit schema"),))
            for sql in statements:
                con.execute(sql)

    def exists(self, relation: str) -> bool:
        """Return True when the table ``relation`` (``schema.name``) exists."""
        with self.connect(f"looking up {relation}") as con:
            return con.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,)).fetchone()[0] is True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return redact(text[0]) if text else type(exc).__name__


@contextmanager
def advisory_lock(db: Database, names: Sequence[str], timeout: float = 120.0) -> Iterator[list[int]]:
    """Hold session-level advisory locks on ``names`` (taken in the order given) for the block.

    Raises
    ------
    TemporaryError
        A lock was not obtained within ``timeout`` seconds (another promote or rollback holds it).
    RegistryError
        The database is unreachable.
    """
    keys = [advisory_key(n) for n in names]
    deadline = time.monotonic() + timeout
    with db.connect(f"taking the promotion lock on {', '.join(names)}", autocommit=True) as con:
        held: list[int] = []
        try:
            for name, key in zip(names, keys, strict=True):
                while not con.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                    if time.monotonic() >= deadline:
                        raise TemporaryError(f"promotion lock {name!r} on {db.display}: still held by another "
                                             f"process after {timeout:.0f} s; retry")
                    time.sleep(0.05)
                held.append(key)
            yield keys
        finally:
            for key in reversed(held):
                con.execute("SELECT pg_advisory_unlock(%s)", (key,))
