"""The registry CLI (promote, rollback, status, gates) and the papermill gate report, on a real sqlite store."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from registry_support import TOOLKIT, Registry, audit_trail, run_cli, version_tags

from toolkit.errors import PromotionRefused
from toolkit.gates.checks import GATE_NAMES
from toolkit.registry import adapter
from toolkit.registry.promotion import promote
from toolkit.registry.status import status

pytest_plugins = ["registry_support"]  # the session registry fixtures (see registry_support)

# ----------------------------------------------------------------------------- CLI


def test_cli_exit_codes_and_status_json(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    m = registry.model
    code, out, err = run_cli(["promote", m, "--version", "1", "--stage", "paper", "--reason", "x", "--json"], capsys)
    error = json.loads(out)["error"]  # a script reading stdout gets a JSON error object
    assert code == 6 and error["type"] == "PromotionRefused" and error["exit_code"] == 6
    assert "verdict passed" in error["message"] and "verdict passed" in err
    code, _, err = run_cli(["promote", m, "--version", "9", "--stage", "paper", "--reason", "x"], capsys)
    assert code == 2 and "version" in err
    code, out, _ = run_cli(["promote", m, "--version", "2", "--stage", "champion", "--reason", "x", "--json"], capsys)
    assert code == 2 and json.loads(out)["error"]["field"] == "stage"
    code, _, err = run_cli(["promote", m, "--version", "2", "--reason", "x"], capsys)  # --stage is required
    assert code == 2 and "stage" in err
    code, _, err = run_cli(["status", "no.such.model"], capsys)
    assert code == 2 and "model" in err
    code, _, err = run_cli(["rollback", m, "--stage", "live", "--reason", "x"], capsys)
    assert code == 6 and "no champion" in err
    code, out, err = run_cli(["promote", m, "--version", "2", "--stage", "live", "--reason", "x"], capsys)
    assert code == 6 and "paper first" in err
    code, out, _ = run_cli(["promote", m, "--version", "2", "--stage", "paper", "--reason", "go", "--actor", "dana"],
                           capsys)
    assert code == 0 and "paper - -> 2 by dana" in out, out
    code, out, _ = run_cli(["promote", m, "--version", "2", "--stage", "live", "--reason", "go", "--actor", "erin"],
                           capsys)
    assert code == 0 and "champion - -> 2 by erin" in out, out

    code, out, _ = run_cli(["status", m, "--json"], capsys)
    assert code == 0
    st = json.loads(out)
    assert set(st) == {"model", "aliases", "paper", "champion", "latest_verdicts", "live", "versions", "metrics",
                       "audit", "audit_path", "audit_chain", "warnings"}
    assert st["aliases"] == {"paper": "2", "champion": "2"}
    assert (st["paper"]["version"], st["paper"]["promoted_by"]) == ("2", "dana")
    assert (st["champion"]["version"], st["champion"]["promoted_by"]) == ("2", "erin")
    assert st["champion"]["promoted_at"] >= st["paper"]["promoted_at"]
    assert set(st["latest_verdicts"]) == {"paper", "live"}
    assert st["latest_verdicts"]["live"]["version"] == "3" and st["latest_verdicts"]["live"]["verdict"] == "passed"
    assert [v["version"] for v in st["versions"]] == ["1", "2", "3", "4"]
    v1, v2, v3, v4 = st["versions"]
    assert v2["gate"]["paper"]["verdict"] == v2["gate"]["live"]["verdict"] == "passed"
    assert v2["promotion"]["live"]["promoted_by"] == "erin" and v2["live_blockers"] == []
    assert v3["live_blockers"] == ["never traded on paper: promote it to paper first"]
    assert v4["live_blockers"] == ["never traded on paper: promote it to paper first",
                                   "not evaluated under the live policy yet"]
    gate, _, why = v1["live_blockers"][1].partition(": ")
    assert gate in GATE_NAMES and why  # a failed gate's name and its own explanation
    assert st["live"] == {"version": "2", "eligible": True, "why_not": []}
    assert st["metrics"]["paper"]["promotions"] == st["metrics"]["live"]["promotions"] == 1
    assert st["audit_chain"].startswith("ok")
    assert [(e["stage"], e["outcome"], e["actor"]) for e in st["audit"]][-2:] == [("live", "started", "erin"),
                                                                                    ("live", "done", "erin")]

    code, out, _ = run_cli(["status", m], capsys)
    assert code == 0 and "paper: version 2 since" in out and "champion: version 2 since" in out
    assert "dana" in out and "erin" in out and "latest live verdict: version 3 passed" in out


def test_status_says_why_a_version_is_not_eligible_for_live(registry: Registry, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Under the shipped live policy no version can go live today: the paper record is missing."""
    monkeypatch.delenv("TOOLKIT_POLICY_LIVE")  # the shipped live policy is in force
    promote(registry.model, 2, "paper", reason="paper", actor="tester")
    code, out, err = run_cli(["gates", registry.model, "--version", "2", "--stage", "live", "--json"], capsys)
    assert code == 5, err
    result = json.loads(out)
    assert "paper_record" in result["failed"]
    paper_record = next(g for g in result["gates"] if g["name"] == "paper_record")
    assert paper_record["enforced"] is True and paper_record["passed"] is False
    st = status(registry.model)
    assert st["live"]["version"] == "2" and st["live"]["eligible"] is False
    assert any("no paper record yet" in why for why in st["live"]["why_not"])
    code, out, _ = run_cli(["status", registry.model], capsys)
    assert "live: version 2 is not eligible for live:" in out and "no paper record yet" in out
    with pytest.raises(PromotionRefused, match="no paper record yet"):
        promote(registry.model, 2, "live", reason="too early", actor="tester")


@pytest.mark.slow  # make test keeps the what-if end to end (test_what_if_policy_changes_nothing_in_the_registry)
def test_verdict_under_a_what_if_policy_is_not_promotable(registry: Registry, tmp_path: Path) -> None:
    """Version 2 passed under the lenient policy; with the shipped paper policy in force it is refused,
    and ``toolkit promote`` has no ``--policy`` to choose another (a real subprocess each)."""
    env = {k: v for k, v in registry.env.items() if not k.startswith("TOOLKIT_POLICY")}
    base = [TOOLKIT, "promote", registry.model, "--version", "2", "--stage", "paper", "--reason", "what-if",
            "--actor", "tester"]
    before = adapter.registry_snapshot(registry.model)
    refused = subprocess.run(base, env=env, capture_output=True, text=True, timeout=180)
    assert refused.returncode == 6, refused.stderr
    assert "current policy:" in refused.stderr
    forced = subprocess.run([*base, "--policy", str(registry.policies["paper"])], env=env, capture_output=True,
                            text=True, timeout=180)
    assert forced.returncode == 2 and "--policy" in forced.stderr
    assert adapter.registry_snapshot(registry.model) == before
    events = audit_trail(registry)
    assert [(e["stage"], e["outcome"], e["to_version"]) for e in events] == [("paper", "started", "2"),
                                                                             ("paper", "refused", "2")]
    assert "paper policy in force: desk-paper version 2026.11.3" in events[1]["detail"]


def test_cli_usage_error_exits_2(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["promote", registry.model, "--version", "2", "--stage", "paper"], capsys)  # no --reason
    assert code == 2 and "reason" in err


# ----------------------------------------------------------------------------- the gate report (papermill)


def _gates_runs(model: str) -> int:
    from mlflow import MlflowClient

    exp = MlflowClient().get_experiment_by_name("gates")
    return len(MlflowClient().search_runs([exp.experiment_id], filter_string=f"tags.model = '{model}'")) if exp else 0


def test_what_if_policy_changes_nothing_in_the_registry(registry: Registry, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """``toolkit gates --policy P`` under another policy than the stage's one in force only reports."""
    m = registry.model
    monkeypatch.delenv("TOOLKIT_POLICY_PAPER")  # the shipped policy is in force; the lenient one is asked for
    before, runs = adapter.registry_snapshot(m), _gates_runs(m)
    code, out, err = run_cli(["gates", m, "--version", "4", "--stage", "paper", "--policy",
                              str(registry.policies["paper"]), "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] is True and result["stage"] == "paper"  # it passes the lenient policy ...
    assert result["recorded"] is False and result["run_id"] is None
    assert adapter.registry_snapshot(m) == before and _gates_runs(m) == runs  # ... and changes nothing
    assert "whatif" in Path(result["report_path"]).name and Path(result["report_path"]).is_file()
    entry = json.loads((registry.root / "reports" / "index.jsonl").read_text().splitlines()[-1])
    assert "what-if" in entry["kind"] and entry["run_id"] is None
    code, _, err = run_cli(["promote", m, "--version", "4", "--stage", "paper", "--reason", "what-if verdict"],
                           capsys)
    assert code == 6 and "evaluated" in err  # still never evaluated as far as the registry knows
    # a live policy cannot judge the paper stage
    code, out, _ = run_cli(["gates", m, "--version", "4", "--stage", "paper", "--policy",
                            str(registry.policies["live"]), "--json"], capsys)
    assert code == 2 and json.loads(out)["error"]["field"] == "policy.stage"
    assert adapter.registry_snapshot(m) == before


def _latency(run_dir: Path) -> dict[str, object]:
    return json.loads((run_dir / "evidence" / "gate_evidence.json").read_text())["latency"]  # type: ignore[no-any-return]


def test_gates_per_stage_end_to_end_latency_measured_once_then_promote(
        registry: Registry, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Paper gates twice (byte-identical verdicts: the latency is measured once), live gates (the same
    samples), then paper and live promotion, under the policies in force (the lenient ones here)."""
    from toolkit.gates import Evidence, evaluate, load_policy
    from toolkit.gates.checks import GATE_NAMES

    m = registry.model
    runs = _gates_runs(m)
    code, out, err = run_cli(["gates", m, "--version", "4", "--stage", "paper", "--json"], capsys)
    assert code == 0, err
    first = json.loads(out)
    assert first["passed"] is True and first["recorded"] is True and first["stage"] == "paper"
    assert first["latency_reused_from"] is None  # v4 was never evaluated: measured now
    assert [g["name"] for g in first["gates"]] == list(GATE_NAMES)  # every gate, advisory ones included
    assert all({"name", "category", "passed", "enforced"} <= set(g) for g in first["gates"])
    advisory = {g["name"] for g in first["gates"] if not g["enforced"]}
    assert advisory == set(load_policy(registry.policies["paper"]).advisory)
    assert set(first["advisory_failed"]) <= advisory and "paper_record" in first["advisory_failed"]
    assert _gates_runs(m) == runs + 1 and adapter.model_aliases(m) == {}
    tags = version_tags(registry, "4")
    assert tags["gate.paper.verdict"] == "passed" and tags["gate.paper.run_id"] == first["run_id"]
    assert tags["gate.paper.verdict_sha"] == first["verdict_sha"] and tags["gate.live.verdict"] == "not_evaluated"
    run_dir = registry.artifacts_of(first["run_id"])
    assert (run_dir / "verdict" / "verdict.json").is_file()
    assert list((run_dir / "report").glob("*.html")) and list((run_dir / "notebook").glob("*.ipynb"))
    html = Path(first["report_path"]).read_text()
    assert "latency" in html.lower() and "from toolkit" not in html  # rendered without the code cells
    assert "Advisory" in html and "paper_record" in html
    assert json.loads((registry.root / "reports" / "index.jsonl").read_text().splitlines()[-1])["kind"] == "paper gates"

    code, out, err = run_cli(["gates", m, "--version", "4", "--stage", "paper", "--json"], capsys)
    assert code == 0, err
    second = json.loads(out)
    assert second["latency_reused_from"] == first["run_id"] and second["run_id"] != first["run_id"]
    again_dir = registry.artifacts_of(second["run_id"])
    assert (again_dir / "verdict" / "verdict.json").read_bytes() == (run_dir / "verdict" / "verdict.json").read_bytes()
    assert second["verdict_sha"] == first["verdict_sha"]

    code, out, err = run_cli(["gates", m, "--version", "4", "--stage", "live", "--json"], capsys)
    assert code == 0, err
    live = json.loads(out)
    assert live["stage"] == "live" and live["latency_reused_from"] == second["run_id"]
    assert _latency(registry.artifacts_of(live["run_id"])) == _latency(run_dir)  # the same samples, host and all
    tags = version_tags(registry, "4")
    assert tags["gate.paper.verdict_sha"] == first["verdict_sha"] and tags["gate.live.verdict_sha"] == live[
        "verdict_sha"]
    # the recorded evidence re-evaluates to the same bytes
    files = adapter.download_gate_artifacts(m, 4, tmp_path / "g", "live")
    bundle = adapter.download_evidence(m, 4, tmp_path / "b")
    again = evaluate(Evidence.read(bundle, extras_dir=files.evidence), load_policy(registry.policies["live"]))
    assert again.to_json().encode() == files.verdict.read_bytes()
    # DSR's N is the registry's count (10), not the 6 trials in v4's bundle ledger
    dsr = next(g for g in json.loads(files.verdict.read_text())["gates"] if g["name"] == "dsr")
    assert dsr["inputs"]["n_trials"] == dsr["inputs"]["n_trials_registry"] == 10
    assert dsr["inputs"]["n_trials_ledger"] == 6

    with pytest.raises(PromotionRefused, match="paper first"):
        promote(m, 4, "live", reason="skip paper", actor="erin")
    promote(m, 4, "paper", reason="passed the paper gates", actor="erin")
    done = promote(m, 4, "live", reason="passed the live gates", actor="erin")
    assert done["to_version"] == "4" and adapter.model_aliases(m) == {"paper": "4", "champion": "4"}
    assert all(c["passed"] for c in done["checks"]) and "measured evidence" in {c["check"] for c in done["checks"]}


@pytest.mark.slow  # make test keeps latency measured once (the per-stage end-to-end test)
def test_changed_latency_settings_measure_latency_again(registry: Registry, capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    """A what-if policy with other latency settings cannot reuse the recorded samples."""
    import yaml

    d = yaml.safe_load(registry.policies["paper"].read_text())
    d["latency"]["min_samples"] = 1100
    other = tmp_path / "latency.yaml"
    other.write_text(yaml.safe_dump(d))
    code, out, err = run_cli(["gates", registry.model, "--version", "2", "--stage", "paper", "--policy", str(other),
                              "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["recorded"] is False and result["latency_reused_from"] is None
    latency = next(g for g in result["gates"] if g["name"] == "latency")
    assert latency["passed"] is True


def test_gates_report_refuses_altered_evidence_before_any_cell_runs(registry: Registry) -> None:
    """The template's kernel starts while the evidence is checked; it is stopped, no notebook is written."""
    from toolkit.errors import RegistryError
    from toolkit.workflows.gates import run_gates_workflow

    run = adapter.version_info(registry.model, 4).run_id
    (registry.artifacts_of(run) / "evidence" / "trades.parquet").write_bytes(b"not parquet")
    before = adapter.registry_snapshot(registry.model)
    with pytest.raises(RegistryError, match="altered evidence"):
        run_gates_workflow(registry.model, 4, "paper")
    assert adapter.registry_snapshot(registry.model) == before
    assert not (registry.root / "reports" / "gates").exists()


def test_gates_failing_under_the_shipped_policy_exits_5(
        registry: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_POLICY_PAPER")  # the shipped paper policy is in force
    m = registry.model
    code, out, err = run_cli(["gates", m, "--version", "1", "--stage", "paper", "--json"], capsys)
    assert code == 5 and "failed the paper gates" in err
    result = json.loads(out)
    assert result["passed"] is False and result["failed"]
    assert result["failed"] == [g["name"] for g in result["gates"] if not g["passed"] and g["enforced"]]
    tags = version_tags(registry, "1")
    assert tags["gate.paper.verdict"] == "failed" and tags["gate.paper.run_id"] == result["run_id"]
    assert tags["gate.paper.failed"] == ",".join(result["failed"])
    assert tags["gate.live.verdict"] == "failed"  # the live verdict recorded earlier is untouched
    entry = json.loads((registry.root / "reports" / "index.jsonl").read_text().splitlines()[-1])
    assert entry["status"] == "failed" and all(name in entry["summary"] for name in result["failed"])
    with pytest.raises(PromotionRefused, match="verdict passed"):
        promote(m, 1, "paper", reason="it passed last week", actor="tester")
