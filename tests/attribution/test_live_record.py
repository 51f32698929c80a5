"""Attribution of real paper records: the real runner against the emulator over 72 replayed hours of real bars.

The same version backtested over the same bars explains the live PnL to a residual of rounding; a planted
extra slippage (the emulator quoting a 25 bps half-spread) is recovered and called "execution worse than
modelled"; the unchanged record is "not enough data yet" (three days against a MinTRL of months) or "edge
intact", never a false alarm; the result is recorded in MLflow and read by the live stage's paper_record gate.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from runner_support import CANARY_KEY, CANARY_SECRET, MODEL

TOOLKIT = str(Path(sys.executable).with_name("toolkit"))


@pytest.fixture
def attributed(private_store: dict[str, str], paper_journals: dict[str, Path]) -> dict[str, object]:
    from toolkit.workflows.attribution import load_attribution

    return {name: load_attribution(MODEL, path) for name, path in paper_journals.items()}


def test_live_pnl_is_explained_by_the_same_version_backtested(attributed: dict[str, object]) -> None:
    att = attributed["plain"]
    t = att.pnl.totals  # type: ignore[attr-defined]
    assert len(att.orders) >= 3 and att.pnl.frame["q_live"].abs().max() > 0  # type: ignore[attr-defined]
    # the identity holds: the split adds up to the gap measured from the two equities, to rounding
    assert abs(t["residual"]) < 1e-6 * att.pnl.capital  # type: ignore[attr-defined]
    assert t["gap"] == pytest.approx(t["live"] - t["backtest"])
    # the live version decided exactly as its backtest: holdings differ only by rounding dust and fees in BTC
    reasons = att.pnl.reasons  # type: ignore[attr-defined]
    assert reasons.loc["target differs", "bars"] == 0 and reasons.loc["version switch", "bars"] == 0
    frame = att.pnl.frame  # type: ignore[attr-defined]
    assert (frame["target_live"] - frame["target_backtest"]).abs().max() < 1e-12
    assert abs(t["signal"]) < 0.05 * abs(t["execution"]) + 1.0


def test_a_planted_extra_slippage_is_recovered(attributed: dict[str, object]) -> None:
    plain, wide = attributed["plain"], attributed["wide"]
    extra = wide.verdict.mean_excess_cost_bps - plain.verdict.mean_excess_cost_bps  # type: ignore[attr-defined]
    # the emulator's touch moved from ~0.5 bps to 25 bps from the mid: about 24.5 bps more per order
    assert extra == pytest.approx(24.5, abs=1.5)
    assert wide.verdict.verdict == "execution worse than modelled"  # type: ignore[attr-defined]
    assert plain.verdict.verdict in ("not enough data yet", "edge intact")  # type: ignore[attr-defined]
    assert wide.pnl.totals["execution"] < plain.pnl.totals["execution"] < 0  # type: ignore[attr-defined]
    # the hour-of-week table shows it too: the same buckets, ~24.5 bps more trading cost against arrival
    p, w = plain.slippage, wide.slippage  # type: ignore[attr-defined]
    assert len(p) >= 3 and p["bucket"].tolist() == w["bucket"].tolist()
    assert p["orders"].sum() == len(plain.orders[plain.orders["filled"] > 0])  # type: ignore[attr-defined]

    def weighted(t: object) -> float:
        return float((t["live_bps"] * t["notional"]).sum() / t["notional"].sum())  # type: ignore[index]

    assert weighted(w) - weighted(p) == pytest.approx(24.5, abs=2.0)
    assert plain.slippage_document["rows"][0]["bucket"] == p["bucket"].iloc[0]  # type: ignore[attr-defined]


def test_the_workflow_records_reports_and_feeds_the_gate(private_store: dict[str, str],
                                                         paper_journals: dict[str, Path]) -> None:
    from toolkit.gates import evaluate, load_policy
    from toolkit.gates.evidence import Evidence
    from toolkit.gates.policy import POLICY_PATHS
    from toolkit.gates.rederive import rederive
    from toolkit.registry import adapter
    from toolkit.workflows.attribution import run_attribution_workflow
    from toolkit.workflows.gates import _paper_record

    run = run_attribution_workflow(MODEL, paper_journals["plain"], report=True)
    assert run.stage == "paper" and run.run_id
    html = Path(str(run.report_path)).read_text(encoding="utf-8")
    assert run.summary["sentence"].split(":")[1].strip()[:40] in html  # the verdict sentence at the top
    assert CANARY_KEY not in html and CANARY_SECRET not in html
    tags = adapter.version_info(MODEL, "1").tags
    assert tags["attribution.paper.run_id"] == run.run_id and tags["attribution.paper.verdict"] == run.verdict
    assert {"attribution.json", "live_slippage_by_bucket.json"} <= set(adapter.list_artifact_paths(run.run_id))
    assert "Slippage by hour of the week" in html
    assert adapter.run_tags(run.run_id)["execution_tolerance_bps"] == "2"  # the paper policy's, kept with the verdict
    assert run.summary["record"]["tolerance_bps"] == 2.0
    index = (Path(private_store["TOOLKIT_REPORTS_DIR"]) / "index.html").read_text(encoding="utf-8")
    assert "paper attribution" in index
    # the live stage's paper_record gate reads it: three days are not enough, and it says so
    import tempfile

    work = Path(tempfile.mkdtemp())
    record = json.loads(Path(str(_paper_record(MODEL, "1", dict(tags), work))).read_text())
    policy = load_policy(POLICY_PATHS["live"], stage="live")
    from toolkit.gates.evidence import collect_evidence

    bundle = adapter.download_evidence(MODEL, "1", work / "bundle")
    ev = collect_evidence(bundle, policy, paper_record=record)
    ev.write(work / "extras")
    g = evaluate(Evidence.read(bundle, work / "extras"), policy).gate("paper_record")
    assert not g.passed and "more days needed" in g.explanation
    # an edited record does not survive re-derivation
    forged = dict(ev.extras)
    forged["paper_record"] = {**forged["paper_record"], "days": 400.0, "verdict": "edge intact"}
    found = [m.field for m in rederive(bundle, forged, policy, None) if m.field.startswith("paper_record")]
    assert found and found[0] in ("paper_record.days", "paper_record.verdict")


def test_cli_json_and_bad_journal(private_store: dict[str, str], paper_journals: dict[str, Path],
                                  tmp_path: Path) -> None:
    import os

    env = {**os.environ, **private_store}
    ok = subprocess.run([TOOLKIT, "attribute", MODEL, "--journal", str(paper_journals["wide"]), "--no-report",
                         "--no-record", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["verdict"] == "execution worse than modelled"
    loose = subprocess.run([TOOLKIT, "attribute", MODEL, "--journal", str(paper_journals["wide"]), "--no-report",
                            "--no-record", "--json", "--execution-tolerance-bps", "50"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert loose.returncode == 0, loose.stderr
    body = json.loads(loose.stdout)
    assert body["verdict"] != "execution worse than modelled" and body["summary"]["record"]["tolerance_bps"] == 50.0
    neg = subprocess.run([TOOLKIT, "attribute", MODEL, "--journal", str(paper_journals["wide"]), "--no-report",
                          "--no-record", "--json", "--execution-tolerance-bps", "-1"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert neg.returncode == 2 and json.loads(neg.stdout)["error"]["field"] == "execution_tolerance_bps"
    bad = _edited_copy(paper_journals["plain"], tmp_path / "bad.sqlite",
                       "UPDATE fills SET price = 'n/a' WHERE rowid = (SELECT MIN(rowid) FROM fills)")
    err = subprocess.run([TOOLKIT, "attribute", MODEL, "--journal", str(bad), "--no-report", "--no-record",
                          "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert err.returncode == 3
    e = json.loads(err.stdout)["error"]
    assert e["field"].startswith("fills[trade_id=") and e["field"].endswith("].price") and e["found"] == "n/a"


def test_the_morning_command_attributes_every_deployment_of_a_journal(private_store: dict[str, str],
                                                                      paper_journals: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    import os

    env = {**os.environ, **private_store}

    def run(journal: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([TOOLKIT, "attribute-journal", "--journal", str(journal), "--no-report", "--no-record",
                               "--json"], capture_output=True, text=True, env=env, timeout=300)

    ok = run(paper_journals["wide"])
    assert ok.returncode == 0, ok.stderr
    [entry] = json.loads(ok.stdout)
    assert (entry["deployment"], entry["model"], entry["verdict"]) == ("btc", MODEL, "execution worse than modelled")

    bad = _edited_copy(paper_journals["plain"], tmp_path / "bad.sqlite",
                       "UPDATE fills SET fee = 'x' WHERE rowid = (SELECT MIN(rowid) FROM fills)")
    failed = run(bad)
    assert failed.returncode == 3  # the deployment's error decides the exit status, after the report of all
    [entry] = json.loads(failed.stdout)
    assert entry["deployment"] == "btc" and "].fee: expected" in entry["error"]

    empty = _edited_copy(paper_journals["plain"], tmp_path / "empty.sqlite", "DELETE FROM decisions")
    nothing = run(empty)
    assert nothing.returncode == 2 and "journal: expected a journal with at least one decision" in nothing.stderr


def _edited_copy(journal: Path, dst: Path, sql: str) -> Path:
    """Return a copy of ``journal`` at ``dst`` with ``sql`` applied (a corrupted or emptied journal)."""
    import sqlite3

    dst.write_bytes(journal.read_bytes())
    con = sqlite3.connect(dst)
    con.execute(sql)
    con.commit()
    con.close()
    return dst
