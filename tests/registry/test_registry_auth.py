"""Who may do what on the authenticated shared registry (`toolkit registry up --auth`, the desk-auth app).

One real PostgreSQL + ``mlflow server --app-name desk-auth`` for this module, its accounts created from
the environment (fresh random passwords); a researcher records a real backtest and its gate verdicts
with their own account, then each role meets the server: the researcher is refused every alias move
(403, nothing changed, the audit trail says ``refused``), the promotion account promotes, the runner
reads and loads but writes nothing, a wrong password gets 401, and no password reaches a log.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from toolkit.registry.server import RegistryEndpoints, down, up

# one server start, a real backtest with its gates and two re-checked promotions: minutes on a loaded 2-core machine
pytestmark = pytest.mark.timeout(2400)

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
USERS = ("admin", "promotion", "researcher", "runner")


@dataclass(frozen=True)
class AuthRegistry:
    ep: RegistryEndpoints
    passwords: dict[str, str]
    state: Path


@dataclass(frozen=True)
class Researched:
    reg: AuthRegistry
    model: str
    version: str
    policies: dict[str, str]


@pytest.fixture(scope="module")
def auth_registry() -> Iterator[AuthRegistry]:
    """One authenticated registry for this module; stopped (and its folder removed) also when tests fail."""
    root = Path(tempfile.mkdtemp(prefix="toolkit-registry-auth-"))
    root.chmod(0o755)  # PostgreSQL runs as 'postgres' when the suite runs as root
    state = root / "state"
    passwords = {user: secrets.token_urlsafe(18) for user in USERS}
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": passwords["admin"],
           **{f"TOOLKIT_AUTH_{u.upper()}_PASSWORD": passwords[u] for u in USERS if u != "admin"}}
    try:
        ep = up(state, auth=True, env=env)
        yield AuthRegistry(ep=ep, passwords=passwords, state=state)
    finally:
        down(state)
        shutil.rmtree(root, ignore_errors=True)


def _as(mp: pytest.MonkeyPatch, reg: AuthRegistry, user: str | None) -> None:
    for k, v in reg.ep.env().items():
        mp.setenv(k, v)
    for k in ("TOOLKIT_ARTIFACTS", "TOOLKIT_LEDGER", "TOOLKIT_AUDIT", "MLFLOW_TRACKING_TOKEN"):
        mp.delenv(k, raising=False)
    if user is None:
        mp.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        mp.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    else:
        mp.setenv("MLFLOW_TRACKING_USERNAME", user)
        mp.setenv("MLFLOW_TRACKING_PASSWORD", reg.passwords[user])


@pytest.fixture(scope="module")
def researched(auth_registry: AuthRegistry, tmp_path_factory: pytest.TempPathFactory) -> Researched:
    """A version recorded by the researcher account (a real backtest) with passing paper and live verdicts."""
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

    root = tmp_path_factory.mktemp("auth")
    model = f"ma_cross.auth-{uuid.uuid4().hex[:8]}"
    policies = policy_env({stage: lenient_policy(root / f"{stage}.yaml", stage) for stage in STAGES})
    with pytest.MonkeyPatch.context() as mp:
        _as(mp, auth_registry, "researcher")
        for k, v in policies.items():
            mp.setenv(k, v)
        mp.setenv("TOOLKIT_REPORTS_DIR", str(root / "reports"))
        cfg = config_from_params(strategy="ma_cross", symbol="BTC/USDT", timeframe="1h", start="2023-10-01",
                                 end="2024-06-30", grid={"fast": [20], "slow": [100, 200]}, model_name=model)
        bars = bars_for(cfg)
        result = run_backtest(cfg, bars, ledger=TrialLedger(), progress=False)
        bundle = save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), root / "bundle")
        version = record_backtest(bundle).model_version
        evidence = collect_evidence(bundle, load_policy(None, stage="paper"), registry_trial_count(model, version))
        for stage in STAGES:
            out = root / "verdicts" / stage
            evidence.write(out)
            verdict = evaluate(evidence, load_policy(None, stage=stage))
            assert verdict.passed, verdict.summary()
            (out / "verdict.json").write_text(verdict.to_json(), encoding="utf-8")
            record_verdict(model, version, out / "verdict.json", extra_evidence=out)
    return Researched(reg=auth_registry, model=model, version=version, policies=policies)


def _http(reg: AuthRegistry, method: str, path: str, user: str | None, password: str | None = None,
          body: dict[str, Any] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if user is not None:
        pw = reg.passwords[user] if password is None else password
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    req = urllib.request.Request(f"{reg.ep.tracking_uri}{path}", method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _toolkit(r: Researched, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TOOLKIT_ARTIFACTS", "TOOLKIT_LEDGER", "TOOLKIT_AUDIT")}
    env.update({**r.reg.ep.env(), **r.policies, "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": r.reg.passwords[user]})
    return subprocess.run([TOOLKIT, *args], env=env, capture_output=True, text=True, timeout=300)


def _snapshot(r: Researched, mp: pytest.MonkeyPatch) -> dict[str, Any]:
    from toolkit.registry import adapter

    _as(mp, r.reg, "admin")
    return adapter.registry_snapshot(r.model)


def _no_password_in(r: Researched, *texts: str) -> None:
    for user, pw in r.reg.passwords.items():
        for text in texts:
            assert pw not in text, f"{user}'s password printed"


def test_a_wrong_or_missing_password_is_refused_with_401(auth_registry: AuthRegistry) -> None:
    path = "/api/2.0/mlflow/registered-models/search?max_results=1"
    assert _http(auth_registry, "GET", path, "researcher")[0] == 200
    assert _http(auth_registry, "GET", path, "researcher", password="not-" + auth_registry.passwords["researcher"])[0] \
        == 401
    assert _http(auth_registry, "GET", path, None)[0] == 401
    assert _http(auth_registry, "GET", path, "nobody", password="whatever")[0] == 401


def test_the_researcher_registers_but_the_server_refuses_their_alias_moves(
        researched: Researched, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient
    from toolkit.registry.audit import AuditLog

    r = researched
    before = _snapshot(r, monkeypatch)
    assert r.version in before["versions"]  # the researcher's backtest registered it
    _as(monkeypatch, r.reg, "researcher")
    with pytest.raises(MlflowException) as denied:
        MlflowClient().set_registered_model_alias(r.model, "paper", r.version)
    assert denied.value.error_code == "PERMISSION_DENIED"
    assert "user 'researcher' may not set alias 'paper'" in denied.value.message
    assert "promoters" in denied.value.message
    # the UI's route answers the same, as MLflow's error JSON
    status, text = _http(r.reg, "POST", "/ajax-api/2.0/mlflow/registered-models/alias", "researcher",
                         body={"name": r.model, "alias": "champion", "version": r.version})
    assert status == 403 and json.loads(text)["error_code"] == "PERMISSION_DENIED"
    status, text = _http(r.reg, "DELETE", "/api/2.0/mlflow/registered-models/alias", "researcher",
                         body={"name": r.model, "alias": "paper"})
    assert status == 403 and "may not delete alias 'paper'" in json.loads(text)["message"]

    # the server tells each account whether it is a promoter
    assert [json.loads(_http(r.reg, "GET", "/api/2.0/desk-auth/promoter", u)[1]) for u in USERS] == [
        {"user": u, "promoter": u in ("admin", "promotion")} for u in USERS]
    assert _http(r.reg, "GET", "/api/2.0/desk-auth/promoter", None)[0] == 401

    # `toolkit promote` by the researcher: every check of the verdict passes, then the server's answer refuses
    # it before anything is written (the alias write would be refused with 403 anyway, as above)
    p = _toolkit(r, "researcher", "promote", r.model, "--version", r.version, "--stage", "paper", "--reason",
                 "researcher tries", "--json")
    assert p.returncode == 6, p.stdout + p.stderr  # PromotionRefused
    err = json.loads(p.stdout)["error"]
    assert err["type"] == "PromotionRefused" and "account 'researcher' is not a promoter" in err["message"]
    _no_password_in(r, p.stdout, p.stderr)
    assert _snapshot(r, monkeypatch) == before  # alias unmoved, no tag written
    events = AuditLog().events(r.model)
    assert [(e["action"], e["outcome"]) for e in events[-2:]] == [("promote", "started"), ("promote", "refused")]
    assert "'researcher' is not a promoter" in events[-1]["detail"]
    assert not any(e["outcome"] == "done" and e["reason"] == "researcher tries" for e in events)


def test_the_promotion_account_promotes_and_the_researcher_cannot_undo_it(
        researched: Researched, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient
    from toolkit.registry import adapter
    from toolkit.registry.audit import AuditLog

    r = researched
    p = _toolkit(r, "promotion", "promote", r.model, "--version", r.version, "--stage", "paper", "--reason",
                 "promotion account promotes", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["to_version"] == r.version
    _no_password_in(r, p.stdout, p.stderr)
    before = _snapshot(r, monkeypatch)  # (as admin, on the server and its database)
    assert [(e["action"], e["outcome"]) for e in AuditLog().events(r.model)[-2:]] == [
        ("promote", "started"), ("promote", "done")]
    assert before["aliases"] == {"paper": r.version}
    _as(monkeypatch, r.reg, "researcher")
    client = MlflowClient()
    for attempt in (lambda: client.delete_registered_model_alias(r.model, "paper"),
                    lambda: client.delete_model_version(r.model, r.version),  # would drop its alias with it
                    lambda: client.delete_registered_model(r.model)):
        with pytest.raises(MlflowException) as denied:
            attempt()
        assert denied.value.error_code == "PERMISSION_DENIED", denied.value.message
    assert _snapshot(r, monkeypatch) == before
    assert adapter.alias_version(r.model, "paper") == r.version
    # `toolkit rollback` by the researcher: refused as not a promoter, audited, nothing written
    p = _toolkit(r, "researcher", "rollback", r.model, "--stage", "paper", "--reason", "researcher rolls back",
                 "--json")
    assert p.returncode != 0, p.stdout + p.stderr
    assert "account 'researcher' is not a promoter" in json.loads(p.stdout)["error"]["message"], p.stdout
    _no_password_in(r, p.stdout, p.stderr)
    assert _snapshot(r, monkeypatch) == before
    events = AuditLog().events(r.model)
    assert [(e["action"], e["outcome"]) for e in events[-2:]] == [("rollback", "started"), ("rollback", "refused")]


def test_the_runner_reads_and_loads_the_version_but_writes_nothing(
        researched: Researched, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    from mlflow import MlflowClient
    from toolkit.registry import adapter

    r = researched
    before = _snapshot(r, monkeypatch)
    _as(monkeypatch, r.reg, "runner")
    info = adapter.version_info(r.model, r.version)
    assert info.tags["gate.paper.verdict"] == "passed"
    model, meta = adapter.load_python_model(r.model, r.version)
    assert model is not None and meta
    client = MlflowClient()
    for attempt in (lambda: client.create_model_version(r.model, info.source, run_id=info.run_id),
                    lambda: client.set_registered_model_alias(r.model, "champion", r.version),
                    lambda: client.set_model_version_tag(r.model, r.version, "runner", "was here")):
        with pytest.raises(MlflowException) as denied:
            attempt()
        assert denied.value.get_http_status_code() == 403, denied.value.message
    assert _snapshot(r, monkeypatch) == before


def test_the_admin_may_move_an_alias_and_no_password_reaches_a_log(
        researched: Researched, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    r = researched
    _as(monkeypatch, r.reg, "admin")
    MlflowClient().set_registered_model_alias(r.model, "admin-check", r.version)
    MlflowClient().delete_registered_model_alias(r.model, "admin-check")
    files = [p for p in r.reg.state.iterdir() if p.is_file() and p.name not in ("pgpass", "flask-secret")]
    assert {"mlflow-server.log", "postgres.log", "basic_auth.ini", "state.json"} <= {p.name for p in files}
    _no_password_in(r, *(p.read_text(errors="replace") for p in files))
    ini = (r.reg.state / "basic_auth.ini").read_text()
    assert "[desk_auth]\npromoters = promotion\n" in ini
    assert oct((r.reg.state / "flask-secret").stat().st_mode & 0o777) == "0o600"
