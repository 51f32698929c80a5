"""Promotion and rollback on a real sqlite MLflow store with real verdicts: refusals, races, forgeries, failures."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from registry_support import TOOLKIT, Registry, audit_trail, lenient_policy, version_tags

from toolkit.backtest.bundle import BUNDLE_FILES, bundle_sha256
from toolkit.errors import ConfigurationError, PromotionRefused
from toolkit.registry import adapter
from toolkit.registry.audit import AuditLog
from toolkit.registry.promotion import promote, rollback
from toolkit.registry.status import status
from toolkit.registry.verdicts import record_verdict

pytest_plugins = ["registry_support"]  # the session registry fixtures (see registry_support)

# ----------------------------------------------------------------------------- reading state


def test_version_state_and_evidence_download(registry: Registry, tmp_path: Path) -> None:
    info = adapter.version_info(registry.model, 2)
    assert info.version == "2" and info.run_id
    assert info.tags["gate.verdict"] == "passed"
    assert adapter.list_versions(registry.model) == ["1", "2", "3", "4"]
    assert adapter.model_aliases(registry.model) == {"candidate": "3"}  # the last version that passed
    assert adapter.alias_version(registry.model, "candidate") == "3"
    assert adapter.alias_version(registry.model, "champion") is None
    assert "candidate" in adapter.version_info(registry.model, 3).aliases
    assert version_tags(registry, "1")["gate.verdict"] == "failed"
    assert version_tags(registry, "4")["gate.verdict"] == "not_evaluated"

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


def test_recorded_verdict_re_evaluates_byte_identically(registry: Registry, tmp_path: Path) -> None:
    from toolkit.gates import Evidence, evaluate, load_policy, verify_verdict_json

    files = adapter.download_gate_artifacts(registry.model, 2, tmp_path / "gates")
    bundle = adapter.download_evidence(registry.model, 2, tmp_path / "bundle")
    stored = files.verdict.read_bytes()
    again = evaluate(Evidence.read(bundle, extras_dir=files.evidence), load_policy(registry.policy))
    assert again.to_json().encode() == stored
    assert verify_verdict_json(stored.decode())
    tags = version_tags(registry, "2")
    assert tags["gate.verdict_sha"] == again.verdict_sha == json.loads(stored)["verdict_sha"]
    assert tags["gate.policy_sha"] == load_policy(registry.policy).sha256()
    assert tags["gate.run_id"] and pd.Timestamp(tags["gate.evaluated_at"]).tzname() == "UTC"


# ----------------------------------------------------------------------------- refusals


def _tamper_evidence(reg: Registry) -> None:
    run = adapter.version_info(reg.model, 2).run_id
    path = reg.artifacts_of(run) / "evidence" / "returns.parquet"
    frame = pd.read_parquet(path)
    frame.iloc[-1, frame.columns.get_loc("return")] += 0.01  # one bar's return edited after registration
    frame.to_parquet(path)


def _tamper_verdict_file(reg: Registry) -> None:
    path = reg.artifacts_of(version_tags(reg, "2")["gate.run_id"]) / "verdict" / "verdict.json"
    d = json.loads(path.read_text())
    d["gates"][0]["explanation"] += " (edited)"
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def _tamper_extras(reg: Registry) -> None:
    path = reg.artifacts_of(version_tags(reg, "2")["gate.run_id"]) / "evidence" / "gate_evidence.json"
    d = json.loads(path.read_text())
    d["latency"]["samples_ns"][0] = 1
    path.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")


def _flip_failed_tag(reg: Registry) -> None:
    adapter.configure()  # mlflow's global URI may still point at another test's store
    adapter.set_version_tag(reg.model, "1", "gate.verdict", "passed")


REFUSALS = {
    # name: (version, prepare, use a changed policy, the check that must fail)
    "failed": ("1", None, False, "verdict passed"),
    "never evaluated": ("4", None, False, "evaluated"),
    "stale policy": ("2", None, True, "current policy"),
    "evidence artifact edited": ("2", _tamper_evidence, False, "evidence intact"),
    "verdict file edited": ("2", _tamper_verdict_file, False, "verdict file"),
    "gate extras edited": ("2", _tamper_extras, False, "evidence matches verdict"),
    "failed verdict tagged passed": ("1", _flip_failed_tag, False, "verdict content"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_promotion_refused_changes_nothing(registry: Registry, tmp_path: Path, case: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    version, prepare, stale, check = REFUSALS[case]
    if prepare is not None:
        prepare(registry)
    if stale:  # the desk tightened one threshold after the version was evaluated
        monkeypatch.setenv("TOOLKIT_POLICY", str(lenient_policy(tmp_path / "tightened.yaml", min_psr=0.6)))
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused) as e:
        promote(registry.model, version, reason=f"test {case}", actor="tester")
    assert f"{check}:" in str(e.value)
    assert adapter.registry_snapshot(registry.model) == before
    events = audit_trail(registry)
    assert [(x["action"], x["outcome"], x["to_version"], x["actor"]) for x in events] == [
        ("promote", "started", version, "tester"), ("promote", "refused", version, "tester")]
    assert check in events[1]["detail"] and events[0]["id"] in events[1]["detail"]


def test_refusal_lists_the_reason_for_a_tightened_policy(registry: Registry, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.gates import load_policy

    tightened = lenient_policy(tmp_path / "p.yaml", min_psr=0.6)
    monkeypatch.setenv("TOOLKIT_POLICY", str(tightened))
    with pytest.raises(PromotionRefused, match=load_policy(tightened).sha256()[:12]):
        promote(registry.model, 2, reason="r")
    events = AuditLog(registry.audit).events(registry.model)
    assert "policy in force: registry-tests version" in events[-1]["detail"] and str(tightened) in events[-1]["detail"]


def test_bad_input_is_named(registry: Registry) -> None:
    with pytest.raises(ConfigurationError) as e:
        promote(registry.model, 2, reason="  ")
    assert e.value.field == "reason"
    with pytest.raises(ConfigurationError) as e:
        promote(registry.model, 42, reason="x")
    assert e.value.field == "version"
    with pytest.raises(ConfigurationError) as e:
        rollback("no.such.model", reason="x")
    assert e.value.field == "model"


def test_rollback_with_nothing_to_roll_back_to_is_refused(registry: Registry) -> None:
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="has no champion"):
        rollback(registry.model, reason="no champion yet", actor="tester")
    assert adapter.registry_snapshot(registry.model) == before

    promote(registry.model, 2, reason="first champion", actor="tester")
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="nothing to roll back to"):
        rollback(registry.model, reason="only one champion ever", actor="tester")
    assert adapter.registry_snapshot(registry.model) == before
    outcomes = [(x["action"], x["outcome"]) for x in audit_trail(registry)]
    assert outcomes == [("rollback", "started"), ("rollback", "refused"), ("promote", "started"), ("promote", "done"),
                        ("rollback", "started"), ("rollback", "refused")]


# ----------------------------------------------------------------------------- promote, promote, rollback


def test_promote_promote_rollback(registry: Registry) -> None:
    from mlflow import MlflowClient

    m = registry.model
    first = promote(m, 2, reason="best OOS Sharpe", actor="alice")
    assert (first["from_version"], first["to_version"]) == (None, "2")
    assert adapter.alias_version(m, "champion") == "2"
    assert adapter.alias_version(m, "candidate") == "3"  # untouched: it points at another version
    second = promote(m, "3", reason="newer data", actor="bob")
    assert (second["from_version"], second["to_version"]) == ("2", "3")
    aliases = adapter.model_aliases(m)
    assert aliases == {"champion": "3"}  # candidate consumed by the promotion of version 3
    t3 = version_tags(registry, "3")
    assert t3["promotion.previous_champion"] == "2" and t3["promotion.promoted_by"] == "bob"
    assert t3["promotion.verdict_sha"] == t3["gate.verdict_sha"]
    assert version_tags(registry, "2")["promotion.state"] == "retired"

    back = rollback(m, reason="slippage above model", actor="carol")
    assert (back["from_version"], back["to_version"]) == ("3", "2")
    assert adapter.alias_version(m, "champion") == "2"
    t3, t2 = version_tags(registry, "3"), version_tags(registry, "2")
    assert t3["promotion.state"] == "rolled_back" and t3["rollback.rolled_back_by"] == "carol"
    assert t3["rollback.reason"] == "slippage above model"
    assert t2["promotion.state"] == "champion"
    # version 2 replaced nothing: a second rollback is refused and changes nothing
    before = adapter.registry_snapshot(m)
    with pytest.raises(PromotionRefused):
        rollback(m, reason="again", actor="carol")
    assert adapter.registry_snapshot(m) == before

    log = AuditLog(registry.audit)
    assert log.verify() == len(log.events())
    assert [e["outcome"] for e in audit_trail(registry)] == ["started", "done"] * 3 + ["started", "refused"]
    done = [(e["action"], e["from_version"], e["to_version"], e["actor"], e["reason"])
            for e in audit_trail(registry) if e["outcome"] == "done"]
    assert done == [("promote", None, "2", "alice", "best OOS Sharpe"), ("promote", "2", "3", "bob", "newer data"),
                    ("rollback", "3", "2", "carol", "slippage above model")]
    assert all(pd.Timestamp(e["at"]).tzname() == "UTC" for e in log.events(m))
    # the trail survives a fresh read of the registry and of the log
    assert AuditLog(registry.audit).events(m) == log.events(m)

    st = status(m)
    assert st["champion"] == "2" and st["metrics"]["promotions"] == 2 and st["metrics"]["rollbacks"] == 1
    cycle = st["metrics"]["last_cycle_hours"]
    created = pd.Timestamp(adapter.version_info(m, 3).created_at)
    promoted = pd.Timestamp(second["at"])
    assert cycle == pytest.approx((promoted - created).total_seconds() / 3600, abs=1e-5)
    history = MlflowClient().get_metric_history(st["metrics"]["registry_run_id"], "promotion.cycle_hours")
    assert [h.step for h in history] == [1, 2]
    rollbacks = MlflowClient().get_metric_history(st["metrics"]["registry_run_id"], "rollbacks.total")
    assert max(h.value for h in rollbacks) == 1.0


# ----------------------------------------------------------------------------- racing processes


def test_two_promotes_racing_in_separate_processes(registry: Registry) -> None:
    cmds = [[TOOLKIT, "promote", registry.model, "--version", v, "--reason", f"race {v}", "--actor", f"proc{v}",
             "--json"] for v in ("2", "3")]
    procs = [subprocess.Popen(c, env=registry.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    results = [json.loads(o[0]) for o in outs]
    events = [e for e in audit_trail(registry) if e["outcome"] != "started"]
    assert len(events) == 2 and all(e["outcome"] == "done" for e in events)
    first, second = events
    assert first["from_version"] is None and second["from_version"] == first["to_version"]
    assert {first["to_version"], second["to_version"]} == {"2", "3"}
    assert adapter.alias_version(registry.model, "champion") == second["to_version"]
    assert version_tags(registry, second["to_version"])["promotion.previous_champion"] == first["to_version"]
    assert {r["audit_id"] for r in results} == {first["id"], second["id"]}
    assert [e["outcome"] for e in audit_trail(registry)].count("started") == 2
    assert AuditLog(registry.audit).verify() == len(AuditLog(registry.audit).events())


# ----------------------------------------------------------------------------- forged verdicts


def test_forged_verdict_with_a_recomputed_sha_is_refused(registry: Registry, tmp_path: Path) -> None:
    """A failed verdict edited to pass, re-hashed with the documented rule and recorded, is not promotable."""
    from toolkit.gates import verify_verdict_json
    from toolkit.gates.evidence import canonical_json

    files = adapter.download_gate_artifacts(registry.model, 1, tmp_path / "gates")
    d = json.loads(files.verdict.read_text())
    assert d["passed"] is False
    d.update(passed=True, verdict="passed", failed=[])
    for g in d["gates"]:
        g["passed"] = True
    body = {k: v for k, v in d.items() if k != "verdict_sha"}
    d["verdict_sha"] = hashlib.sha256((canonical_json(body, indent=2) + "\n").encode()).hexdigest()
    forged = tmp_path / "forged" / "verdict.json"
    forged.parent.mkdir()
    forged.write_text(canonical_json(d, indent=2) + "\n", encoding="utf-8")
    assert verify_verdict_json(forged.read_text())  # self-consistent: the sha alone proves nothing
    record_verdict(registry.model, 1, forged, extra_evidence=files.evidence)
    assert version_tags(registry, "1")["gate.verdict"] == "passed"

    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="does not follow from the evidence"):
        promote(registry.model, 1, reason="forged", actor="mallory")
    after = adapter.registry_snapshot(registry.model)
    assert after == before and after["aliases"].get("champion") is None
    events = audit_trail(registry)
    assert [(e["outcome"], e["to_version"]) for e in events] == [("started", "1"), ("refused", "1")]


# ----------------------------------------------------------------------------- failures half-way


def _fail_champion_alias(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make MLflow refuse to move alias ``champion`` (an MlflowException, as a broken store raises)."""
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient

    real = MlflowClient.set_registered_model_alias
    calls: list[str] = []

    def failing(self: MlflowClient, name: str, alias: str, version: str) -> None:
        calls.append(alias)
        if alias == "champion":
            raise MlflowException("simulated store failure while moving the alias")
        real(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", failing)
    return calls


def test_promote_failing_half_way_restores_the_snapshot(registry: Registry) -> None:
    """The alias move fails after the version's tags were written and ``candidate`` was consumed.

    The failure is injected by monkeypatching one ``MlflowClient`` method (the brief allows it
    here): every other call goes to the real sqlite store.
    """
    from toolkit.errors import RegistryError

    before = adapter.registry_snapshot(registry.model)
    assert before["aliases"] == {"candidate": "3"}
    with pytest.MonkeyPatch.context() as mp:
        calls = _fail_champion_alias(mp)
        with pytest.raises(RegistryError, match="failed half-way"):
            promote(registry.model, 3, reason="doomed", actor="tester")
    assert calls == ["champion", "candidate"]  # the failed move, then candidate put back from the snapshot
    assert adapter.registry_snapshot(registry.model) == before  # tags and aliases as they were
    events = AuditLog(registry.audit).events(registry.model)
    assert events[-1]["outcome"] == "error" and "simulated store failure" in events[-1]["detail"]


def test_rollback_failing_half_way_restores_the_snapshot(registry: Registry) -> None:
    """As above for rollback: the champion alias cannot move back (one MlflowClient method patched)."""
    from toolkit.errors import RegistryError

    promote(registry.model, 2, reason="first", actor="tester")
    promote(registry.model, 3, reason="second", actor="tester")
    before = adapter.registry_snapshot(registry.model)
    with pytest.MonkeyPatch.context() as mp:
        _fail_champion_alias(mp)
        with pytest.raises(RegistryError, match="failed half-way"):
            rollback(registry.model, reason="doomed", actor="tester")
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
        done = promote(registry.model, 2, reason="go", actor="tester")
    assert done["promoted"] is True and "simulated metric store failure" in done["bookkeeping_error"]
    assert adapter.alias_version(registry.model, "champion") == "2"
    assert version_tags(registry, "2")["promotion.state"] == "champion"
    row = AuditLog(registry.audit).events(registry.model)[-1]
    assert row["outcome"] == "done" and "bookkeeping failed" in row["detail"]
