"""Promotion and rollback per stage on a real sqlite MLflow store with real verdicts: state, the lifecycle and
its audit trail, races, failures half-way (the refusals are in test_promotion_refusals.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from registry_support import TOOLKIT, Registry, audit_trail, version_tags

from toolkit.backtest.bundle import BUNDLE_FILES, bundle_sha256
from toolkit.errors import ConfigurationError, PromotionRefused
from toolkit.registry import adapter
from toolkit.registry.audit import AuditLog
from toolkit.registry.promotion import promote, rollback
from toolkit.registry.status import status

pytest_plugins = ["registry_support"]  # the session registry fixtures (see registry_support)

# ----------------------------------------------------------------------------- reading state


def test_version_state_and_evidence_download(registry: Registry, tmp_path: Path) -> None:
    info = adapter.version_info(registry.model, 2)
    assert info.version == "2" and info.run_id
    assert info.tags["gate.paper.verdict"] == info.tags["gate.live.verdict"] == "passed"
    assert info.tags["gate.paper.verdict_sha"] != info.tags["gate.live.verdict_sha"]  # two verdicts coexist
    assert info.tags["gate.paper.run_id"] != info.tags["gate.live.run_id"]
    assert adapter.list_versions(registry.model) == ["1", "2", "3", "4"]
    assert adapter.model_aliases(registry.model) == {}  # recording a verdict moves no alias
    assert adapter.alias_version(registry.model, "champion") is None
    assert adapter.alias_version(registry.model, "paper") is None
    t1 = version_tags(registry, "1")
    assert t1["gate.paper.verdict"] == t1["gate.live.verdict"] == "failed"
    failed = t1["gate.live.failed"].split(",")
    assert failed and all(f"{g}:" in t1["gate.live.why"] for g in failed)  # each failed gate says why
    t4 = version_tags(registry, "4")
    assert t4["gate.paper.verdict"] == t4["gate.live.verdict"] == "not_evaluated"
    assert "gate.verdict" not in t4  # no stage-less verdict tag any more

    d = adapter.download_evidence(registry.model, 2, tmp_path / "ev")
    assert sorted(p.name for p in d.iterdir()) == sorted(BUNDLE_FILES)
    assert bundle_sha256(d) == info.tags["evidence.sha256"] == bundle_sha256(registry.bundles["pass"])

    with pytest.raises(ConfigurationError) as e:
        adapter.version_info(registry.model, 99)
    assert e.value.field == "version" and "['1', '2', '3', '4']" in str(e.value)
    with pytest.raises(ConfigurationError) as e:
        adapter.version_info("no.such.model", 1)
    assert e.value.field == "model"
    with pytest.raises(ConfigurationError) as e:
        adapter.version_info(registry.model, "two")
    assert e.value.field == "version"


@pytest.mark.parametrize("stage", ["paper", "live"])
def test_recorded_verdict_re_evaluates_byte_identically(registry: Registry, tmp_path: Path, stage: str) -> None:
    from toolkit.gates import Evidence, evaluate, load_policy, verify_verdict_json

    files = adapter.download_gate_artifacts(registry.model, 2, tmp_path / "gates", stage)
    bundle = adapter.download_evidence(registry.model, 2, tmp_path / "bundle")
    stored = files.verdict.read_bytes()
    policy = load_policy(registry.policies[stage], stage=stage)
    again = evaluate(Evidence.read(bundle, extras_dir=files.evidence), policy)
    assert again.to_json().encode() == stored
    assert verify_verdict_json(stored.decode())
    assert json.loads(stored)["stage"] == stage
    tags = version_tags(registry, "2")
    assert tags[f"gate.{stage}.verdict_sha"] == again.verdict_sha == json.loads(stored)["verdict_sha"]
    assert tags[f"gate.{stage}.policy_sha"] == policy.sha256()
    assert tags[f"gate.{stage}.run_id"] and pd.Timestamp(tags[f"gate.{stage}.evaluated_at"]).tzname() == "UTC"


# ----------------------------------------------------------------------------- paper -> live, rollback per stage


def test_paper_then_live_then_rollback_per_stage(registry: Registry) -> None:
    from mlflow import MlflowClient

    m = registry.model
    first = promote(m, 2, "paper", reason="best OOS Sharpe", actor="alice")
    assert (first["alias"], first["from_version"], first["to_version"]) == ("paper", None, "2")
    assert adapter.model_aliases(m) == {"paper": "2"}
    live = promote(m, 2, "live", reason="paper record reviewed", actor="bob")
    assert (live["alias"], live["from_version"], live["to_version"]) == ("champion", None, "2")
    assert adapter.model_aliases(m) == {"paper": "2", "champion": "2"}  # it keeps trading on paper too
    promote(m, "3", "paper", reason="newer data", actor="alice")
    assert adapter.model_aliases(m) == {"paper": "3", "champion": "2"}
    t2 = version_tags(registry, "2")
    assert t2["promotion.paper.state"] == "retired" and t2["promotion.live.state"] == "current"
    assert t2["promotion.live.verdict_sha"] == t2["gate.live.verdict_sha"]
    assert t2["promotion.paper.verdict_sha"] == t2["gate.paper.verdict_sha"]
    # version 2 held alias paper and still may go live: here a second live promotion is refused as a no-op
    with pytest.raises(PromotionRefused, match="not already champion"):
        promote(m, 2, "live", reason="again", actor="bob")
    second = promote(m, "3", "live", reason="better on paper", actor="bob")
    assert (second["from_version"], second["to_version"]) == ("2", "3")
    t3 = version_tags(registry, "3")
    assert t3["promotion.live.previous"] == "2" and t3["promotion.live.promoted_by"] == "bob"
    assert t3["promotion.paper.previous"] == "2"

    back = rollback(m, "live", reason="slippage above model", actor="carol")
    assert (back["alias"], back["from_version"], back["to_version"]) == ("champion", "3", "2")
    assert adapter.model_aliases(m) == {"paper": "3", "champion": "2"}  # rollback of live leaves paper alone
    t3, t2 = version_tags(registry, "3"), version_tags(registry, "2")
    assert t3["promotion.live.state"] == "rolled_back" and t3["rollback.live.rolled_back_by"] == "carol"
    assert t3["rollback.live.reason"] == "slippage above model" and t3["promotion.paper.state"] == "current"
    assert t2["promotion.live.state"] == "current" and t2["rollback.live.restored_at"]
    paper_back = rollback(m, "paper", reason="paper fills look wrong", actor="carol")
    assert (paper_back["alias"], paper_back["to_version"]) == ("paper", "2")
    assert adapter.model_aliases(m) == {"paper": "2", "champion": "2"}
    # version 3 was rolled back from paper: it cannot go live again until it is back on paper
    with pytest.raises(PromotionRefused, match="paper first"):
        promote(m, 3, "live", reason="retry", actor="bob")

    log = AuditLog(registry.audit)
    assert log.verify() == len(log.events())
    done = [(e["action"], e["stage"], e["from_version"], e["to_version"], e["actor"])
            for e in audit_trail(registry) if e["outcome"] == "done"]
    assert done == [("promote", "paper", None, "2", "alice"), ("promote", "live", None, "2", "bob"),
                    ("promote", "paper", "2", "3", "alice"), ("promote", "live", "2", "3", "bob"),
                    ("rollback", "live", "3", "2", "carol"), ("rollback", "paper", "3", "2", "carol")]
    assert all(e["stage"] in ("paper", "live") for e in log.events(m))  # the stage in every row
    assert all(pd.Timestamp(e["at"]).tzname() == "UTC" for e in log.events(m))
    assert AuditLog(registry.audit).events(m) == log.events(m)  # survives a fresh read

    st = status(m)
    assert st["champion"]["version"] == "2" and st["paper"]["version"] == "2"
    assert st["metrics"]["paper"] == {**st["metrics"]["paper"], "promotions": 2, "rollbacks": 1}
    assert st["metrics"]["live"]["promotions"] == 2 and st["metrics"]["live"]["rollbacks"] == 1
    cycle = st["metrics"]["live"]["last_cycle_hours"]
    created = pd.Timestamp(adapter.version_info(m, 3).created_at)
    assert cycle == pytest.approx((pd.Timestamp(second["at"]) - created).total_seconds() / 3600, abs=1e-5)
    run = st["metrics"]["registry_run_id"]
    assert [h.step for h in MlflowClient().get_metric_history(run, "live.promotion.cycle_hours")] == [1, 2]
    assert max(h.value for h in MlflowClient().get_metric_history(run, "paper.rollbacks.total")) == 1.0


# ----------------------------------------------------------------------------- racing processes


def test_two_promotes_racing_in_separate_processes(registry: Registry) -> None:
    cmds = [[TOOLKIT, "promote", registry.model, "--version", v, "--stage", "paper", "--reason", f"race {v}",
             "--actor", f"proc{v}", "--json"] for v in ("2", "3")]
    procs = [subprocess.Popen(c, env=registry.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(o[0]) for o in outs]
    events = [e for e in audit_trail(registry) if e["outcome"] != "started"]
    assert len(events) == 2 and all(e["outcome"] == "done" and e["stage"] == "paper" for e in events)
    first, second = events
    assert first["from_version"] is None and second["from_version"] == first["to_version"]
    assert {first["to_version"], second["to_version"]} == {"2", "3"}
    assert adapter.alias_version(registry.model, "paper") == second["to_version"]
    assert version_tags(registry, second["to_version"])["promotion.paper.previous"] == first["to_version"]
    assert {r["audit_id"] for r in results} == {first["id"], second["id"]}
    assert [e["outcome"] for e in audit_trail(registry)].count("started") == 2
    assert AuditLog(registry.audit).verify() == len(AuditLog(registry.audit).events())


# ----------------------------------------------------------------------------- failures half-way


def _fail_alias(monkeypatch: pytest.MonkeyPatch, which: str) -> list[str]:
    """Make MLflow refuse to move alias ``which`` (an MlflowException, as a broken store raises)."""
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient

    real = MlflowClient.set_registered_model_alias
    calls: list[str] = []

    def failing(self: MlflowClient, name: str, alias: str, version: str) -> None:
        calls.append(f"{alias}={version}")
        if alias == which and len(calls) == 1:
            raise MlflowException("simulated store failure while moving the alias")
        real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", failing)
    return calls


def test_promote_failing_half_way_restores_the_snapshot(registry: Registry) -> None:
    """The alias move fails after both versions' tags were written (the new holder's, the retired one's).

    The failure is injected by monkeypatching one ``MlflowClient`` method (the brief allows it
    here): every other call goes to the real sqlite store.
    """
    from toolkit.errors import RegistryError

    promote(registry.model, 2, "paper", reason="first", actor="tester")
    before = adapter.registry_snapshot(registry.model)
    assert before["aliases"] == {"paper": "2"}
    with pytest.MonkeyPatch.context() as mp:
        calls = _fail_alias(mp, "paper")
        with pytest.raises(RegistryError, match="failed half-way"):
            promote(registry.model, 3, "paper", reason="doomed", actor="tester")
    assert calls == ["paper=3"]  # the failed move; the alias never left version 2
    assert adapter.registry_snapshot(registry.model) == before  # tags and aliases as they were
    events = AuditLog(registry.audit).events(registry.model)
    assert events[-1]["outcome"] == "error" and "simulated store failure" in events[-1]["detail"]
    assert events[-1]["stage"] == "paper"


@pytest.mark.slow  # make test keeps the same restore path for promote (test_promote_failing_half_way_...)
def test_rollback_failing_half_way_restores_the_snapshot(registry: Registry) -> None:
    """As above for a live rollback: the champion alias cannot move back (one MlflowClient method patched)."""
    from toolkit.errors import RegistryError

    for v in ("2", "3"):
        promote(registry.model, v, "paper", reason="paper", actor="tester")
        promote(registry.model, v, "live", reason="live", actor="tester")
    before = adapter.registry_snapshot(registry.model)
    with pytest.MonkeyPatch.context() as mp:
        _fail_alias(mp, "champion")
        with pytest.raises(RegistryError, match="failed half-way"):
            rollback(registry.model, "live", reason="doomed", actor="tester")
    assert adapter.registry_snapshot(registry.model) == before


def test_bookkeeping_failure_after_the_alias_moved_keeps_the_promotion(registry: Registry) -> None:
    """Logging the cycle metrics fails (``MlflowClient.log_metric`` patched to raise): the promotion stands,
    and the failure is reported in the result and the audit row."""
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient

    def failing(*args: object, **kwargs: object) -> None:
        raise MlflowException("simulated metric store failure")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MlflowClient, "log_metric", failing)
        done = promote(registry.model, 2, "paper", reason="go", actor="tester")
    assert done["promoted"] is True and "simulated metric store failure" in done["bookkeeping_error"]
    assert adapter.alias_version(registry.model, "paper") == "2"
    assert version_tags(registry, "2")["promotion.paper.state"] == "current"
    row = AuditLog(registry.audit).events(registry.model)[-1]
    assert row["outcome"] == "done" and "bookkeeping failed" in row["detail"]
