"""The shared registry: a real PostgreSQL and a real ``mlflow server`` on loopback, reached by the environment alone.

One module builds two registered versions on the session's server (real backtests, real gates under the
lenient test policies) and runs the pipeline, the cross-process promotion race, and the guarantees of the
audit trail and ledger tables in PostgreSQL against it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from toolkit.database import Database
from toolkit.errors import ConfigurationError, RegistryError
from toolkit.registry.server import RegistryEndpoints

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
GRIDS = {"a": {"fast": [20], "slow": [100, 200]}, "b": {"fast": [15, 20], "slow": [200]}}


@dataclass(frozen=True)
class Built:
    model: str
    versions: dict[str, str]
    trials: int
    env: dict[str, str]


@pytest.fixture(scope="module")
def built(shared_registry: RegistryEndpoints, tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Two versions of a fresh model on the server, each with passing paper and live verdicts."""
    from registry_support import STAGES, lenient_policy, policy_env  # here: imported as a plugin elsewhere

    from toolkit.backtest import config_from_params, run_backtest
    from toolkit.backtest.bundle import save_bundle
    from toolkit.backtest.ledger import TrialLedger
    from toolkit.data.quality import certify
    from toolkit.gates import collect_evidence, evaluate, load_policy
    from toolkit.registry.adapter import registry_trial_count
    from toolkit.registry.record import record_backtest
    from toolkit.registry.verdicts import record_verdict
    from toolkit.reporting.views import bars_for

    root = tmp_path_factory.mktemp("shared")
    model = f"ma_cross.shared-{uuid.uuid4().hex[:8]}"
    paths = {stage: lenient_policy(root / f"{stage}.yaml", stage) for stage in STAGES}
    env = {**shared_registry.env(), **policy_env(paths), "TOOLKIT_REPORTS_DIR": str(root / "reports")}
    versions: dict[str, str] = {}
    trials = 0
    with pytest.MonkeyPatch.context() as mp:
        for k in ("TOOLKIT_ARTIFACTS", "TOOLKIT_LEDGER", "TOOLKIT_AUDIT"):
            mp.delenv(k, raising=False)
        for k, v in env.items():
            mp.setenv(k, v)
        ledger = TrialLedger()  # no path: the shared database's table
        assert type(ledger).__name__ == "PgTrialLedger"
        policies = {stage: load_policy(p, stage=stage) for stage, p in paths.items()}
        for name, grid in GRIDS.items():
            cfg = config_from_params(strategy="ma_cross", symbol="BTC/USDT", timeframe="1h", start="2023-10-01",
                                     end="2024-06-30", grid=grid, model_name=model)
            bars = bars_for(cfg)
            result = run_backtest(cfg, bars, ledger=ledger, progress=False)
            trials += len(result.sweep)
            bundle = save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), root / name)
            version = record_backtest(bundle).model_version
            evidence = collect_evidence(bundle, policies["paper"], registry_trial_count(model, version))
            for stage in STAGES:
                out = root / "verdicts" / name / stage
                evidence.write(out)
                verdict = evaluate(evidence, policies[stage])
                assert verdict.passed, verdict.summary()
                (out / "verdict.json").write_text(verdict.to_json(), encoding="utf-8")
                record_verdict(model, version, out / "verdict.json", extra_evidence=out)
            versions[name] = version
    return Built(model=model, versions=versions, trials=trials, env=env)


def _cli_env(built: Built) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOOLKIT_ARTIFACTS", "TOOLKIT_LEDGER", "TOOLKIT_AUDIT")}
    return {**env, **built.env}


def _toolkit(built: Built, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TOOLKIT, *args], env=_cli_env(built), capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # two backtests and their gates on the server: about 3 minutes on the shared 2-core machine
def test_pipeline_backtest_gates_promote_rollback_against_the_server(
        built: Built, on_shared_registry: RegistryEndpoints, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    from toolkit.backtest.ledger import TrialLedger, ledger_key
    from toolkit.registry import adapter
    from toolkit.registry.audit import AuditLog

    for k, v in built.env.items():
        monkeypatch.setenv(k, v)  # the policies in force
    a, b = built.versions["a"], built.versions["b"]
    # the versions, their runs and artifacts live on the server: artifacts proxied, not on a local path
    info = adapter.version_info(built.model, a)
    assert info.tags["gate.paper.verdict"] == "passed"
    from mlflow import MlflowClient

    assert MlflowClient().get_run(info.run_id).info.artifact_uri.startswith("mlflow-artifacts:")
    # every trial of both sweeps is in the shared ledger, once
    assert TrialLedger().count(ledger_key("ma_cross", "BTC/USDT")) >= built.trials

    # the CLI, by the environment alone: promote a, then b, to paper; roll back to a
    for version in (a, b):
        p = _toolkit(built, "promote", built.model, "--version", version, "--stage", "paper", "--reason",
                     "shared-registry pipeline test", "--json")
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["to_version"] == version
    r = _toolkit(built, "rollback", built.model, "--stage", "paper", "--reason", "pipeline rollback", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["to_version"] == a
    assert adapter.alias_version(built.model, "paper") == a
    st = _toolkit(built, "status", built.model, "--json")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["paper"]["version"] == a
    assert status["audit_path"].startswith("postgresql://toolkit@127.0.0.1:") and "table toolkit.audit" in \
        status["audit_path"]
    assert status["audit_chain"].startswith("ok")
    events = AuditLog().events(built.model)
    assert [(e["action"], e["outcome"]) for e in events] == [
        ("promote", "started"), ("promote", "done"), ("promote", "started"), ("promote", "done"),
        ("rollback", "started"), ("rollback", "done")]

    # the runner trades models:/<model>@paper from the server (found by MLFLOW_TRACKING_URI alone, its audited
    # rollback read from the shared audit table), then attribution records its paper record on the server
    from runner.demo import paper_trade
    from toolkit.workflows.attribution import run_attribution_workflow

    for k in ("TOOLKIT_ARTIFACTS", "TOOLKIT_LEDGER", "TOOLKIT_AUDIT"):
        monkeypatch.delenv(k, raising=False)
    work = tmp_path / "paper"
    work.mkdir()
    stretch = paper_trade(built.model, work, hours=24, echo=None)
    assert stretch.decisions == 25 and stretch.open_incidents == 0
    run = run_attribution_workflow(built.model, stretch.journal, report=False)
    assert run.version == a and run.stage == "paper"
    tags = adapter.version_info(built.model, a).tags
    assert tags["attribution.paper.verdict"] == run.verdict and tags["attribution.paper.run_id"] == run.run_id
    assert MlflowClient().get_run(run.run_id).info.artifact_uri.startswith("mlflow-artifacts:")


@pytest.mark.slow  # uses the two versions built for the pipeline test; four real toolkit processes
def test_concurrent_promote_and_rollback_from_separate_processes(built: Built,
                                                                 on_shared_registry: RegistryEndpoints) -> None:
    """Real processes race on one model and stage: the advisory lock serialises them; the audit tells one story."""
    from toolkit.registry import adapter
    from toolkit.registry.audit import AuditLog

    a, b = built.versions["a"], built.versions["b"]
    before = len(AuditLog().events(built.model))
    holder = adapter.alias_version(built.model, "paper")
    cmds = [["promote", built.model, "--version", b, "--stage", "paper", "--reason", "race promote 1"],
            ["rollback", built.model, "--stage", "paper", "--reason", "race rollback 1"],
            ["promote", built.model, "--version", a, "--stage", "paper", "--reason", "race promote 2"],
            ["rollback", built.model, "--stage", "paper", "--reason", "race rollback 2"]]
    env = _cli_env(built)
    procs = [subprocess.Popen([TOOLKIT, *c, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for c in cmds]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert set(codes) <= {0, 6}, list(zip(codes, [o[1] for o in outs], strict=True))  # done or refused, no error
    assert 0 in codes
    rows = AuditLog().events(built.model)[before:]
    assert len(rows) == 2 * len(cmds)  # every attempt: started + one outcome
    assert sorted(r["outcome"] for r in rows if r["outcome"] != "started") == sorted(
        "done" if c == 0 else "refused" for c in codes)
    # the done rows, in audit order, chain: each moves the alias from where the previous one left it
    for r in (r for r in rows if r["outcome"] == "done"):
        assert r["from_version"] == holder, rows
        holder = r["to_version"]
    assert adapter.alias_version(built.model, "paper") == holder
    assert AuditLog().verify() >= len(rows)


def _some_audit_rows() -> str:
    from toolkit.clock import SYSTEM_CLOCK
    from toolkit.registry.audit import AuditAttempt, AuditEvent, AuditLog

    model = f"audit-test-{uuid.uuid4().hex[:8]}"
    attempt = AuditAttempt(AuditLog(), model, "promote", "paper", "tester", "audit table test", SYSTEM_CLOCK, "1")
    attempt.append(AuditEvent(model=model, action="promote", outcome="refused", actor="tester", stage="paper",
                              at=SYSTEM_CLOCK.now().isoformat(), reason="audit table test", to_version="1"))
    return model


def test_audit_rows_chain_across_processes_and_hosts_alike(on_shared_registry: RegistryEndpoints) -> None:
    from toolkit.registry.audit import AuditLog

    model = _some_audit_rows()
    rows = AuditLog().events(model)
    assert [r["outcome"] for r in rows] == ["started", "refused"]
    assert rows[1]["prev_sha"] == rows[0]["sha"] or AuditLog().verify() >= 2  # other writers may interleave
    assert AuditLog().verify() >= 2


def test_audit_and_ledger_tables_refuse_updates_and_deletes(on_shared_registry: RegistryEndpoints) -> None:
    _some_audit_rows()
    db = Database()
    for table in ("toolkit.audit", "toolkit.trials"):
        for stmt in (f"UPDATE {table} SET backtest_id = 'x'" if table == "toolkit.trials" else
                     f"UPDATE {table} SET reason = 'edited'", f"DELETE FROM {table}", f"TRUNCATE {table}"):
            with pytest.raises(RegistryError, match=r"append-only|permission denied"):
                db.execute_script("tampering", [stmt])


def test_verify_detects_an_edit_made_by_the_database_owner(on_shared_registry: RegistryEndpoints) -> None:
    """The owner can switch the trigger off; the hash chain still gives the edit away."""
    from toolkit.registry.audit import AuditLog

    model = _some_audit_rows()
    log = AuditLog()
    assert log.verify() > 0
    admin = Database(f"postgresql://desk_admin@127.0.0.1:{on_shared_registry.pg_port}/desk")
    seq = log.events(model)[-1]["seq"]
    with pytest.raises(RegistryError, match=r"toolkit\.audit is append-only: UPDATE refused"):  # the trigger
        admin.execute_script("editing a row as the owner", [f"UPDATE toolkit.audit SET reason = 'x' WHERE seq = {seq}"])
    try:
        admin.execute_script("editing a row as the owner", [
            "ALTER TABLE toolkit.audit DISABLE TRIGGER audit_append_only",
            f"UPDATE toolkit.audit SET reason = reason || ' (edited)' WHERE seq = {int(seq)}",
            "ALTER TABLE toolkit.audit ENABLE TRIGGER audit_append_only"])
        with pytest.raises(RegistryError, match=f"row {seq} .*hash chain"):
            log.verify()
    finally:
        admin.execute_script("undoing the edit", [
            "ALTER TABLE toolkit.audit DISABLE TRIGGER audit_append_only",
            f"UPDATE toolkit.audit SET reason = replace(reason, ' (edited)', '') WHERE seq = {int(seq)}",
            "ALTER TABLE toolkit.audit ENABLE TRIGGER audit_append_only"])
    assert log.verify() > 0


def test_a_shared_server_without_a_shared_database_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                              on_shared_registry: RegistryEndpoints) -> None:
    from toolkit.backtest.ledger import TrialLedger
    from toolkit.registry.audit import AuditLog

    monkeypatch.delenv("TOOLKIT_DATABASE_URL")
    for make in (TrialLedger, AuditLog):
        with pytest.raises(ConfigurationError) as err:
            make()
        assert err.value.field == "TOOLKIT_DATABASE_URL" and "private copy" in err.value.expected
    monkeypatch.setenv("TOOLKIT_DATABASE_URL", "mysql://x@h/db")
    with pytest.raises(ConfigurationError, match="TOOLKIT_DATABASE_URL: expected postgresql://"):
        AuditLog()
    monkeypatch.setenv("TOOLKIT_DATABASE_URL", f"postgresql://toolkit:s3cret@127.0.0.1:{_closed_port()}/desk")
    with pytest.raises(RegistryError) as unreachable:
        AuditLog()
    assert "s3cret" not in str(unreachable.value) and "toolkit:***@" in str(unreachable.value)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
