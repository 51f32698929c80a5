"""The audit trail: append-only, hash-chained, survives a re-open; the registry lock across processes."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.errors import ConfigurationError, RegistryError, TemporaryError
from toolkit.registry.audit import AuditEvent, AuditLog, default_audit_path, registry_lock


def _event(i: int, **kw: object) -> AuditEvent:
    base: dict[str, object] = {"model": "m", "action": "promote", "outcome": "done", "actor": "alice", "stage": "live",
                               "at": f"2026-01-0{i}T00:00:00+00:00", "reason": f"reason {i}",
                               "from_version": None if i == 1 else str(i - 1), "to_version": str(i)}
    base.update(kw)
    return AuditEvent(**base)  # type: ignore[arg-type]


def test_append_read_and_survive_reopen(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    rows = [log.append(_event(i)) for i in (1, 2, 3)]
    assert rows[0]["prev_sha"] == "0" * 64 and rows[1]["prev_sha"] == rows[0]["sha"]
    again = AuditLog(tmp_path / "audit.db")
    got = again.events("m")
    assert [(e["from_version"], e["to_version"]) for e in got] == [(None, "1"), ("1", "2"), ("2", "3")]
    assert [e["stage"] for e in got] == ["live"] * 3
    assert again.verify() == 3
    assert again.events("other") == [] and len(again.events(limit=2)) == 2


def test_rows_cannot_be_updated_or_deleted(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    log.append(_event(1))
    con = sqlite3.connect(tmp_path / "audit.db")
    try:
        for sql in ("UPDATE audit SET reason = 'rewritten'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                con.execute(sql)
    finally:
        con.close()
    assert log.events()[0]["reason"] == "reason 1"


def test_an_edit_made_around_the_triggers_breaks_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    for i in (1, 2, 3):
        log.append(_event(i))
    con = sqlite3.connect(tmp_path / "audit.db")
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 2")
    con.commit()
    con.close()
    with pytest.raises(RegistryError, match="row 2"):
        AuditLog(tmp_path / "audit.db").verify()


@pytest.mark.parametrize(("field", "value"), [("action", "demote"), ("action", "candidate"), ("outcome", "maybe"),
                                               ("reason", " "), ("actor", ""), ("stage", "champion"),
                                               ("stage", "")])
def test_bad_events_are_named(field: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as e:
        _event(1, **{field: value})
    assert e.value.field == field


def test_default_path_follows_the_tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_AUDIT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'x' / 'mlflow.db'}")
    assert default_audit_path() == (tmp_path / "x" / "audit.db").resolve()
    monkeypatch.setenv("TOOLKIT_AUDIT", str(tmp_path / "elsewhere.db"))
    assert default_audit_path() == tmp_path / "elsewhere.db"


def test_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    audit = tmp_path / "audit.db"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom toolkit.registry.audit import registry_lock\n"
         f"with registry_lock({str(audit)!r}):\n    print('held', flush=True)\n    time.sleep(1.5)\n"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(TemporaryError, match="still held"):
        with registry_lock(audit, timeout=0.3):
            pass
    started = time.monotonic()
    with registry_lock(audit, timeout=30):
        waited = time.monotonic() - started
    holder.wait(timeout=30)
    assert waited > 0.3  # it waited for the other process to let go
