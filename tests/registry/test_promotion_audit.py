"""Every promote and rollback is audited with its stage; an alias holder failing re-evaluation is loud; trials are
counted; the audit trail written before the stages migrates and keeps verifying."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from registry_support import GRIDS, Registry, audit_trail, version_tags

from toolkit.errors import ConfigurationError
from toolkit.registry import adapter
from toolkit.registry.audit import AuditLog
from toolkit.registry.promotion import promote, rollback
from toolkit.registry.status import status
from toolkit.registry.verdicts import record_verdict

pytest_plugins = ["registry_support"]  # the session registry fixtures (see registry_support)

# ----------------------------------------------------------------------------- audit of every attempt


def test_attempts_that_raise_are_audited(registry: Registry, tmp_path: Path) -> None:
    """An unknown version, and a promote that cannot get the lock (held by another real process)."""
    from toolkit.errors import TemporaryError

    with pytest.raises(ConfigurationError):
        promote(registry.model, 42, "paper", reason="typo", actor="tester")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom toolkit.registry.audit import registry_lock\n"
         f"with registry_lock({str(registry.audit)!r}):\n    print('held', flush=True)\n    time.sleep(20)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TemporaryError, match="still held"):
            promote(registry.model, 2, "paper", reason="busy", actor="tester", lock_timeout=0.3)
        with pytest.raises(TemporaryError, match="still held"):
            rollback(registry.model, "live", reason="busy", actor="tester", lock_timeout=0.3)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    rows = [(e["action"], e["stage"], e["outcome"], e["to_version"]) for e in audit_trail(registry)]
    assert rows == [("promote", "paper", "started", "42"), ("promote", "paper", "error", "42"),
                    ("promote", "paper", "started", "2"), ("promote", "paper", "error", "2"),
                    ("rollback", "live", "started", None), ("rollback", "live", "error", None)]
    errors = [e for e in audit_trail(registry) if e["outcome"] == "error"]
    assert "ConfigurationError" in errors[0]["detail"] and "TemporaryError" in errors[1]["detail"]
    assert adapter.model_aliases(registry.model) == {}


def test_started_row_is_written_before_mlflow_changes(registry: Registry) -> None:
    """When the champion alias moves, the trail already holds the attempt's ``started`` row."""
    from mlflow import MlflowClient

    seen: list[list[str]] = []
    real = MlflowClient.set_registered_model_alias

    def spy(self: MlflowClient, name: str, alias: str, version: str) -> None:
        seen.append([e["outcome"] for e in audit_trail(registry)])
        real(self, name, alias, version)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MlflowClient, "set_registered_model_alias", spy)
        promote(registry.model, 2, "paper", reason="go", actor="tester")
    assert seen == [["started"]]
    assert [e["outcome"] for e in audit_trail(registry)] == ["started", "done"]


def test_recording_verdicts_moves_no_alias_and_writes_no_audit_row(registry: Registry) -> None:
    assert adapter.model_aliases(registry.model) == {}
    assert audit_trail(registry) == []  # the session build recorded six verdicts and moved nothing


@pytest.mark.parametrize(("stage", "alias"), [("paper", "paper"), ("live", "champion")])
def test_alias_holder_failing_a_re_evaluation_is_loud(registry: Registry, tmp_path: Path, stage: str,
                                                      alias: str) -> None:
    from toolkit.gates import Evidence, evaluate, load_policy
    from toolkit.gates.policy import POLICY_PATHS, policy_from_dict
    from toolkit.registry.cli import format_status

    promote(registry.model, 2, "paper", reason="go", actor="tester")
    if stage == "live":
        promote(registry.model, 2, "live", reason="go", actor="tester")
    files = adapter.download_gate_artifacts(registry.model, 2, tmp_path / "g", stage)
    bundle = adapter.download_evidence(registry.model, 2, tmp_path / "b")
    tight = load_policy(POLICY_PATHS[stage]).model_dump(mode="json")
    tight["statistics"]["min_oos_sharpe"] = 100.0  # a policy no real strategy passes: the re-evaluation fails
    strict = evaluate(Evidence.read(bundle, extras_dir=files.evidence), policy_from_dict(tight))
    assert not strict.passed
    path = tmp_path / "v" / "verdict.json"
    path.parent.mkdir()
    path.write_text(strict.to_json(), encoding="utf-8")
    record_verdict(registry.model, 2, path, extra_evidence=files.evidence)
    assert version_tags(registry, "2")[f"gate.{stage}.holder_failed_reevaluation"] == "true"
    assert adapter.alias_version(registry.model, alias) == "2"  # still holds the alias, but flagged
    st = status(registry.model)
    assert len(st["warnings"]) == 1 and f"{alias} version 2 FAILED its latest {stage}" in st["warnings"][0]
    assert format_status(st).splitlines()[0].startswith(f"WARNING: {alias} version 2 FAILED")
    # a passing re-evaluation clears the flag
    record_verdict(registry.model, 2, files.verdict, extra_evidence=files.evidence)
    assert f"gate.{stage}.holder_failed_reevaluation" not in version_tags(registry, "2")
    assert status(registry.model)["warnings"] == []


def test_an_audit_trail_from_before_the_stages_migrates_and_verifies(tmp_path: Path) -> None:
    """Rows written without a stage column keep their hashes; new rows hash their stage too."""
    import sqlite3

    from toolkit.canonical import canonical_json, sha256_hex
    from toolkit.errors import RegistryError

    db = tmp_path / "audit.db"
    con = sqlite3.connect(db)
    con.executescript(
        "CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, model TEXT NOT NULL, "
        "action TEXT NOT NULL, outcome TEXT NOT NULL, from_version TEXT, to_version TEXT, actor TEXT NOT NULL, "
        "at TEXT NOT NULL, reason TEXT NOT NULL, verdict_sha TEXT, policy_sha TEXT, detail TEXT NOT NULL, "
        "prev_sha TEXT NOT NULL, sha TEXT NOT NULL);")
    old = {"id": "a" * 32, "model": "m", "action": "promote", "outcome": "done", "from_version": None,
           "to_version": "1", "actor": "alice", "at": "2026-01-01T00:00:00+00:00", "reason": "old", "verdict_sha": None,
           "policy_sha": None, "detail": ""}
    sha = sha256_hex("0" * 64 + "\n" + canonical_json(old, ascii_only=True))  # the rule before the stages
    con.execute(f"INSERT INTO audit ({', '.join(old)}, prev_sha, sha) VALUES ({', '.join('?' * (len(old) + 2))})",
                [*old.values(), "0" * 64, sha])
    con.commit()
    con.close()
    log = AuditLog(db)
    assert log.verify() == 1 and log.events()[0]["stage"] is None
    from toolkit.registry.audit import AuditEvent

    log.append(AuditEvent(model="m", action="rollback", outcome="done", actor="bob", stage="live",
                          at="2026-01-02T00:00:00+00:00", reason="new"))
    assert AuditLog(db).verify() == 2 and [e["stage"] for e in log.events()] == [None, "live"]
    con = sqlite3.connect(db)  # an edit of the new row's stage, around the triggers, breaks the chain
    con.execute("DROP TRIGGER audit_no_update")
    con.execute("UPDATE audit SET stage = 'paper' WHERE seq = 2")
    con.commit()
    con.close()
    with pytest.raises(RegistryError, match="row 2"):
        AuditLog(db).verify()


def test_registry_counts_every_recorded_trial_up_to_the_version(registry: Registry) -> None:
    """v1..v3 were recorded with 4, 2 and 2 combinations; v4 re-registers v2's bundle (2 more)."""
    from toolkit.registry.adapter import registry_trial_count

    sizes = [len(g["fast"]) * len(g["slow"]) for g in GRIDS.values()]
    assert [registry_trial_count(registry.model, v) for v in (1, 2, 3, 4)] == [
        sizes[0], sizes[0] + sizes[1], sum(sizes), sum(sizes) + sizes[1]]
    # v4's own bundle carries the ledger as it was at v2 (6 trials): the registry knows 10
    assert len(pd.read_parquet(registry.bundles["pass"] / "trials.parquet")) == sizes[0] + sizes[1]
