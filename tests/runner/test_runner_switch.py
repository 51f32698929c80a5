"""Versions while running: promotion and rollback handed over at bar boundaries (a real runner process), an
alias set by hand refused, automatic rollback through the registry's audited rollback, the kill switch, the
protective stop, and ``/healthz`` + ``/metrics`` scraped over HTTP from the running process.

Real MLflow (a private sqlite copy of the promoted registry per test), real ccxt to the emulator.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_support import (
    CANARY_KEY,
    CANARY_SECRET,
    MODEL,
    PROCESS_TIMEOUT_S,
    RUNNER,
    PromotedRegistry,
    RunnerProcess,
    Venue,
    check_books,
    last_decided,
    runner_env,
    wait_for,
    write_config,
)

from runner.engine import Runner
from runner.journal import Journal
from toolkit.emulator import Emulator
from toolkit.emulator.testing import step_clock
from toolkit.exchange.errors import InvalidOrderRejected


def _events(proc: RunnerProcess, name: str) -> list[dict[str, Any]]:
    out = []
    for line in proc.logs().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)  # every line the runner writes is one JSON object
            if doc.get("event") == name:
                out.append(doc)
    return out


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _check_boundaries(journal: Path) -> list[dict[str, Any]]:
    """Assert each switch lies at a bar boundary with no order in between; return the switches."""
    j = Journal(journal)
    try:
        switches = j.switches("btc")
        decisions = j.decisions("btc")
        orders = j.orders("btc")
    finally:
        j.close()
    by_bar = {int(d["bar_time"]): d for d in decisions}
    bars = sorted(by_bar)
    assert all(b - a == 3_600_000 for a, b in itertools.pairwise(bars)), "a bar decided twice or skipped"
    orders = [o for o in orders if o["purpose"] == "trade"]
    for o in orders:  # every order belongs to the version that decided its bar
        assert o["version"] == by_bar[int(o["bar_time"])]["version"], o
    for s in switches[1:]:
        b = int(s["boundary"])
        assert b in by_bar and by_bar[b]["version"] == s["to_version"], s
        before = [d for d in decisions if int(d["bar_time"]) < b]
        assert before and before[-1]["version"] == s["from_version"], s
        assert all(int(o["intent_at"]) <= int(s["at"]) for o in orders if int(o["bar_time"]) < b), s
        assert all(int(o["intent_at"]) >= int(s["at"]) for o in orders if int(o["bar_time"]) >= b), s
    return switches


def test_promotion_rollback_and_kill_while_a_runner_process_runs(private_registry: PromotedRegistry,
                                                                 make_emulator: Callable[..., Emulator],
                                                                 tmp_path: Path) -> None:
    from toolkit.registry import adapter
    from toolkit.registry.promotion import promote, rollback

    adapter.configure()
    emu = make_emulator(api_key=CANARY_KEY, api_secret=CANARY_SECRET)
    venue = Venue(emu, CANARY_KEY, CANARY_SECRET)
    journal = tmp_path / "journal.sqlite"
    config = write_config(tmp_path / "runner.toml", emu.url, journal, poll={"alias_check_seconds": 0.05},
                          metrics={"port": 0})
    proc = RunnerProcess(config, runner_env(private_registry), tmp_path)
    try:
        wait_for(lambda: bool(_events(proc, "started")), "the runner to start", proc)
        port = _events(proc, "started")[0]["metrics_port"]
        assert isinstance(port, int) and port > 0
        for _ in range(4):
            wait_for(lambda: last_decided(journal) == venue.latest_closed(), "a decision", proc)
            step_clock(emu.url, 60)
        wait_for(lambda: last_decided(journal) == venue.latest_closed(), "a decision", proc)

        promote(MODEL, "2", "paper", reason="tests: a second version", actor="tests")
        wait_for(lambda: bool(_events(proc, "switch_pending")), "the runner to see the promotion", proc)
        j = Journal(journal)
        n_orders, n_decisions = len(j.orders()), len(j.decisions("btc"))
        cycles = json.loads(j.get_meta("heartbeat") or "{}")["cycle"]
        wait_for(lambda: json.loads(j.get_meta("heartbeat") or "{}")["cycle"] >= cycles + 5, "five more cycles", proc)
        assert (len(j.orders()), len(j.decisions("btc"))) == (n_orders, n_decisions)  # waiting for the boundary
        assert len(j.switches("btc")) == 1
        j.close()
        for _ in range(3):
            step_clock(emu.url, 60)
            wait_for(lambda: last_decided(journal) == venue.latest_closed(), "a decision", proc)
        rollback(MODEL, "paper", reason="tests: back to version 1", actor="tests")
        wait_for(lambda: len(_events(proc, "switch_pending")) >= 2, "the runner to see the rollback", proc)
        for _ in range(2):
            step_clock(emu.url, 60)
            wait_for(lambda: last_decided(journal) == venue.latest_closed(), "a decision", proc)

        status, text = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200 and json.loads(text)["status"] == "ok"
        status, text = _get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        for needle in ('runner_bars_processed_total{deployment="btc"}', "runner_decision_latency_seconds_bucket",
                       'runner_version_info{alias="paper",deployment="btc",model="' + MODEL + '",version="1"} 1.0',
                       'runner_orders{deployment="btc",purpose="trade",state="closed"}', "runner_pnl{",
                       "runner_drawdown_pct{", 'runner_reconciliation_drift{asset="USDT"} 0.0'):
            assert needle in text, needle
        assert CANARY_KEY not in text and CANARY_SECRET not in text

        kill = subprocess.run([RUNNER, "kill", "--config", str(config), "--reason", "tests: pull the switch"],
                              env=runner_env(private_registry), capture_output=True, text=True,
                              timeout=PROCESS_TIMEOUT_S)
        assert kill.returncode == 0, kill.stderr
        assert json.loads(kill.stdout)["event"] == "killed"
        assert proc.wait() == 9, proc.logs()  # flattened and halted
    finally:
        proc.kill()
    switches = _check_boundaries(journal)
    assert [(s["from_version"], s["to_version"]) for s in switches] == [(None, "1"), ("1", "2"), ("2", "1")]
    assert switches[1]["reason"].startswith("promote by tests") and switches[2]["reason"].startswith("rollback")
    figures = check_books(venue, journal)
    assert figures["orders"] >= 2 and figures["position"] * 60000 < 5  # flat (at most dust under min notional)
    j = Journal(journal)
    try:
        assert [o["purpose"] for o in j.orders()].count("flatten") >= 1
        kills = [i for i in j.incidents(open_only=True) if i["kind"] == "kill_switch"]
        assert len(kills) == 1 and kills[0]["severity"] == "halt"
    finally:
        j.close()
    # a runner started while the kill switch is open does not trade: it halts at once
    again = RunnerProcess(config, runner_env(private_registry), tmp_path, name="again")
    assert again.wait() == 9, again.logs()
    log_lines = [line for line in proc.logs().splitlines() if line.strip()]
    not_json = [line for line in log_lines if not line.startswith("{")]
    assert log_lines and len(not_json) == 1 and not_json[0].startswith("error: kill switch"), not_json
    # structured logs only, but the command's one-line error (exit 9) on stderr
    assert all(json.loads(line).get("ts", "").endswith("Z") for line in log_lines if '"level"' in line)
    for text in (proc.logs(), again.logs(), kill.stdout, kill.stderr, journal.read_bytes().decode("latin-1")):
        assert CANARY_KEY not in text and CANARY_SECRET not in text


def test_an_alias_set_by_hand_while_running_is_refused_and_the_version_kept(
        private_registry: PromotedRegistry, make_emulator: Callable[..., Emulator],
        make_runner: Callable[..., Runner]) -> None:
    from toolkit.registry import adapter

    adapter.configure()
    emu = make_emulator()
    r = make_runner(emu, poll={"alias_check_seconds": 0.001})
    r.open()
    r.cycle()
    adapter.set_alias(MODEL, "paper", "2")  # passed its gates, never promoted: "Aliases: Add" in the UI
    for _ in range(3):
        step_clock(emu.url, 60)
        r.cycle()
    assert r.journal is not None
    assert r.pending_switch == {} and r.versions["btc"].version == "1"
    assert {d["version"] for d in r.journal.decisions("btc")} == {"1"} and len(r.journal.decisions("btc")) == 4
    open_ = [i for i in r.journal.incidents(open_only=True) if i["kind"] == "alias_unaudited"]
    assert len(open_) == 1 and "set by hand" in open_[0]["message"] and "keeps trading version 1" in open_[0]["message"]
    adapter.set_alias(MODEL, "paper", "1")
    step_clock(emu.url, 60)
    r.cycle()
    assert not [i for i in r.journal.incidents(open_only=True) if i["kind"] == "alias_unaudited"]
    assert len(r.journal.switches("btc")) == 1


def test_a_running_version_whose_verdict_no_longer_holds_sends_no_new_orders(
        private_registry: PromotedRegistry, make_emulator: Callable[..., Emulator],
        make_runner: Callable[..., Runner], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.registry import adapter
    from toolkit.registry.verdicts import holder_failed_tag

    adapter.configure()
    emu = make_emulator()
    r = make_runner(emu, poll={"alias_check_seconds": 0.001})
    r.open()  # version 1 re-checks at start
    assert r.journal is not None and r.versions["btc"].version == "1"

    def invalid() -> list[dict[str, Any]]:
        assert r.journal is not None
        return [i for i in r.journal.incidents(open_only=True) if i["kind"] == "verdict_invalid"]

    # a re-evaluation failed the holder (what `toolkit gates` flags): the first decision would buy, nothing is sent
    adapter.set_version_tag(MODEL, "1", holder_failed_tag("paper"), "true")
    r.cycle()
    assert len(invalid()) == 1 and invalid()[0]["severity"] == "blocking"
    assert "failed a re-evaluation" in invalid()[0]["message"] and "toolkit rollback" in invalid()[0]["message"]
    assert r.journal.orders("btc") == [] and r.journal.last_decision("btc")["exec_state"] == "pending"  # type: ignore[index]
    adapter.delete_version_tag(MODEL, "1", holder_failed_tag("paper"))
    step_clock(emu.url, 60)
    r.cycle()  # re-checks again: resolved, the new bar's decision trades
    assert invalid() == [] and [o["purpose"] for o in r.journal.orders("btc")] == ["trade"]

    # the paper policy in force changed: the verdict was given under another policy
    from toolkit.gates.policy import policy_in_force_path

    in_force = policy_in_force_path("paper")
    changed = tmp_path / "paper_policy.yaml"
    policy = yaml.safe_load(Path(in_force).read_text())
    policy["version"] = f"{policy['version']}-changed"
    changed.write_text(yaml.safe_dump(policy, sort_keys=False))
    monkeypatch.setenv("TOOLKIT_POLICY_PAPER", str(changed))
    orders = len(r.journal.orders("btc"))
    step_clock(emu.url, 60)
    r.cycle()
    assert len(invalid()) == 1 and "policy in force" in invalid()[0]["message"]
    assert len(r.journal.orders("btc")) == orders and r.versions["btc"].version == "1"
    monkeypatch.setenv("TOOLKIT_POLICY_PAPER", str(in_force))  # the policy the verdict was given under
    step_clock(emu.url, 60)
    r.cycle()
    assert invalid() == []
    assert r.session is not None
    assert Decimal(str(r.session.fetch_balance()["BTC"]["total"])) == r.journal.position("btc", "BTC", "USDT").base


def _audit_rollbacks() -> list[dict[str, Any]]:
    from toolkit.registry.audit import AuditLog

    return [e for e in AuditLog(None).events(MODEL) if e["action"] == "rollback" and e["outcome"] == "done"]


def test_a_drawdown_beyond_the_limit_rolls_back_through_the_registry(
        private_registry: PromotedRegistry, make_emulator: Callable[..., Emulator],
        make_runner: Callable[..., Runner]) -> None:
    from toolkit.registry import adapter
    from toolkit.registry.promotion import promote

    adapter.configure()
    promote(MODEL, "2", "paper", reason="tests: a second version", actor="tests")
    emu = make_emulator()
    # the fee of the first fill alone is a drawdown beyond 0.0001 %
    r = make_runner(emu, rollback={"max_drawdown_pct": 0.0001, "action": "flatten"})
    r.open()
    assert r.versions["btc"].version == "2"
    r.cycle()  # the first decision buys
    assert r.journal is not None
    assert r.journal.position("btc", "BTC", "USDT").base > 0
    r.cycle()  # the drawdown is seen: rollback, flatten
    assert adapter.alias_version(MODEL, "paper") == "1"
    rows = _audit_rollbacks()
    assert len(rows) == 1 and rows[0]["actor"] == "runner:btc" and "drawdown" in rows[0]["reason"]
    assert rows[0]["from_version"] == "2" and rows[0]["to_version"] == "1"
    pos = r.journal.position("btc", "BTC", "USDT").base
    assert pos * 60000 < 5 and [o["purpose"] for o in r.journal.orders("btc")] == ["trade", "flatten"]
    assert [i["kind"] for i in r.journal.incidents() if i["kind"] == "auto_rollback"] == ["auto_rollback"]
    step_clock(emu.url, 60)
    r.cycle()  # the restored version takes over at the bar boundary
    assert r.versions["btc"].version == "1"
    sw = r.journal.switches("btc")
    assert [(s["from_version"], s["to_version"]) for s in sw] == [(None, "2"), ("2", "1")]
    assert "auto-rollback" in sw[-1]["reason"]
    assert r.journal.last_decision("btc")["version"] == "1"  # type: ignore[index]
    assert Decimal(str(r.session.fetch_balance()["BTC"]["total"])) == r.journal.position(  # type: ignore[union-attr]
        "btc", "BTC", "USDT").base


def test_repeated_rejections_with_nothing_to_roll_back_to_flatten_and_halt(
        private_registry: PromotedRegistry, make_emulator: Callable[..., Emulator],
        make_runner: Callable[..., Runner]) -> None:
    from toolkit.registry import adapter

    adapter.configure()
    emu = make_emulator(balances={"USDT": 50.0})  # capital 20000 on an account of 50 USDT: buys are refused
    r = make_runner(emu, rollback={"max_rejections": 2}, risk={"max_legs_per_bar": 1})
    r.open()
    assert r.journal is not None
    for _ in range(30):
        r.cycle()
        if r.journal.blocking_halt("btc"):
            break
        step_clock(emu.url, 60)
    halts = r.journal.blocking_halt("btc")
    assert len(halts) == 1 and halts[0]["kind"] == "rollback_refused"
    assert "replaced no earlier" in halts[0]["message"]
    rejected = [o for o in r.journal.orders("btc") if o["state"] == "rejected"]
    assert len(rejected) == 2 and all("insufficient" in e["detail"].lower() for e in r.journal.rows(
        "SELECT detail FROM order_events WHERE state = 'rejected'"))
    assert adapter.alias_version(MODEL, "paper") == "1"  # nothing moved
    refused = [e for e in __import__("toolkit.registry.audit", fromlist=["AuditLog"]).AuditLog(None).events(MODEL)
               if e["action"] == "rollback"]
    assert refused and refused[-1]["outcome"] == "refused" and refused[-1]["actor"] == "runner:btc"
    n = len(r.journal.decisions("btc"))
    step_clock(emu.url, 60)
    r.cycle()
    assert len(r.journal.decisions("btc")) == n  # halted: no decision, no order


def test_the_protective_stop_follows_the_position(registry_env: PromotedRegistry,
                                                  make_emulator: Callable[..., Emulator],
                                                  make_runner: Callable[..., Runner]) -> None:
    emu = make_emulator()
    r = make_runner(emu, protective_stop={"stop_pct": 5.0, "limit_pct": 6.0})
    r.open()
    assert r.journal is not None and r.session is not None
    seen = 0
    for _ in range(30):
        r.cycle()
        pos = r.journal.position("btc", "BTC", "USDT").base
        open_orders = r.session.fetch_open_orders("BTC/USDT")
        try:
            amount, _ = r.session.to_precision("BTC/USDT", pos)
        except InvalidOrderRejected:  # dust under the step size
            amount = Decimal(0)
        if amount > 0:
            assert len(open_orders) == 1, open_orders
            stop = open_orders[0]
            raw = r.session.client.fetch_order(stop.id, "BTC/USDT")
            assert raw["info"]["type"] == "STOP_LOSS_LIMIT" and stop.side == "sell" and stop.amount == amount
            row = r.journal.rows("SELECT * FROM orders WHERE client_order_id = ?", (stop.client_order_id,))[0]
            close = float(row["arrival_price"])  # the last close when it was placed
            assert row["purpose"] == "stop" and row["state"] == "open"
            assert float(raw["info"]["stopPrice"]) == pytest.approx(close * 0.95, abs=0.01)
            assert float(stop.price) == pytest.approx(close * 0.94, abs=0.01)  # type: ignore[arg-type]
            seen += 1
            if seen >= 2:
                break  # a position with its stop open
        else:
            assert open_orders == []
        step_clock(emu.url, 60)
    assert seen >= 2
    # flattening cancels the stop first (it locks the position: the sell would be refused otherwise)
    from runner import protect

    protect.flatten(r, r.cfg.deployments[0], "tests")
    stops = r.journal.orders("btc", purpose="stop")
    assert stops and all(s["state"] == "canceled" for s in stops)
    assert r.journal.orders("btc", purpose="flatten")[0]["state"] == "closed"
    r.cycle()
    assert r.session.fetch_open_orders("BTC/USDT") == []  # flat: no stop
    assert Decimal(str(r.session.fetch_balance()["BTC"]["total"])) == r.journal.position("btc", "BTC", "USDT").base


def test_a_stop_cancelled_by_hand_is_placed_again_under_a_client_id_of_its_own(
        registry_env: PromotedRegistry, make_emulator: Callable[..., Emulator],
        make_runner: Callable[..., Runner]) -> None:
    """Someone cancels the exchange-side stop; the next cycle, at the same exchange time (the emulator's clock
    does not move between steps), places another: a second client id, not the first one's again."""
    emu = make_emulator()
    r = make_runner(emu, protective_stop={"stop_pct": 5.0, "limit_pct": 6.0})
    r.open()
    assert r.journal is not None and r.session is not None
    for _ in range(30):
        r.cycle()
        if r.session.fetch_open_orders("BTC/USDT"):
            break
        step_clock(emu.url, 60)
    first = r.session.fetch_open_orders("BTC/USDT")
    assert len(first) == 1, "no position with its stop within 30 bars"
    r.session.client.cancel_order(first[0].id, "BTC/USDT")  # by hand, on the exchange
    r.cycle()
    again = r.session.fetch_open_orders("BTC/USDT")
    assert len(again) == 1 and again[0].client_order_id != first[0].client_order_id
    stops = {o["client_order_id"]: o["state"] for o in r.journal.orders("btc", purpose="stop")}
    assert stops == {first[0].client_order_id: "canceled", again[0].client_order_id: "open"}
    assert Decimal(again[0].amount) == Decimal(first[0].amount)
