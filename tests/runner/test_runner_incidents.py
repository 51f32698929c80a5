"""Incidents from the on-call's side: ``runner incidents`` lists them with their runbooks, ``runner ack`` takes one
(open -> acknowledged, still blocking), ``runner resolve`` closes it; the installed command on a real journal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from runner_support import write_config

from runner.journal import Journal

RUNNER = str(Path(sys.executable).with_name("runner"))


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RUNNER, *args], capture_output=True, text=True, timeout=120)


def test_incidents_ack_and_resolve(tmp_path: Path) -> None:
    journal = tmp_path / "journal.sqlite"
    cfg = str(write_config(tmp_path / "runner.toml", "http://127.0.0.1:9", journal))
    j = Journal(journal)
    stale = j.open_incident(1_709_251_200_000, "stale_feed", "blocking", "no closed bar for 3 bars", "btc")
    warn = j.open_incident(1_709_251_260_000, "clock_skew", "warning", "the exchange's time went back 2 s")
    j.close()

    listed = json.loads(_run("incidents", "--config", cfg, "--json").stdout)
    assert [(r["id"], r["state"]) for r in listed] == [(warn, "open"), (stale, "open")]  # newest first
    assert listed[1]["runbook"].endswith("runner/runbooks/stale_feed.md") and Path(listed[1]["runbook"]).is_file()
    assert listed[1]["at"] == "2024-03-01T00:00:00+00:00"

    done = _run("ack", "--config", cfg, str(stale), "--by", "alice")
    assert done.returncode == 0 and f"incident {stale} acknowledged by alice" in done.stdout
    again = _run("ack", "--config", cfg, str(stale))
    assert again.returncode == 2
    assert "incident: expected the id of an open incident nobody has acknowledged" in again.stderr
    text = _run("incidents", "--config", cfg).stdout
    assert f"#{stale} acknowledged (acknowledged by alice) blocking stale_feed btc" in text
    j = Journal(journal)
    assert [r["id"] for r in j.blocking("btc")] == [stale]  # acknowledged is not resolved: still no new orders
    j.close()

    assert _run("resolve", "--config", cfg, str(stale), "--note", "exchange back after maintenance").returncode == 0
    open_now = json.loads(_run("incidents", "--config", cfg, "--json").stdout)
    assert [r["id"] for r in open_now] == [warn]
    everything = {r["id"]: r for r in json.loads(_run("incidents", "--config", cfg, "--all", "--json").stdout)}
    assert everything[stale]["state"] == "resolved" and everything[stale]["acknowledged_by"] == "alice"
    assert everything[stale]["resolution"] == "operator: exchange back after maintenance"
    assert _run("ack", "--config", cfg, "999").returncode == 2
