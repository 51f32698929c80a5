"""The promotion audit trail: an append-only, hash-chained SQLite log, and the registry lock.

Every promote and rollback attempt writes a ``started`` row before anything
changes, then one row with its outcome (``done``, ``refused`` or ``error``, the
last also when the attempt raised: unknown version, MLflow failure, lock
timeout): who, when (UTC), model, the stage (``paper`` moves alias ``paper``,
``live`` moves ``champion``), from -> to version, reason, the verdict sha. A
``started`` row without an outcome row means the process died part-way. The table
refuses UPDATE and DELETE (triggers), and each row carries the sha256 of its own
content chained to the previous row's, so an edit made with another tool is
detected by ``AuditLog.verify``. The file lives beside the local sqlite tracking
store (like the trial ledger), or at ``TOOLKIT_AUDIT``; it does not depend on
MLflow, so it survives a re-read or rebuild of the registry. The same events are
also written as version tags by ``toolkit.registry.promotion``.

The ``stage`` column was added with the paper and live stages: a log written before it
is migrated in place (``ALTER TABLE ... ADD COLUMN``, its old rows keep ``stage`` NULL),
and a row's sha covers ``stage`` whenever it is set, so old rows verify unchanged and
an edit of a new row's stage breaks the chain. Every new row must name its stage.

``registry_lock`` serialises promote and rollback across processes (``flock`` on
``<audit file>.lock``).

When the desk shares a PostgreSQL database (``TOOLKIT_DATABASE_URL``, ``toolkit.database``),
``AuditLog()`` without a path is the table ``toolkit.audit`` there
(``toolkit.registry.audit_pg.PgAuditLog``, same rows and guarantees), and ``promotion_lock``
takes a PostgreSQL advisory lock per model and stage instead of the local file lock, so the
lock holds across hosts. An explicit path always means a local SQLite file.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.canonical import canonical_json, sha256_hex
from toolkit.clock import Clock
from toolkit.errors import ConfigurationError, RegistryError, TemporaryError
from toolkit.registry.adapter import STAGE_ALIAS

__all__ = ["ACTIONS", "OUTCOMES", "STAGES", "AuditAttempt", "AuditEvent", "AuditLog", "default_actor",
           "default_audit_path", "promotion_lock", "registry_lock"]

ACTIONS = ("promote", "rollback")
STAGES = tuple(STAGE_ALIAS)
OUTCOMES = ("started", "done", "refused", "error")
_GENESIS = "0" * 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT,
    actor TEXT NOT NULL,
    at TEXT NOT NULL,
    reason TEXT NOT NULL,
    verdict_sha TEXT,
    policy_sha TEXT,
    detail TEXT NOT NULL,
    prev_sha TEXT NOT NULL,
    sha TEXT NOT NULL,
    stage TEXT
);
CREATE INDEX IF NOT EXISTS audit_model ON audit (model, seq);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
"""

_FIELDS = ("id", "model", "action", "outcome", "from_version", "to_version", "actor", "at", "reason",
           "verdict_sha", "policy_sha", "detail")


def default_actor() -> str:
    """Return who is acting: ``$USER``, else the login name, else ``unknown``."""
    env = os.environ.get("USER") or os.environ.get("LOGNAME")
    if env:
        return env
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # pragma: no cover - no passwd entry
        return "unknown"


def default_audit_path() -> Path:
    """Return ``TOOLKIT_AUDIT`` or ``audit.db`` beside the local sqlite tracking store."""
    return config.local_store_file("TOOLKIT_AUDIT", "audit.db")


@dataclass(frozen=True)
class AuditEvent:
    """One promote or rollback attempt at a stage. ``at`` is UTC ISO 8601; versions are None when absent."""

    model: str
    action: str
    outcome: str
    actor: str
    at: str
    reason: str
    stage: str
    from_version: str | None = None
    to_version: str | None = None
    verdict_sha: str | None = None
    policy_sha: str | None = None
    detail: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigurationError("action", f"one of {list(ACTIONS)}", self.action)
        if self.stage not in STAGES:
            raise ConfigurationError("stage", f"one of {list(STAGES)}", self.stage)
        if self.outcome not in OUTCOMES:
            raise ConfigurationError("outcome", f"one of {list(OUTCOMES)}", self.outcome)
        if not self.reason.strip():
            raise ConfigurationError("reason", "a non-empty explanation", self.reason)
        if not self.actor.strip():
            raise ConfigurationError("actor", "a non-empty name", self.actor)


def _content_sha(prev_sha: str, row: dict[str, Any]) -> str:
    content = {k: row.get(k) for k in _FIELDS}
    if row.get("stage") is not None:  # rows written before the stage column hash as they always did
        content["stage"] = row["stage"]
    body = canonical_json(content, ascii_only=True)  # ASCII escapes since the first row
    return sha256_hex(prev_sha + "\n" + body)


class AuditLog:
    """Append-only audit trail in one SQLite file (WAL, synchronous FULL), or in the shared database.

    ``AuditLog()`` (no path) is the shared PostgreSQL table when ``toolkit.database.database_url()``
    names one; ``AuditLog(path)`` is always the SQLite file at ``path``.
    """

    def __new__(cls, path: str | Path | None = None, *args: Any, **kwargs: Any) -> AuditLog:
        if cls is AuditLog and path is None:
            from toolkit.database import database_url

            if database_url() is not None:
                from toolkit.registry.audit_pg import PgAuditLog

                return super().__new__(PgAuditLog)
        return super().__new__(cls)

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_audit_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            con.executescript(_SCHEMA)
            columns = {r["name"] for r in con.execute("PRAGMA table_info(audit)")}
            if "stage" not in columns:  # a log written before the stages: migrate in place
                try:
                    con.execute("ALTER TABLE audit ADD COLUMN stage TEXT")
                except sqlite3.OperationalError as exc:
                    if "duplicate column" not in str(exc):  # another process migrated it first
                        raise
        except sqlite3.Error as exc:
            raise RegistryError(f"audit trail {self.path}: cannot prepare the table: {exc}") from exc
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as exc:
            raise RegistryError(f"audit trail {self.path}: cannot open: {exc}") from exc
        con.row_factory = sqlite3.Row
        return con

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Append ``event`` (chained to the last row) and return the stored row."""
        row = asdict(event)
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            last = con.execute("SELECT sha FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            prev = last["sha"] if last else _GENESIS
            row["prev_sha"] = prev
            row["sha"] = _content_sha(prev, row)
            cols = [*_FIELDS, "stage", "prev_sha", "sha"]
            cur = con.execute(f"INSERT INTO audit ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                              [row[c] for c in cols])
            row["seq"] = cur.lastrowid
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise RegistryError(f"audit trail {self.path}: append failed: {exc}") from exc
        finally:
            con.close()
        return row

    def events(self, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the events (oldest first), for one model when ``model`` is given, the last ``limit``."""
        sql = "SELECT * FROM audit" + (" WHERE model = ?" if model is not None else "") + " ORDER BY seq"
        con = self._connect()
        try:
            rows = [dict(r) for r in con.execute(sql, (model,) if model is not None else ())]
        finally:
            con.close()
        return rows[-limit:] if limit else rows

    def verify(self) -> int:
        """Check the hash chain of the whole log; return the number of rows.

        Raises
        ------
        RegistryError
            A row's content or its link to the previous row does not match its sha.
        """
        return verify_chain(self.events(), self.path)


def verify_chain(rows: list[dict[str, Any]], where: object) -> int:
    """Check the hash chain of audit ``rows`` (oldest first) stored at ``where``; return their number.

    Raises
    ------
    RegistryError
        A row's content or its link to the previous row does not match its sha.
    """
    prev = _GENESIS
    for r in rows:
        if r["prev_sha"] != prev or _content_sha(prev, r) != r["sha"]:
            raise RegistryError(f"audit trail {where}: row {r['seq']} (id {r['id']}) does not match "
                                "its hash chain: the log was altered outside the toolkit")
        prev = r["sha"]
    return len(rows)


class AuditAttempt:
    """One audited attempt: a ``started`` row now, exactly one outcome row later (``end`` or ``fail``)."""

    def __init__(self, log: AuditLog, model: str, action: str, stage: str, who: str, reason: str, clock: Clock,
                 to_version: str | None) -> None:
        self.log, self.clock, self.ended = log, clock, False
        self.base = AuditEvent(model=model, action=action, outcome="started", actor=who, stage=stage,
                               at=clock.now().isoformat(), reason=reason, to_version=to_version,
                               detail="attempt started; nothing changed yet")
        self.started = log.append(self.base)

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Write the attempt's outcome row (its detail names the ``started`` row)."""
        note = f"attempt {self.started['id']}"
        row = self.log.append(replace(event, detail=f"{event.detail} [{note}]" if event.detail else note))
        self.ended = True
        return row

    def fail(self, exc: BaseException) -> None:
        """Write an ``error`` row for an attempt that raised before writing its outcome."""
        if self.ended:
            return
        at = self.clock.now().isoformat()
        self.append(AuditEvent(model=self.base.model, action=self.base.action, outcome="error",
                               actor=self.base.actor, stage=self.base.stage, at=at, reason=self.base.reason,
                               to_version=self.base.to_version,
                               detail=f"{type(exc).__name__}: {exc}"[:2000]))


@contextmanager
def promotion_lock(log: AuditLog, model: str, stages: tuple[str, ...],
                   timeout: float = 120.0) -> Iterator[str]:
    """Serialise promote and rollback of ``model`` at ``stages`` with every other process, on any host.

    On the shared database (``log`` is a ``PgAuditLog``): one PostgreSQL advisory lock per
    (model, stage), taken in the stage order given (callers pass them in ``STAGES`` order, so two
    callers never wait on each other crosswise). On local files: the file lock of ``registry_lock``.
    Yields a description of the lock held.

    Raises
    ------
    TemporaryError
        The lock was not obtained within ``timeout`` seconds.
    """
    db = getattr(log, "db", None)
    if db is None:
        with registry_lock(log.path, timeout=timeout) as lock:
            yield f"file lock {lock}"
        return
    from toolkit.database import advisory_lock

    names = [f"promotion|{model}|{s}" for s in sorted(stages, key=STAGES.index)]
    with advisory_lock(db, names, timeout=timeout):
        yield f"advisory locks {names} on {db.display}"


@contextmanager
def registry_lock(path: str | Path | None = None, timeout: float = 120.0) -> Iterator[Path]:
    """Hold the inter-process registry lock (``flock`` on ``<audit file>.lock``) for the block.

    Raises
    ------
    TemporaryError
        The lock was not obtained within ``timeout`` seconds (another promote is running).
    """
    audit = Path(path) if path is not None else default_audit_path()
    lock = audit.with_name(audit.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with lock.open("a") as fh:
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TemporaryError(f"registry lock {lock}: still held by another process after "
                                         f"{timeout:.0f} s; retry") from None
                time.sleep(0.05)
        try:
            yield lock
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
