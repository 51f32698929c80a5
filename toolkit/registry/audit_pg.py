"""The audit trail in the desk's shared PostgreSQL database (``toolkit.audit``).

Same rows, same hash chain and same guarantees as the SQLite log of ``toolkit.registry.audit``:
append-only (row triggers refuse UPDATE and DELETE, a statement trigger refuses TRUNCATE), each
row's sha256 chained to the previous row's, and ``verify`` re-walks the chain. Appends are
serialised by a transaction-level advisory lock, so writers on any host extend one chain; a
``UNIQUE (prev_sha)`` constraint makes a fork impossible even for a writer that skipped the lock.

The tables are created on first use when the role may create them; in production a migration
role owns them and the toolkit's role holds only ``SELECT, INSERT`` (``toolkit registry migrate``
prints the statements; docs/registry.md).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from toolkit.database import Database, advisory_key
from toolkit.registry.audit import _FIELDS, _GENESIS, AuditEvent, AuditLog, _content_sha, verify_chain

__all__ = ["AUDIT_DDL", "PgAuditLog"]

#: statements creating the shared schema's audit table (idempotent)
AUDIT_DDL = (
    "CREATE SCHEMA IF NOT EXISTS toolkit",
    """CREATE OR REPLACE FUNCTION toolkit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'toolkit.% is append-only: % refused', TG_TABLE_NAME, TG_OP; END $$""",
    """CREATE TABLE IF NOT EXISTS toolkit.audit (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    prev_sha TEXT NOT NULL UNIQUE,
    sha TEXT NOT NULL,
    stage TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS audit_model ON toolkit.audit (model, seq)",
    "DROP TRIGGER IF EXISTS audit_append_only ON toolkit.audit",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON toolkit.audit "
    "FOR EACH ROW EXECUTE FUNCTION toolkit.refuse_change()",
    "DROP TRIGGER IF EXISTS audit_no_truncate ON toolkit.audit",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON toolkit.audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION toolkit.refuse_change()",
)
_CHAIN_LOCK = advisory_key("toolkit.audit chain")
_COLUMNS = [*_FIELDS, "stage", "prev_sha", "sha"]


class PgAuditLog(AuditLog):
    """The audit trail as a table of the shared PostgreSQL database (same interface as ``AuditLog``)."""

    def __init__(self, path: object = None, db: Database | None = None) -> None:
        self.db = db or Database()
        self.path = f"{self.db.display} table toolkit.audit"  # type: ignore[assignment] # shown by status
        if not self.db.exists("toolkit.audit"):
            self.db.execute_script("creating table toolkit.audit", AUDIT_DDL)

    def append(self, event: AuditEvent) -> dict[str, Any]:
        """Append ``event`` (chained to the last row, under the chain's lock) and return the stored row."""
        row = asdict(event)
        with self.db.connect(f"appending audit event {event.id}") as con:
            con.execute("SELECT pg_advisory_xact_lock(%s)", (_CHAIN_LOCK,))
            last = con.execute("SELECT sha FROM toolkit.audit ORDER BY seq DESC LIMIT 1").fetchone()
            prev = last[0] if last else _GENESIS
            row["prev_sha"] = prev
            row["sha"] = _content_sha(prev, row)
            seq = con.execute(f"INSERT INTO toolkit.audit ({', '.join(_COLUMNS)}) "
                              f"VALUES ({', '.join(['%s'] * len(_COLUMNS))}) RETURNING seq",
                              [row[c] for c in _COLUMNS]).fetchone()
            row["seq"] = int(seq[0])
        return row

    def events(self, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Return the events (oldest first), for one model when ``model`` is given, the last ``limit``."""
        cols = ["seq", *_COLUMNS]
        sql = (f"SELECT {', '.join(cols)} FROM toolkit.audit" + (" WHERE model = %s" if model is not None else "")
               + " ORDER BY seq")
        with self.db.connect("reading the audit trail") as con:
            rows = [dict(zip(cols, r, strict=True)) for r in con.execute(sql, (model,) if model is not None else ())]
        return rows[-limit:] if limit else rows

    def verify(self) -> int:
        """Check the hash chain of the whole table; return the number of rows.

        Raises
        ------
        RegistryError
            A row's content or its link to the previous row does not match its sha.
        """
        return verify_chain(self.events(), self.path)
