"""The registry CLI (promote, rollback, status, gates) and the papermill gate report, on a real sqlite store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from registry_support import TOOLKIT, Registry, audit_trail, run_cli, version_tags

from toolkit.errors import PromotionRefused
from toolkit.registry import adapter
from toolkit.registry.promotion import promote

pytest_plugins = ["registry_support"]  # the session registry fixtures (see registry_support)

# ----------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_status_json(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    m = registry.model
    code, out, err = run_cli(["promote", m, "--version", "1", "--reason", "x", "--json"], capsys)
    error = json.loads(out)["error"]  # a script reading stdout gets a JSON error object
    assert code == 6 and error["type"] == "PromotionRefused" and error["exit_code"] == 6
    assert "verdict passed" in error["message"] and "verdict passed" in err
    code, _, err = run_cli(["promote", m, "--version", "9", "--reason", "x"], capsys)
    assert code == 2 and "version" in err
    code, _, err = run_cli(["status", "no.such.model"], capsys)
    assert code == 2 and "model" in err
    code, _, err = run_cli(["rollback", m, "--reason", "x"], capsys)
    assert code == 6 and "no champion" in err
    code, out, _ = run_cli(["promote", m, "--version", "2", "--reason", "go", "--actor", "dana"], capsys)
    assert code == 0 and "champion - -> 2 by dana" in out

    code, out, _ = run_cli(["status", m, "--json"], capsys)
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

    code, out, _ = run_cli(["status", m], capsys)
    assert code == 0 and "champion 2" in out and "dana" in out


def test_verdict_under_a_what_if_policy_is_not_promotable(registry: Registry, tmp_path: Path) -> None:
    """Version 2 passed under the lenient policy; with the shipped policy in force it is refused,
    and ``toolkit promote`` has no ``--policy`` to choose another (a real subprocess each)."""
    env = {k: v for k, v in registry.env.items() if k != "TOOLKIT_POLICY"}
    base = [TOOLKIT, "promote", registry.model, "--version", "2", "--reason", "what-if", "--actor", "tester"]
    before = adapter.registry_snapshot(registry.model)
    refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 6, refused.stderr
    assert "current policy:" in refused.stderr
    forced = subprocess.run([*base, "--policy", str(registry.policy)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert forced.returncode == 2 and "--policy" in forced.stderr
    assert adapter.registry_snapshot(registry.model) == before
    events = audit_trail(registry)
    assert [(e["outcome"], e["to_version"]) for e in events] == [("started", "2"), ("refused", "2")]
    assert "policy in force: desk-default version 2026.11.1" in events[1]["detail"]


def test_cli_usage_error_exits_2(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["promote", registry.model, "--version", "2"], capsys)  # --reason is required
    assert code == 2 and "reason" in err


# ----------------------------------------------------------------------------- the gate report (papermill)


def _gates_runs(model: str) -> int:
    from mlflow import MlflowClient

    exp = MlflowClient().get_experiment_by_name("gates")
    return len(MlflowClient().search_runs([exp.experiment_id], filter_string=f"tags.model = '{model}'")) if exp else 0


def test_what_if_policy_changes_nothing_in_the_registry(registry: Registry, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``toolkit gates --policy P`` under another policy than the one in force only reports."""
    m = registry.model
    monkeypatch.delenv("TOOLKIT_POLICY")  # the shipped policy is in force; the lenient one is asked for
    before, runs = adapter.registry_snapshot(m), _gates_runs(m)
    code, out, err = run_cli(["gates", m, "--version", "4", "--policy", str(registry.policy), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] is True  # it passes the lenient policy ...
    assert result["recorded"] is False and result["run_id"] is None and result["candidate"] is False
    assert adapter.registry_snapshot(m) == before and _gates_runs(m) == runs  # ... and changes nothing
    assert "whatif" in Path(result["report_path"]).name and Path(result["report_path"]).is_file()
    entry = json.loads((registry.root / "reports" / "index.jsonl").read_text().splitlines()[-1])
    assert "what-if" in entry["kind"] and entry["run_id"] is None
    code, _, err = run_cli(["promote", m, "--version", "4", "--reason", "what-if verdict"], capsys)
    assert code == 6 and "evaluated" in err  # still never evaluated as far as the registry knows


def test_gates_report_end_to_end_then_promote(registry: Registry, capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    """Under the policy in force (``TOOLKIT_POLICY``, the lenient one here) the verdict is recorded and promotable."""
    from toolkit.gates import Evidence, evaluate, load_policy

    m = registry.model
    runs = _gates_runs(m)
    code, out, err = run_cli(["gates", m, "--version", "4", "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] is True and result["candidate"] is True and result["recorded"] is True
    assert _gates_runs(m) == runs + 1
    assert adapter.alias_version(m, "candidate") == "4"
    tags = version_tags(registry, "4")
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
    files = adapter.download_gate_artifacts(m, 4, tmp_path / "g")
    bundle = adapter.download_evidence(m, 4, tmp_path / "b")
    again = evaluate(Evidence.read(bundle, extras_dir=files.evidence), load_policy(registry.policy))
    assert again.to_json().encode() == files.verdict.read_bytes()
    # DSR's N is the registry's count (10), not the 6 trials in v4's bundle ledger
    dsr = next(g for g in json.loads(files.verdict.read_text())["gates"] if g["name"] == "dsr")
    assert dsr["inputs"]["n_trials"] == dsr["inputs"]["n_trials_registry"] == 10
    assert dsr["inputs"]["n_trials_ledger"] == 6

    done = promote(m, 4, reason="passed the gates", actor="erin")
    assert done["to_version"] == "4" and adapter.model_aliases(m) == {"champion": "4"}


def test_gates_report_refuses_altered_evidence_before_any_kernel(registry: Registry) -> None:
    from toolkit.errors import RegistryError
    from toolkit.workflows.gates import run_gates_workflow

    run = adapter.version_info(registry.model, 4).run_id
    (registry.artifacts_of(run) / "evidence" / "trades.parquet").write_bytes(b"not parquet")
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(RegistryError, match="altered evidence"):
        run_gates_workflow(registry.model, 4)
    assert adapter.registry_snapshot(registry.model) == before
    assert not (registry.root / "reports" / "gates").exists()


def test_gates_failing_under_the_shipped_policy_exits_5_and_drops_candidate(
        registry: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_POLICY")  # the shipped policy is in force
    m = registry.model
    assert adapter.alias_version(m, "candidate") == "3"
    code, out, err = run_cli(["gates", m, "--version", "3", "--json"], capsys)  # the shipped, stricter policy
    assert code == 5 and "failed the gates" in err
    result = json.loads(out)
    assert result["passed"] is False and result["failed"]
    assert set(result["failed"]) == {g["name"] for g in result["gates"] if not g["passed"]}
    tags = version_tags(registry, "3")
    assert tags["gate.verdict"] == "failed" and tags["gate.run_id"] == result["run_id"]
    assert adapter.alias_version(m, "candidate") is None  # a failed re-evaluation withdraws it
    entry = json.loads((registry.root / "reports" / "index.jsonl").read_text().splitlines()[-1])
    assert entry["status"] == "failed" and all(name in entry["summary"] for name in result["failed"])
    with pytest.raises(PromotionRefused, match="verdict passed"):
        promote(m, 3, reason="it passed last week", actor="tester")
