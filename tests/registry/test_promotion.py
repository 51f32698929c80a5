"""Promotion, rollback, status and the CLI against a real sqlite MLflow store and real gate verdicts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from registry_support import GRIDS, Registry, lenient_policy

from toolkit.backtest.bundle import BUNDLE_FILES, bundle_sha256
from toolkit.errors import ConfigurationError, PromotionRefused
from toolkit.registry import versions as reg_versions
from toolkit.registry.audit import AuditLog
from toolkit.registry.promotion import promote, rollback, status

pytest_plugins = ["registry_support"]  # the session registry fixtures (see registry_support)

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))


def _tags(reg: Registry, version: str) -> dict[str, str]:
    return reg_versions.version_info(reg.model, version)["tags"]


def _trail(reg: Registry) -> list[dict[str, object]]:
    """Return the promote and rollback rows of the audit trail (not the candidate rows of the session build)."""
    return [e for e in AuditLog(reg.audit).events(reg.model) if e["action"] in ("promote", "rollback")]


# ----------------------------------------------------------------------------- reading state


def test_version_state_and_evidence_download(registry: Registry, tmp_path: Path) -> None:
    info = reg_versions.version_info(registry.model, 2)
    assert info["version"] == "2" and info["run_id"]
    assert info["tags"]["gate.verdict"] == "passed"
    assert reg_versions.list_versions(registry.model) == ["1", "2", "3", "4"]
    assert reg_versions.model_aliases(registry.model) == {"candidate": "3"}  # the last version that passed
    assert reg_versions.alias_version(registry.model, "candidate") == "3"
    assert reg_versions.alias_version(registry.model, "champion") is None
    assert "candidate" in reg_versions.version_info(registry.model, 3)["aliases"]
    assert _tags(registry, "1")["gate.verdict"] == "failed"
    assert _tags(registry, "4")["gate.verdict"] == "not_evaluated"

    d = reg_versions.download_evidence(registry.model, 2, tmp_path / "ev")
    assert sorted(p.name for p in d.iterdir()) == sorted(BUNDLE_FILES)
    assert bundle_sha256(d) == info["tags"]["evidence.sha256"] == bundle_sha256(registry.bundles["pass"])

    with pytest.raises(ConfigurationError) as e:
        reg_versions.version_info(registry.model, 99)
    assert e.value.field == "version" and "['1', '2', '3', '4']" in str(e.value)
    with pytest.raises(ConfigurationError) as e:
        reg_versions.version_info("no.such.model", 1)
    assert e.value.field == "model"
    with pytest.raises(ConfigurationError) as e:
        reg_versions.version_info(registry.model, "two")
    assert e.value.field == "version"


def test_recorded_verdict_re_evaluates_byte_identically(registry: Registry, tmp_path: Path) -> None:
    from toolkit.gates import Evidence, evaluate, load_policy, verify_verdict_json

    files = reg_versions.download_gate_artifacts(registry.model, 2, tmp_path / "gates")
    bundle = reg_versions.download_evidence(registry.model, 2, tmp_path / "bundle")
    stored = files["verdict"].read_bytes()
    again = evaluate(Evidence.read(bundle, extras_dir=files["evidence"]), load_policy(registry.policy))
    assert again.to_json().encode() == stored
    assert verify_verdict_json(stored.decode())
    tags = _tags(registry, "2")
    assert tags["gate.verdict_sha"] == again.verdict_sha == json.loads(stored)["verdict_sha"]
    assert tags["gate.policy_sha"] == load_policy(registry.policy).sha256()
    assert tags["gate.run_id"] and pd.Timestamp(tags["gate.evaluated_at"]).tzname() == "UTC"


# ----------------------------------------------------------------------------- refusals


def _tamper_evidence(reg: Registry) -> None:
    run = reg_versions.version_info(reg.model, 2)["run_id"]
    path = reg.artifacts_of(run) / "evidence" / "returns.parquet"
    frame = pd.read_parquet(path)
    frame.iloc[-1, frame.columns.get_loc("return")] += 0.01  # one bar's return edited after registration
    frame.to_parquet(path)


def _tamper_verdict_file(reg: Registry) -> None:
    path = reg.artifacts_of(_tags(reg, "2")["gate.run_id"]) / "verdict" / "verdict.json"
    d = json.loads(path.read_text())
    d["gates"][0]["explanation"] += " (edited)"
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def _tamper_extras(reg: Registry) -> None:
    path = reg.artifacts_of(_tags(reg, "2")["gate.run_id"]) / "evidence" / "gate_evidence.json"
    d = json.loads(path.read_text())
    d["latency"]["samples_ns"][0] = 1
    path.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n")


def _flip_failed_tag(reg: Registry) -> None:
    from toolkit.registry.mlflow_store import client, configure

    configure()  # mlflow's global URI may still point at another test's store
    client().set_model_version_tag(reg.model, "1", "gate.verdict", "passed")


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
    before = reg_versions.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused) as e:
        promote(registry.model, version, reason=f"test {case}", actor="tester")
    assert f"{check}:" in str(e.value)
    assert reg_versions.registry_snapshot(registry.model) == before
    events = _trail(registry)
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
    before = reg_versions.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="has no champion"):
        rollback(registry.model, reason="no champion yet", actor="tester")
    assert reg_versions.registry_snapshot(registry.model) == before

    promote(registry.model, 2, reason="first champion", actor="tester")
    before = reg_versions.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="nothing to roll back to"):
        rollback(registry.model, reason="only one champion ever", actor="tester")
    assert reg_versions.registry_snapshot(registry.model) == before
    outcomes = [(x["action"], x["outcome"]) for x in _trail(registry)]
    assert outcomes == [("rollback", "started"), ("rollback", "refused"), ("promote", "started"), ("promote", "done"),
                        ("rollback", "started"), ("rollback", "refused")]


# ----------------------------------------------------------------------------- promote, promote, rollback


def test_promote_promote_rollback(registry: Registry) -> None:
    from toolkit.registry.mlflow_store import client

    m = registry.model
    first = promote(m, 2, reason="best OOS Sharpe", actor="alice")
    assert (first["from_version"], first["to_version"]) == (None, "2")
    assert reg_versions.alias_version(m, "champion") == "2"
    assert reg_versions.alias_version(m, "candidate") == "3"  # untouched: it points at another version
    second = promote(m, "3", reason="newer data", actor="bob")
    assert (second["from_version"], second["to_version"]) == ("2", "3")
    aliases = reg_versions.model_aliases(m)
    assert aliases == {"champion": "3"}  # candidate consumed by the promotion of version 3
    t3 = _tags(registry, "3")
    assert t3["promotion.previous_champion"] == "2" and t3["promotion.promoted_by"] == "bob"
    assert t3["promotion.verdict_sha"] == t3["gate.verdict_sha"]
    assert _tags(registry, "2")["promotion.state"] == "retired"

    back = rollback(m, reason="slippage above model", actor="carol")
    assert (back["from_version"], back["to_version"]) == ("3", "2")
    assert reg_versions.alias_version(m, "champion") == "2"
    t3, t2 = _tags(registry, "3"), _tags(registry, "2")
    assert t3["promotion.state"] == "rolled_back" and t3["rollback.rolled_back_by"] == "carol"
    assert t3["rollback.reason"] == "slippage above model"
    assert t2["promotion.state"] == "champion"
    # version 2 replaced nothing: a second rollback is refused and changes nothing
    before = reg_versions.registry_snapshot(m)
    with pytest.raises(PromotionRefused):
        rollback(m, reason="again", actor="carol")
    assert reg_versions.registry_snapshot(m) == before

    log = AuditLog(registry.audit)
    assert log.verify() == len(log.events())
    assert [e["outcome"] for e in _trail(registry)] == ["started", "done"] * 3 + ["started", "refused"]
    done = [(e["action"], e["from_version"], e["to_version"], e["actor"], e["reason"])
            for e in _trail(registry) if e["outcome"] == "done"]
    assert done == [("promote", None, "2", "alice", "best OOS Sharpe"), ("promote", "2", "3", "bob", "newer data"),
                    ("rollback", "3", "2", "carol", "slippage above model")]
    assert all(pd.Timestamp(e["at"]).tzname() == "UTC" for e in log.events(m))
    # the trail survives a fresh read of the registry and of the log
    assert AuditLog(registry.audit).events(m) == log.events(m)

    st = status(m)
    assert st["champion"] == "2" and st["metrics"]["promotions"] == 2 and st["metrics"]["rollbacks"] == 1
    cycle = st["metrics"]["last_cycle_hours"]
    created = pd.Timestamp(reg_versions.version_info(m, 3)["created_at"])
    promoted = pd.Timestamp(second["at"])
    assert cycle == pytest.approx((promoted - created).total_seconds() / 3600, abs=1e-5)
    history = client().get_metric_history(st["metrics"]["registry_run_id"], "promotion.cycle_hours")
    assert [h.step for h in history] == [1, 2]
    rollbacks = client().get_metric_history(st["metrics"]["registry_run_id"], "rollbacks.total")
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
    events = [e for e in _trail(registry) if e["outcome"] != "started"]
    assert len(events) == 2 and all(e["outcome"] == "done" for e in events)
    first, second = events
    assert first["from_version"] is None and second["from_version"] == first["to_version"]
    assert {first["to_version"], second["to_version"]} == {"2", "3"}
    assert reg_versions.alias_version(registry.model, "champion") == second["to_version"]
    assert _tags(registry, second["to_version"])["promotion.previous_champion"] == first["to_version"]
    assert {r["audit_id"] for r in results} == {first["id"], second["id"]}
    assert [e["outcome"] for e in _trail(registry)].count("started") == 2
    assert AuditLog(registry.audit).verify() == len(AuditLog(registry.audit).events())


# ----------------------------------------------------------------------------- CLI


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from toolkit.cli import main

    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_exit_codes_and_status_json(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    m = registry.model
    code, out, err = _cli(["promote", m, "--version", "1", "--reason", "x", "--json"], capsys)
    assert code == 6 and json.loads(out)["promoted"] is False and "verdict passed" in err
    code, _, err = _cli(["promote", m, "--version", "9", "--reason", "x"], capsys)
    assert code == 2 and "version" in err
    code, _, err = _cli(["status", "no.such.model"], capsys)
    assert code == 2 and "model" in err
    code, _, err = _cli(["rollback", m, "--reason", "x"], capsys)
    assert code == 6 and "no champion" in err
    code, out, _ = _cli(["promote", m, "--version", "2", "--reason", "go", "--actor", "dana"], capsys)
    assert code == 0 and "champion - -> 2 by dana" in out

    code, out, _ = _cli(["status", m, "--json"], capsys)
    assert code == 0
    st = json.loads(out)
    assert set(st) == {"model", "aliases", "champion", "candidate", "versions", "metrics", "audit", "audit_path",
                       "audit_chain", "warnings"}
    assert st["champion"] == "2" and st["aliases"] == {"candidate": "3", "champion": "2"}
    assert [v["version"] for v in st["versions"]] == ["1", "2", "3", "4"]
    v2 = st["versions"][1]
    assert set(v2) >= {"version", "created_at", "aliases", "gate", "promotion"}
    assert v2["gate"]["verdict"] == "passed" and v2["promotion"]["promoted_by"] == "dana"
    assert set(st["metrics"]) >= {"promotions", "rollbacks", "last_cycle_hours", "median_cycle_hours"}
    assert st["metrics"]["promotions"] == 1 and st["audit_chain"].startswith("ok")
    assert [(e["outcome"], e["actor"]) for e in st["audit"]][-1] == ("done", "dana")

    code, out, _ = _cli(["status", m], capsys)
    assert code == 0 and "champion 2" in out and "dana" in out


def test_verdict_under_a_what_if_policy_is_not_promotable(registry: Registry, tmp_path: Path) -> None:
    """Version 2 passed under the lenient policy; with the shipped policy in force it is refused,
    and ``toolkit promote`` has no ``--policy`` to choose another (a real subprocess each)."""
    env = {k: v for k, v in registry.env.items() if k != "TOOLKIT_POLICY"}
    base = [TOOLKIT, "promote", registry.model, "--version", "2", "--reason", "what-if", "--actor", "tester"]
    before = reg_versions.registry_snapshot(registry.model)
    refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 6, refused.stderr
    assert "current policy:" in refused.stderr
    forced = subprocess.run([*base, "--policy", str(registry.policy)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert forced.returncode == 2 and "--policy" in forced.stderr
    assert reg_versions.registry_snapshot(registry.model) == before
    events = _trail(registry)
    assert [(e["outcome"], e["to_version"]) for e in events] == [("started", "2"), ("refused", "2")]
    assert "policy in force: desk-default version 2026.11.1" in events[1]["detail"]


def test_cli_usage_error_exits_2(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(["promote", registry.model, "--version", "2"], capsys)  # --reason is required
    assert code == 2 and "reason" in err


# ----------------------------------------------------------------------------- the gate report (papermill)


def test_gates_report_end_to_end_then_promote(registry: Registry, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``toolkit gates --policy lenient`` is a what-if: promotable only once that policy is the one in force."""
    from toolkit.gates import Evidence, evaluate, load_policy

    m = registry.model
    monkeypatch.delenv("TOOLKIT_POLICY")  # the shipped policy is in force; the lenient one is asked for
    started = time.perf_counter()
    code, out, err = _cli(["gates", m, "--version", "4", "--policy", str(registry.policy), "--json"], capsys)
    elapsed = time.perf_counter() - started
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] is True and result["candidate"] is True and elapsed < 120
    assert reg_versions.alias_version(m, "candidate") == "4"
    tags = _tags(registry, "4")
    assert tags["gate.verdict"] == "passed" and tags["gate.run_id"] == result["run_id"]
    assert tags["gate.verdict_sha"] == result["verdict_sha"]
    run_dir = registry.artifacts_of(result["run_id"])
    assert (run_dir / "verdict" / "verdict.json").is_file()
    assert list((run_dir / "report").glob("*.html")) and list((run_dir / "notebook").glob("*.ipynb"))
    html = Path(result["report_path"]).read_text()
    assert "latency" in html.lower() and "from toolkit" not in html  # rendered without the code cells
    index = (registry.root / "reports" / "index.jsonl").read_text().splitlines()
    assert json.loads(index[-1])["kind"] == "gates"
    # the recorded evidence re-evaluates to the same bytes
    files = reg_versions.download_gate_artifacts(m, 4, tmp_path / "g")
    bundle = reg_versions.download_evidence(m, 4, tmp_path / "b")
    again = evaluate(Evidence.read(bundle, extras_dir=files["evidence"]), load_policy(registry.policy))
    assert again.to_json().encode() == files["verdict"].read_bytes()
    # DSR's N is the registry's count (10), not the 6 trials in v4's bundle ledger
    dsr = next(g for g in json.loads(files["verdict"].read_text())["gates"] if g["name"] == "dsr")
    assert dsr["inputs"]["n_trials"] == dsr["inputs"]["n_trials_registry"] == 10
    assert dsr["inputs"]["n_trials_ledger"] == 6

    before = reg_versions.registry_snapshot(m)
    code, _, err = _cli(["promote", m, "--version", "4", "--reason", "what-if verdict", "--actor", "erin"], capsys)
    assert code == 6 and "current policy:" in err and load_policy().sha256()[:12] in err
    assert reg_versions.registry_snapshot(m) == before

    monkeypatch.setenv("TOOLKIT_POLICY", str(registry.policy))  # the desk adopts the lenient policy
    done = promote(m, 4, reason="passed the gates", actor="erin")
    assert done["to_version"] == "4" and reg_versions.model_aliases(m) == {"champion": "4"}


def test_gates_report_refuses_altered_evidence_before_any_kernel(registry: Registry) -> None:
    from toolkit.errors import RegistryError
    from toolkit.reporting.gates import gates_report

    run = reg_versions.version_info(registry.model, 4)["run_id"]
    (registry.artifacts_of(run) / "evidence" / "trades.parquet").write_bytes(b"not parquet")
    before = reg_versions.registry_snapshot(registry.model)
    with pytest.raises(RegistryError, match="altered evidence"):
        gates_report(registry.model, 4)
    assert reg_versions.registry_snapshot(registry.model) == before
    assert not (registry.root / "reports" / "gates").exists()


def test_gates_failing_under_the_shipped_policy_exits_5_and_drops_candidate(
        registry: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_POLICY")  # the shipped policy is in force
    m = registry.model
    assert reg_versions.alias_version(m, "candidate") == "3"
    code, out, err = _cli(["gates", m, "--version", "3", "--json"], capsys)  # the shipped, stricter policy
    assert code == 5 and "failed the gates" in err
    result = json.loads(out)
    assert result["passed"] is False and result["failed"]
    assert set(result["failed"]) == {g["name"] for g in result["gates"] if not g["passed"]}
    tags = _tags(registry, "3")
    assert tags["gate.verdict"] == "failed" and tags["gate.run_id"] == result["run_id"]
    assert reg_versions.alias_version(m, "candidate") is None  # a failed re-evaluation withdraws it
    entry = json.loads((registry.root / "reports" / "index.jsonl").read_text().splitlines()[-1])
    assert entry["status"] == "failed" and all(name in entry["summary"] for name in result["failed"])
    with pytest.raises(PromotionRefused, match="verdict passed"):
        promote(m, 3, reason="it passed last week", actor="tester")


# ----------------------------------------------------------------------------- forged verdicts


def test_forged_verdict_with_a_recomputed_sha_is_refused(registry: Registry, tmp_path: Path) -> None:
    """A failed verdict edited to pass, re-hashed with the documented rule and recorded, is not promotable."""
    from toolkit.gates import verify_verdict_json
    from toolkit.gates.evidence import canonical_json

    files = reg_versions.download_gate_artifacts(registry.model, 1, tmp_path / "gates")
    d = json.loads(files["verdict"].read_text())
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
    reg_versions.record_verdict(registry.model, 1, forged, extra_evidence=files["evidence"])
    assert _tags(registry, "1")["gate.verdict"] == "passed"

    before = reg_versions.registry_snapshot(registry.model)
    with pytest.raises(PromotionRefused, match="does not follow from the evidence"):
        promote(registry.model, 1, reason="forged", actor="mallory")
    after = reg_versions.registry_snapshot(registry.model)
    assert after == before and after["aliases"].get("champion") is None
    events = _trail(registry)
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

    before = reg_versions.registry_snapshot(registry.model)
    assert before["aliases"] == {"candidate": "3"}
    with pytest.MonkeyPatch.context() as mp:
        calls = _fail_champion_alias(mp)
        with pytest.raises(RegistryError, match="failed half-way"):
            promote(registry.model, 3, reason="doomed", actor="tester")
    assert calls == ["champion", "candidate"]  # the failed move, then candidate put back from the snapshot
    assert reg_versions.registry_snapshot(registry.model) == before  # tags and aliases as they were
    events = AuditLog(registry.audit).events(registry.model)
    assert events[-1]["outcome"] == "error" and "simulated store failure" in events[-1]["detail"]


def test_rollback_failing_half_way_restores_the_snapshot(registry: Registry) -> None:
    """As above for rollback: the champion alias cannot move back (one MlflowClient method patched)."""
    from toolkit.errors import RegistryError

    promote(registry.model, 2, reason="first", actor="tester")
    promote(registry.model, 3, reason="second", actor="tester")
    before = reg_versions.registry_snapshot(registry.model)
    with pytest.MonkeyPatch.context() as mp:
        _fail_champion_alias(mp)
        with pytest.raises(RegistryError, match="failed half-way"):
            rollback(registry.model, reason="doomed", actor="tester")
    assert reg_versions.registry_snapshot(registry.model) == before


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
    assert reg_versions.alias_version(registry.model, "champion") == "2"
    assert _tags(registry, "2")["promotion.state"] == "champion"
    row = AuditLog(registry.audit).events(registry.model)[-1]
    assert row["outcome"] == "done" and "bookkeeping failed" in row["detail"]


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
    rows = [(e["action"], e["outcome"], e["to_version"]) for e in _trail(registry)]
    assert rows == [("promote", "started", "42"), ("promote", "error", "42"), ("promote", "started", "2"),
                    ("promote", "error", "2"), ("rollback", "started", None), ("rollback", "error", None)]
    errors = [e for e in _trail(registry) if e["outcome"] == "error"]
    assert "ConfigurationError" in errors[0]["detail"] and "TemporaryError" in errors[1]["detail"]
    assert reg_versions.alias_version(registry.model, "champion") is None


def test_started_row_is_written_before_mlflow_changes(registry: Registry) -> None:
    """When the champion alias moves, the trail already holds the attempt's ``started`` row."""
    from mlflow import MlflowClient

    seen: list[list[str]] = []
    real = MlflowClient.set_registered_model_alias

    def spy(self: MlflowClient, name: str, alias: str, version: str) -> None:
        seen.append([e["outcome"] for e in _trail(registry)])
        real(self, name, alias, version)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MlflowClient, "set_registered_model_alias", spy)
        promote(registry.model, 2, reason="go", actor="tester")
    assert seen == [["started"]]
    assert [e["outcome"] for e in _trail(registry)] == ["started", "done"]


def test_candidate_moves_are_audited(registry: Registry, tmp_path: Path) -> None:
    from toolkit.gates import DEFAULT_POLICY_PATH, Evidence, evaluate, load_policy

    log = AuditLog(registry.audit)
    built = [(e["action"], e["outcome"], e["from_version"], e["to_version"]) for e in log.events(registry.model)]
    assert built == [("candidate", "started", None, "2"), ("candidate", "done", None, "2"),
                     ("candidate", "started", None, "3"), ("candidate", "done", "2", "3")]
    # version 3 re-evaluated under the shipped policy fails: candidate withdrawn, and audited
    files = reg_versions.download_gate_artifacts(registry.model, 3, tmp_path / "g")
    bundle = reg_versions.download_evidence(registry.model, 3, tmp_path / "b")
    strict = evaluate(Evidence.read(bundle, extras_dir=files["evidence"]), load_policy(DEFAULT_POLICY_PATH))
    assert not strict.passed
    (tmp_path / "v" / "verdict.json").parent.mkdir()
    (tmp_path / "v" / "verdict.json").write_text(strict.to_json(), encoding="utf-8")
    reg_versions.record_verdict(registry.model, 3, tmp_path / "v" / "verdict.json", extra_evidence=files["evidence"],
                                actor="gatekeeper")
    assert reg_versions.alias_version(registry.model, "candidate") is None
    last = log.events(registry.model)[-2:]
    assert [(e["action"], e["outcome"], e["from_version"], e["to_version"], e["actor"]) for e in last] == [
        ("candidate", "started", None, None, "gatekeeper"), ("candidate", "done", "3", None, "gatekeeper")]
    assert "withdrawn" in last[1]["reason"] and last[1]["verdict_sha"] == strict.verdict_sha
    # recording it again changes no alias, so writes no row
    reg_versions.record_verdict(registry.model, 3, tmp_path / "v" / "verdict.json", extra_evidence=files["evidence"])
    assert len(log.events(registry.model)) == len(built) + 2


def test_champion_failing_a_re_evaluation_is_loud(registry: Registry, tmp_path: Path) -> None:
    from toolkit.gates import DEFAULT_POLICY_PATH, Evidence, evaluate, load_policy
    from toolkit.registry.cli import format_status

    promote(registry.model, 2, reason="go", actor="tester")
    files = reg_versions.download_gate_artifacts(registry.model, 2, tmp_path / "g")
    bundle = reg_versions.download_evidence(registry.model, 2, tmp_path / "b")
    strict = evaluate(Evidence.read(bundle, extras_dir=files["evidence"]), load_policy(DEFAULT_POLICY_PATH))
    assert not strict.passed
    path = tmp_path / "v" / "verdict.json"
    path.parent.mkdir()
    path.write_text(strict.to_json(), encoding="utf-8")
    reg_versions.record_verdict(registry.model, 2, path, extra_evidence=files["evidence"])
    assert _tags(registry, "2")["gate.champion_failed_reevaluation"] == "true"
    assert reg_versions.alias_version(registry.model, "champion") == "2"  # still champion, but flagged
    st = status(registry.model)
    assert len(st["warnings"]) == 1 and "champion version 2 FAILED" in st["warnings"][0]
    assert format_status(st).splitlines()[0].startswith("WARNING: champion version 2 FAILED")
    # a passing re-evaluation clears the flag
    reg_versions.record_verdict(registry.model, 2, files["verdict"], extra_evidence=files["evidence"])
    assert "gate.champion_failed_reevaluation" not in _tags(registry, "2") and status(registry.model)["warnings"] == []


def test_registry_counts_every_recorded_trial_up_to_the_version(registry: Registry) -> None:
    """v1..v3 were recorded with 4, 2 and 2 combinations; v4 re-registers v2's bundle (2 more)."""
    from toolkit.registry.versions import registry_trial_count

    sizes = [len(g["fast"]) * len(g["slow"]) for g in GRIDS.values()]
    assert [registry_trial_count(registry.model, v) for v in (1, 2, 3, 4)] == [
        sizes[0], sizes[0] + sizes[1], sum(sizes), sum(sizes) + sizes[1]]
    # v4's own bundle carries the ledger as it was at v2 (6 trials): the registry knows 10
    assert len(pd.read_parquet(registry.bundles["pass"] / "trials.parquet")) == sizes[0] + sizes[1]
