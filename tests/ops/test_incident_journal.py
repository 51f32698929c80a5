"""The incident report's data on small journals written through the runner's own ``Journal`` (real SQLite):
what the runner did (held back, cancelled, refused, flatten, rollback, halt), the PnL as a table a human can
check, and every bad input named."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from runner.journal import MIGRATIONS, Journal
from toolkit.attribution.errors import JournalError
from toolkit.cli import main
from toolkit.errors import ConfigurationError
from toolkit.ops.incident import check_incident, incident_report

H = 3_600_000
TOOLKIT = str(Path(sys.executable).with_name("toolkit"))
T0 = 1_709_251_200_000  # 2024-03-01 00:00 UTC, a Friday
DEP = "btc"


def _decision(j: Journal, bar: int, state: str, target: float = 0.5, note: str = "") -> None:
    j.record_decision({"deployment": DEP, "bar_time": bar, "decided_at": bar + H + 5_000, "decision_price": "100",
                       "direction": 1.0, "raw_target": target, "target": target, "held_before": 0.0,
                       "position_qty": "0", "model": "ma_cross.BTC-USDT.1h", "version": "1", "exec_state": state,
                       "note": note})


def _order(j: Journal, cid: str, bar: int, side: str, amount: str, purpose: str = "trade", leg: int = 0) -> None:
    j.record_intent({"client_order_id": cid, "deployment": DEP, "bar_time": bar, "leg": leg, "symbol": "BTC/USDT",
                     "side": side, "type": "market", "amount": amount, "arrival_price": "100", "intent_at": bar + H
                     + 6_000, "state": "intent", "updated_at": bar + H + 6_000, "version": "1", "purpose": purpose})


def _fill(j: Journal, tid: str, cid: str, at: int, side: str, price: str, amount: str, fee: str,
          fee_asset: str) -> None:
    j.record_fills([{"symbol": "BTC/USDT", "trade_id": tid, "exchange_order_id": tid, "client_order_id": cid,
                     "deployment": DEP, "side": side, "price": price, "amount": amount,
                     "cost": str(Decimal(price) * Decimal(amount)), "fee": fee, "fee_asset": fee_asset, "at": at,
                     "recorded_at": at}])


@pytest.fixture
def small_journal(tmp_path: Path) -> tuple[Path, int]:
    """Bars at 100, 110, 120, 90, 95, 105 (hourly from 00:00); a buy of 2 before the window, a blocking incident
    at 03:30 with decisions held back, a cancelled, a rejected and a flatten order, a rollback and a halt."""
    path = tmp_path / "journal.sqlite"
    j = Journal(path)
    closes = [100.0, 110.0, 120.0, 90.0, 95.0, 105.0]
    j.record_bars(DEP, [(T0 + k * H, c, c + 1, c - 1, c, 10.0) for k, c in enumerate(closes)])
    _decision(j, T0, "done")
    _order(j, "btc-a", T0, "buy", "2")
    j.update_order("btc-a", "closed", T0 + H + 7_000, exchange_id="1", filled=Decimal(2), average=Decimal(100))
    _fill(j, "1", "btc-a", T0 + H + 7_000, "buy", "100", "2", "0.002", "BTC")  # before the window: held at its start
    incident = j.open_incident(T0 + 3 * H + 30 * 60_000, "stale_feed", "blocking", "no closed bar for 3 bars", DEP)
    _decision(j, T0 + 3 * H, "superseded", note="a newer bar closed")    # decided 04:00:05, no order: held back
    _decision(j, T0 + 4 * H, "pending")                                  # 05:00:05, no order: held back
    _order(j, "btc-b", T0 + 2 * H, "sell", "1", leg=1)
    j.update_order("btc-b", "canceled", T0 + 4 * H, detail="cancelled by the runner")
    _order(j, "btc-c", T0 + 2 * H, "sell", "0.5", leg=2)
    j.update_order("btc-c", "rejected", T0 + 4 * H + 60_000, detail="InsufficientFunds")
    _order(j, "btc-f", T0 + 4 * H, "sell", "1.5", purpose="flatten", leg=1)
    j.update_order("btc-f", "closed", T0 + 5 * H + 1_000, exchange_id="2", filled=Decimal("1.5"))
    _fill(j, "2", "btc-f", T0 + 5 * H + 1_000, "sell", "96", "1.5", "0.144", "USDT")
    j.record_switch(T0 + 5 * H + 2_000, DEP, "ma_cross.BTC-USDT.1h", "paper", "2", "1",
                    "runner auto-rollback of deployment btc: drawdown")
    j.open_incident(T0 + 5 * H + 3_000, "rollback_refused", "halt", "flattened and halted", DEP)
    j.acknowledge_incident(incident, T0 + 4 * H, "bob")
    j.resolve_incident(incident, T0 + 5 * H + 30 * 60_000, "fresh bars again")
    j.close()
    return path, incident


def test_what_the_runner_did_and_the_pnl_by_hand(small_journal: tuple[Path, int]) -> None:
    path, incident = small_journal
    r = incident_report(path, incident, hours=1.0, capital=1000.0)
    # window 02:30 … 06:30; bars close at 01:00 … 06:00
    assert (r.window[0].isoformat(), r.window[1].isoformat()) == ("2024-03-01T02:30:00+00:00",
                                                                  "2024-03-01T06:30:00+00:00")
    a = r.actions
    assert [t.isoformat() for t in a.held_back] == ["2024-03-01T03:00:00+00:00", "2024-03-01T04:00:00+00:00"]
    assert (a.cancelled, a.refused, a.flatten) == (["btc-b"], ["btc-c"], ["btc-f"])
    assert a.rollbacks == ["v2 → v1: runner auto-rollback of deployment btc: drawdown"]
    assert len(a.halts) == 1 and "rollback_refused" in a.halts[0]
    assert r.state == "resolved"
    # held at 02:30: 2 − 0.002 = 1.998 BTC, marked at the 02:00 close (the 01:00 bar's close, 110) → the 06:00
    # close (105); the flatten sells 1.5 at 96 for 144 less a 0.144 USDT fee, marked at 105
    p = r.pnl
    assert p is not None
    assert (p.mark_start, p.mark_end) == (Decimal("110.0"), Decimal("105.0"))
    assert p.position_start == Decimal("1.998") and p.position_end == Decimal("0.498")
    assert p.carry == Decimal("1.998") * (Decimal(105) - Decimal(110))
    assert p.trading == Decimal("-1.5") * 105 + Decimal(144) - Decimal("0.144")
    assert p.fees == Decimal("0.144") and p.fills == 1
    assert p.total_bps == pytest.approx(float(p.total) / 1000.0 * 1e4)
    assert p.path["pnl"].iloc[-1] == pytest.approx(float(p.total))
    text = r.summary()
    assert text.startswith("Incident #1 stale_feed (blocking) on deployment btc opened Fri 2024-03-01 03:30 UTC, "
                           "acknowledged by bob after 30 min, resolved after 2.0 h (fresh bars again).")
    assert "held back 2 decisions, cancelled 1 order" in text


def test_the_timeline_is_ordered_and_marks_the_incident(small_journal: tuple[Path, int]) -> None:
    path, incident = small_journal
    r = incident_report(path, incident, hours=1.0, capital=1000.0)
    times = [e.at for e in r.timeline]
    assert times == sorted(times) and r.window[0] <= times[0] and times[-1] <= r.window[1]
    mine = [e.what for e in r.timeline if e.this]
    assert mine == ["#1 stale_feed opened (blocking)", "#1 stale_feed acknowledged", "#1 stale_feed resolved"]
    sources = {e.source for e in r.timeline}
    assert sources == {"bar", "decision", "order", "fill", "incident", "switch"}
    assert "fill" not in [e.source for e in r.timeline if e.at.hour < 2]  # the 01:00 fill is before the window
    frame = r.timeline_frame()
    assert list(frame.columns) == ["time (UTC)", "source", "what", "detail", "this"] and len(frame) == len(times)
    # the market context: 2024-03-01 03:30 is Friday 03:00, bucket 4·24 + 3, measured on the bundled bars
    assert (r.context.bucket, r.context.bucket_label) == (99, "Fri 03:00 UTC")
    assert r.context.unavailable is None and r.context.regime in ("low", "normal", "high")


def test_bad_input_is_named(small_journal: tuple[Path, int], tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    path, incident = small_journal
    with pytest.raises(ConfigurationError, match=r"incident: expected the id of an incident in .*journal.sqlite "
                                                 r"\(ids \[1, 2\]\), found 99"):
        incident_report(path, 99)
    with pytest.raises(ConfigurationError, match="hours: expected a window of more than 0"):
        check_incident(path, incident, hours=0)
    with pytest.raises(JournalError, match=r"journal: expected a runner journal \(an existing SQLite file\)"):
        incident_report(tmp_path / "missing.sqlite", 1)
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database at all, just notes")
    with pytest.raises(JournalError, match="journal: expected a runner journal"):
        incident_report(text, 1)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE experiments (id INTEGER)").connection.commit()
    with pytest.raises(JournalError, match=r"journal table balances: expected present \(a journal written by the"):
        incident_report(other, 1)
    old = tmp_path / "schema1.sqlite"  # a journal of the first schema: incidents had no acknowledgement yet
    sqlite3.connect(old).executescript(MIGRATIONS[0]).close()
    with pytest.raises(JournalError, match=r"incidents.acknowledged_at: expected a column of the runner's journal "
                                           r"\(schema 3\)"):
        incident_report(old, 1)
    # the installed command: the exit status reaches the process
    done = subprocess.run([TOOLKIT, "incident", "99", "--journal", str(path), "--no-report"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "error: incident: expected the id of an incident in" in done.stderr
    # through the entry point: exit codes and the JSON error naming the field
    assert main(["incident", "99", "--journal", str(path), "--no-report", "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert (err["field"], err["found"]) == ("incident", 99)
    assert main(["incident", "1", "--journal", str(other), "--no-report", "--json"]) == 3
    assert json.loads(capsys.readouterr().out)["error"]["field"] == "journal table balances"
    assert main(["incident", str(incident), "--journal", str(path), "--no-report", "--json",
                 "--capital", "1000"]) == 0
    doc = json.loads(capsys.readouterr().out)
    pnl = doc["report"]["pnl"]  # the default window (6 hours) starts flat and holds both fills
    assert doc["state"] == "resolved" and (pnl["fills"], pnl["position_start"], pnl["carry"]) == (2, "0", 0.0)
