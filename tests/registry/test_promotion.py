"""Promotion and rollback per stage on a real sqlite MLflow store with real verdicts: refusals, races, forgeries,
failures."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from registry_support import TOOLKIT, Registry, audit_trail, forge_extras, lenient_policy, version_tags

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


# ----------------------------------------------------------------------------- refusals


def _tamper_evidence(reg: Registry) -> None:
    run = adapter.version_info(reg.model, 2).run_id
    path = reg.artifacts_of(run) / "evidence" / "returns.parquet"
    frame = pd.read_parquet(path)
    frame.iloc[-1, frame.columns.get_loc("return")] += 0.01  # one bar's return edited after registration
    frame.to_parquet(path)


def _tamper_verdict_file(reg: Registry) -> None:
    path = reg.artifacts_of(version_tags(reg, "2")["gate.paper.run_id"]) / "verdict" / "verdict.json"
    d = json.loads(path.read_text())
    d["gates"][0]["explanation"] += " (edited)"
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def _tamper_extras(reg: Registry) -> None:
    path = reg.artifacts_of(version_tags(reg, "2")["gate.paper.run_id"]) / "evidence" / "gate_evidence.json"
    d = json.loads(path.read_text())
    d["latency"]["samples_ns"][0] = 1
    path.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")


def _flip_failed_tag(reg: Registry) -> None:
    adapter.configure()  # mlflow's global URI may still point at another test's store
    adapter.set_version_tag(reg.model, "1", "gate.paper.verdict", "passed")


def _paper_verdict_on_live_tags(reg: Registry) -> None:
    """Point version 2's live tags at its paper gates run (a passing verdict, but of the other stage)."""
    adapter.configure()
    t = version_tags(reg, "2")
    for key in ("verdict_sha", "policy_sha", "evidence_sha", "verdict_file_sha256", "run_id"):
        adapter.set_version_tag(reg.model, "2", f"gate.live.{key}", t[f"gate.paper.{key}"])


def _hold_paper(reg: Registry, version: str = "2") -> None:
    promote(reg.model, version, "paper", reason="to paper first", actor="setup")


def _forge_paper_tag(reg: Registry) -> None:
    """A researcher with EDIT rights writes the tag a paper promotion writes; the audit trail holds none."""
    adapter.configure()
    adapter.set_version_tag(reg.model, "2", "promotion.paper.state", "retired")


REFUSALS = {
    # name: (version, stage, prepare, tighten the stage's policy, the check that must fail)
    "failed": ("1", "paper", None, False, "verdict passed"),
    "never evaluated": ("4", "paper", None, False, "evaluated"),
    "stale policy": ("2", "paper", None, True, "current policy"),
    "stale live policy": ("2", "live", _hold_paper, True, "current policy"),
    "evidence artifact edited": ("2", "paper", _tamper_evidence, False, "evidence intact"),
    "verdict file edited": ("2", "paper", _tamper_verdict_file, False, "verdict file"),
    "gate extras edited": ("2", "paper", _tamper_extras, False, "evidence matches verdict"),
    "failed verdict tagged passed": ("1", "paper", _flip_failed_tag, False, "verdict content"),
    "paper verdict under live tags": ("2", "live", _paper_verdict_on_live_tags, False, "verdict content"),
    "straight to live": ("2", "live", None, False, "paper first"),
    "live, not paper holder": ("3", "live", _hold_paper, False, "paper first"),
    "live, paper tag forged": ("2", "live", _forge_paper_tag, False, "paper first"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_promotion_refused_changes_nothing(registry: Registry, tmp_path: Path, case: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    version, stage, prepare, stale, check = REFUSALS[case]
    if prepare is not None:
        prepare(registry)
    if stale:  # the desk tightened one threshold after the version was evaluated
        monkeypatch.setenv(f"TOOLKIT_POLICY_{stage.upper()}",
                           str(lenient_policy(tmp_path / "tightened.yaml", stage, min_psr=0.6)))
    before = adapter.registry_snapshot(registry.model)
    n = len(audit_trail(registry))
    with pytest.raises(PromotionRefused) as e:
        promote(registry.model, version, stage, reason=f"test {case}", actor="tester")
    assert f"{check}:" in str(e.value) and f"to {stage}" in str(e.value)
    assert adapter.registry_snapshot(registry.model) == before
    events = audit_trail(registry)[n:]
    assert [(x["action"], x["stage"], x["outcome"], x["to_version"], x["actor"]) for x in events] == [
        ("promote", stage, "started", version, "tester"), ("promote", stage, "refused", version, "tester")]
    assert check in events[1]["detail"] and events[0]["id"] in events[1]["detail"]


def test_refusal_lists_the_reason_for_a_tightened_policy(registry: Registry, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.gates import load_policy

    tightened = lenient_policy(tmp_path / "p.yaml", "paper", min_psr=0.6)
    monkeypatch.setenv("TOOLKIT_POLICY_PAPER", str(tightened))
    with pytest.raises(PromotionRefused, match=load_policy(tightened).sha256()[:12]):
        promote(registry.model, 2, "paper", reason="r")
    events = AuditLog(registry.audit).events(registry.model)
    assert "paper policy in force: registry-tests-paper version" in events[-1]["detail"]
    assert str(tightened) in events[-1]["detail"]


def test_a_policy_of_the_other_stage_in_force_is_a_configuration_error(registry: Registry,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_POLICY_LIVE", str(registry.policies["paper"]))
    before = adapter.registry_snapshot(registry.model)
    _hold_paper(registry)
    with pytest.raises(ConfigurationError) as e:
        promote(registry.model, 2, "live", reason="wrong file in force")
    assert e.value.field == "policy.stage" and "a live policy" in str(e.value)
    assert adapter.registry_snapshot(registry.model)["aliases"] == {**before["aliases"], "paper": "2"}
    assert audit_trail(registry)[-1]["outcome"] == "error" and audit_trail(registry)[-1]["stage"] == "live"


def test_bad_input_is_named(registry: Registry) -> None:
    with pytest.raises(ConfigurationError) as e:
        promote(registry.model, 2, "paper", reason="  ")
    assert e.value.field == "reason"
    with pytest.raises(ConfigurationError) as e:
        promote(registry.model, 42, "paper", reason="x")
    assert e.value.field == "version"
    with pytest.raises(ConfigurationError) as e:
        promote(registry.model, 2, "champion", reason="x")  # an alias is not a stage
    assert e.value.field == "stage"
    with pytest.raises(ConfigurationError) as e:
        rollback(registry.model, "staging", reason="x")
    assert e.value.field == "stage"
    with pytest.raises(ConfigurationError) as e:
        rollback("no.such.model", "live", reason="x")
    assert e.value.field == "model"
    assert [e["to_version"] for e in audit_trail(registry)] == ["42", "42"]  # only the attempt that got going


def test_rollback_with_nothing_to_roll_back_to_is_refused(registry: Registry) -> None:
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="has no champion version"):
        rollback(registry.model, "live", reason="no champion yet", actor="tester")
    assert adapter.registry_snapshot(registry.model) == before

    promote(registry.model, 2, "paper", reason="first paper version", actor="tester")
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="nothing to roll back to"):
        rollback(registry.model, "paper", reason="only one paper version ever", actor="tester")
    with pytest.raises(PromotionRefused, match="has no champion version"):
        rollback(registry.model, "live", reason="paper is not live", actor="tester")
    assert adapter.registry_snapshot(registry.model) == before
    outcomes = [(x["action"], x["stage"], x["outcome"]) for x in audit_trail(registry)]
    assert outcomes == [("rollback", "live", "started"), ("rollback", "live", "refused"),
                        ("promote", "paper", "started"), ("promote", "paper", "done"),
                        ("rollback", "paper", "started"), ("rollback", "paper", "refused"),
                        ("rollback", "live", "started"), ("rollback", "live", "refused")]


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


# ----------------------------------------------------------------------------- forged verdicts


def test_forged_verdict_with_a_recomputed_sha_is_refused(registry: Registry, tmp_path: Path) -> None:
    """A failed verdict edited to pass, re-hashed with the documented rule and recorded, is not promotable."""
    from toolkit.gates import verify_verdict_json
    from toolkit.gates.evidence import canonical_json

    files = adapter.download_gate_artifacts(registry.model, 1, tmp_path / "gates", "paper")
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
    assert version_tags(registry, "1")["gate.paper.verdict"] == "passed"

    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="does not follow from the evidence"):
        promote(registry.model, 1, "paper", reason="forged", actor="mallory")
    after = adapter.registry_snapshot(registry.model)
    assert after == before and after["aliases"].get("paper") is None
    events = audit_trail(registry)
    assert [(e["outcome"], e["to_version"]) for e in events] == [("started", "1"), ("refused", "1")]


def _bump(path: str, by: float) -> Callable[[dict[str, Any]], None]:
    """Return an edit adding ``by`` to the number at dotted ``path`` (list indices as numbers)."""
    def edit(extras: dict[str, Any]) -> None:
        *parents, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        node: Any = extras
        for k in parents:
            node = node[k]
        node[last] = node[last] + by
    return edit


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(extras: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = extras
        for k in parents:
            node = node[k]
        if value is _DROP:
            del node[last]
        else:
            node[last] = value
    return edit


_DROP = object()


def _fast_sample(extras: dict[str, Any]) -> None:
    extras["latency"]["samples_ns"][0] = 0  # a decision "measured" at zero nanoseconds


def _more_samples(extras: dict[str, Any]) -> None:
    extras["latency"]["samples_ns"] += [1000] * 200  # padding with fast samples lowers the p99


FORGERIES = {
    # the field the refusal must name: the edit (each keeps the verdict passing at the paper stage)
    "strategy": _bump("strategy.warmup", 1),
    "lookahead": _bump("lookahead.decisions_compared", 1000),
    "warmup": _bump("warmup.rows.0.compared", 5),
    "cost_stress": _bump("cost_stress.stressed.sharpe_oos_annual", 0.5),
    "robustness": _bump("robustness.neighbours.0.sharpe_oos_annual", 0.5),
    "settings": _set("settings.robustness.step", 0.5),  # robustness is advisory on paper: the verdict passes
    "registry_trials": _set("registry_trials", None),  # the example: N from the local ledger only
    "bundle_files": _set("bundle_files", ["config.json"]),
    "latency.samples_ns": _fast_sample,
    "latency.samples_ns ": _more_samples,  # (a second case naming the same field: the count)
    "latency.host": _set("latency.host", _DROP),
    "latency.distinct_bars": _bump("latency.distinct_bars", -1),
}


@pytest.mark.parametrize("field", list(FORGERIES))
def test_forged_measured_evidence_is_refused_naming_the_field(registry: Registry, tmp_path: Path,
                                                              field: str) -> None:
    """gate_evidence.json edited, the verdict honestly re-computed from it and recorded: every hash agrees,
    the verdict reproduces, and promotion still refuses because the measurement does not re-derive."""
    sha = forge_extras(registry, "2", "paper", FORGERIES[field], tmp_path)
    assert version_tags(registry, "2")["gate.paper.verdict_sha"] == sha
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused) as e:
        promote(registry.model, 2, "paper", reason="forged evidence", actor="mallory")
    message = str(e.value)
    assert "measured evidence:" in message and f"field {field.strip()}" in message, message
    assert "verdict reproduces" not in message  # the forgery got past every earlier check
    assert adapter.registry_snapshot(registry.model) == before
    assert audit_trail(registry)[-1]["outcome"] == "refused"


def test_bundle_sha_of_the_extras_cannot_be_edited(registry: Registry, tmp_path: Path) -> None:
    """Extras claiming another bundle are not even readable as evidence of this one."""
    from toolkit.errors import DataError

    with pytest.raises(DataError, match="expected extras for bundle"):
        forge_extras(registry, "2", "paper", _set("bundle_sha256", "0" * 64), tmp_path)


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
