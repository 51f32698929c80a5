"""Every promote, rollback and candidate move is audited; a failing champion is loud; trials are counted."""

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
        promote(registry.model, 42, reason="typo", actor="tester")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom toolkit.registry.audit import registry_lock\n"
         f"with registry_lock({str(registry.audit)!r}):\n    print('held', flush=True)\n    time.sleep(20)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(TemporaryError, match="still held"):
            promote(registry.model, 2, reason="busy", actor="tester", lock_timeout=0.3)
        with pytest.raises(TemporaryError, match="still held"):
            rollback(registry.model, reason="busy", actor="tester", lock_timeout=0.3)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    rows = [(e["action"], e["outcome"], e["to_version"]) for e in audit_trail(registry)]
    assert rows == [("promote", "started", "42"), ("promote", "error", "42"), ("promote", "started", "2"),
                    ("promote", "error", "2"), ("rollback", "started", None), ("rollback", "error", None)]
    errors = [e for e in audit_trail(registry) if e["outcome"] == "error"]
    assert "ConfigurationError" in errors[0]["detail"] and "TemporaryError" in errors[1]["detail"]
    assert adapter.alias_version(registry.model, "champion") is None


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
        promote(registry.model, 2, reason="go", actor="tester")
    assert seen == [["started"]]
    assert [e["outcome"] for e in audit_trail(registry)] == ["started", "done"]


def test_candidate_moves_are_audited(registry: Registry, tmp_path: Path) -> None:
    from toolkit.gates import DEFAULT_POLICY_PATH, Evidence, evaluate, load_policy

    log = AuditLog(registry.audit)
    built = [(e["action"], e["outcome"], e["from_version"], e["to_version"]) for e in log.events(registry.model)]
    assert built == [("candidate", "started", None, "2"), ("candidate", "done", None, "2"),
                     ("candidate", "started", None, "3"), ("candidate", "done", "2", "3")]
    # version 3 re-evaluated under the shipped policy fails: candidate withdrawn, and audited
    files = adapter.download_gate_artifacts(registry.model, 3, tmp_path / "g")
    bundle = adapter.download_evidence(registry.model, 3, tmp_path / "b")
    strict = evaluate(Evidence.read(bundle, extras_dir=files.evidence), load_policy(DEFAULT_POLICY_PATH))
    assert not strict.passed
    (tmp_path / "v" / "verdict.json").parent.mkdir()
    (tmp_path / "v" / "verdict.json").write_text(strict.to_json(), encoding="utf-8")
    record_verdict(registry.model, 3, tmp_path / "v" / "verdict.json", extra_evidence=files.evidence,
                                actor="gatekeeper")
    assert adapter.alias_version(registry.model, "candidate") is None
    last = log.events(registry.model)[-2:]
    assert [(e["action"], e["outcome"], e["from_version"], e["to_version"], e["actor"]) for e in last] == [
        ("candidate", "started", None, None, "gatekeeper"), ("candidate", "done", "3", None, "gatekeeper")]
    assert "withdrawn" in last[1]["reason"] and last[1]["verdict_sha"] == strict.verdict_sha
    # recording it again changes no alias, so writes no row
    record_verdict(registry.model, 3, tmp_path / "v" / "verdict.json", extra_evidence=files.evidence)
    assert len(log.events(registry.model)) == len(built) + 2


def test_champion_failing_a_re_evaluation_is_loud(registry: Registry, tmp_path: Path) -> None:
    from toolkit.gates import DEFAULT_POLICY_PATH, Evidence, evaluate, load_policy
    from toolkit.registry.cli import format_status

    promote(registry.model, 2, reason="go", actor="tester")
    files = adapter.download_gate_artifacts(registry.model, 2, tmp_path / "g")
    bundle = adapter.download_evidence(registry.model, 2, tmp_path / "b")
    strict = evaluate(Evidence.read(bundle, extras_dir=files.evidence), load_policy(DEFAULT_POLICY_PATH))
    assert not strict.passed
    path = tmp_path / "v" / "verdict.json"
    path.parent.mkdir()
    path.write_text(strict.to_json(), encoding="utf-8")
    record_verdict(registry.model, 2, path, extra_evidence=files.evidence)
    assert version_tags(registry, "2")["gate.champion_failed_reevaluation"] == "true"
    assert adapter.alias_version(registry.model, "champion") == "2"  # still champion, but flagged
    st = status(registry.model)
    assert len(st["warnings"]) == 1 and "champion version 2 FAILED" in st["warnings"][0]
    assert format_status(st).splitlines()[0].startswith("WARNING: champion version 2 FAILED")
    # a passing re-evaluation clears the flag
    record_verdict(registry.model, 2, files.verdict, extra_evidence=files.evidence)
    assert "gate.champion_failed_reevaluation" not in version_tags(registry, "2")
    assert status(registry.model)["warnings"] == []


def test_registry_counts_every_recorded_trial_up_to_the_version(registry: Registry) -> None:
    """v1..v3 were recorded with 4, 2 and 2 combinations; v4 re-registers v2's bundle (2 more)."""
    from toolkit.registry.adapter import registry_trial_count

    sizes = [len(g["fast"]) * len(g["slow"]) for g in GRIDS.values()]
    assert [registry_trial_count(registry.model, v) for v in (1, 2, 3, 4)] == [
        sizes[0], sizes[0] + sizes[1], sum(sizes), sum(sizes) + sizes[1]]
    # v4's own bundle carries the ledger as it was at v2 (6 trials): the registry knows 10
    assert len(pd.read_parquet(registry.bundles["pass"] / "trials.parquet")) == sizes[0] + sizes[1]
