"""Promotions refused on a real sqlite MLflow store with real verdicts: the refusal table, forged verdicts and
forged measured evidence; each changes nothing in the registry and leaves its refusal in the audit trail."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from registry_support import Registry, audit_trail, forge_extras, lenient_policy, version_tags

from toolkit.errors import ConfigurationError, PromotionRefused
from toolkit.registry import adapter
from toolkit.registry.audit import AuditLog
from toolkit.registry.promotion import promote, rollback
from toolkit.registry.verdicts import record_verdict

pytest_plugins = ["registry_support"]  # the session registry fixtures (see registry_support)

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
