"""The incident report on a real journal: the runner paper-trading through the emulator until its feed goes
stale (``incident_support``). The timeline holds the journal's events, the PnL impact equals a computation by
hand from the journal's rows, the market context equals the regime map re-measured by hand, and one real
papermill run of ``templates/incident.ipynb`` (real kernel) through ``toolkit incident`` renders the HTML the
on-call reads, listed in the report index."""

from __future__ import annotations

import html
import json
import re
import sqlite3
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from toolkit.cli import main
from toolkit.data import load_bars
from toolkit.ops.incident import incident_report
from toolkit.ops.regimes import QUANTILES, bucket_of, regime_map

H = 3_600_000


def _hand_pnl(path: Path, lo: int, hi: int) -> tuple[Decimal, Decimal, Decimal, int]:
    """Return (total, carry, fees, fills in the window) from the journal's rows, as a desk analyst would."""
    con = sqlite3.connect(path)
    try:
        bars = con.execute("SELECT open_time, close FROM bars WHERE deployment = 'btc' ORDER BY open_time").fetchall()
        fills = con.execute("SELECT at, side, amount, cost, price, fee, fee_asset FROM fills WHERE deployment = 'btc' "
                            "ORDER BY at").fetchall()
    finally:
        con.close()

    def mark(t: int) -> Decimal | None:
        closed = [c for o, c in bars if o + H <= t]  # 1h bars: closed an hour after they open
        return Decimal(repr(closed[-1])) if closed else None

    held, cash, fees, n = Decimal(0), Decimal(0), Decimal(0), 0
    for at, side, amount, cost, price, fee, asset in fills:
        if at > hi:
            continue
        s = 1 if side == "buy" else -1
        dq = s * Decimal(amount) - (Decimal(fee) if asset == "BTC" else 0)
        if at <= lo:
            held += dq
            continue
        n += 1
        cash += -s * Decimal(cost) - (Decimal(fee) if asset == "USDT" else 0)
        fees += Decimal(fee) * Decimal(price) if asset == "BTC" else Decimal(fee)
        held += dq
    q0 = sum((s * Decimal(a) - (Decimal(f) if fa == "BTC" else 0) for at, side, a, _, _, f, fa in fills
              if at <= lo for s in [1 if side == "buy" else -1]), Decimal(0))
    p0, p1 = mark(lo), mark(hi)
    assert p1 is not None
    p0 = p1 if p0 is None else p0
    return held * p1 + cash - q0 * p0, q0 * (p1 - p0), fees, n


@pytest.mark.parametrize("hours", [6.0, 1.0])
def test_the_pnl_impact_equals_a_hand_computation(incident_journal: tuple[Path, int], hours: float) -> None:
    path, incident = incident_journal
    r = incident_report(path, incident, hours=hours)
    lo, hi = (int(t.value // 1_000_000) for t in r.window)
    total, carry, fees, n = _hand_pnl(path, lo, hi)
    p = r.pnl
    assert p is not None
    assert (p.total, p.carry, p.fees, p.fills) == (total, carry, fees, n)
    if hours == 6.0:  # the window holds the first decision's buy: trading and fees are not trivially zero
        assert n >= 1 and fees > 0 and p.position_start == 0
    else:  # bought at the first decision, held through the incident: the PnL is the position's move
        assert n == 0 and p.position_start > 0 and carry != 0 and p.total == carry
    assert p.capital == pytest.approx(20000.0, rel=1e-9)  # inferred from the first order from flat
    assert p.total_bps == pytest.approx(float(total) / 20000.0 * 1e4)


def test_the_timeline_holds_the_journals_events(incident_journal: tuple[Path, int]) -> None:
    path, incident = incident_journal
    r = incident_report(path, incident)
    inc = r.incident
    assert inc["kind"] == "stale_feed" and r.state == "resolved" and r.deployment == "btc"
    assert r.symbol == "BTC/USDT"
    lo, hi = (int(t.value // 1_000_000) for t in r.window)
    assert lo == inc["at"] - 6 * H and hi == inc["resolved_at"] + 6 * H
    mine = [(e.what, e.detail) for e in r.timeline if e.this]
    assert mine == [(f"#{incident} stale_feed opened (blocking)", inc["message"]),
                    (f"#{incident} stale_feed acknowledged", "by oncall-alice"),
                    (f"#{incident} stale_feed resolved", "fresh bars again")]
    times = [e.at for e in r.timeline]
    assert times == sorted(times)
    con = sqlite3.connect(path)
    try:
        trades = {str(t) for (t,) in con.execute("SELECT trade_id FROM fills WHERE at BETWEEN ? AND ?", (lo, hi))}
        decided = con.execute("SELECT COUNT(*) FROM decisions WHERE decided_at BETWEEN ? AND ?", (lo, hi)).fetchone()
        events = con.execute("SELECT COUNT(*) FROM order_events WHERE at BETWEEN ? AND ?", (lo, hi)).fetchone()
    finally:
        con.close()
    shown = {e.detail.split("trade ")[1].split(",")[0] for e in r.timeline if e.source == "fill"}
    assert shown == trades and trades
    assert sum(e.source == "decision" for e in r.timeline) == decided[0] > 0
    assert sum(e.source == "order" for e in r.timeline) == events[0] > 0
    assert any(e.source == "bar" for e in r.timeline)
    assert r.summary().startswith(f"Incident #{incident} stale_feed (blocking) on deployment btc opened Fri "
                                  "2024-03-01 ")


def test_the_market_context_equals_the_regime_map_by_hand(incident_journal: tuple[Path, int]) -> None:
    path, incident = incident_journal
    c = incident_report(path, incident).context
    hour = c.hour
    assert c.unavailable is None and c.bucket == bucket_of(hour) and hour.dayofweek == 4  # a Friday night
    history = load_bars("BTC/USDT", "1m", hour - pd.Timedelta(days=28), hour)
    history = history[history.index < hour]
    regimes = regime_map(history, "BTC/USDT")
    assert (c.regime, c.map_sha256) == (regimes.regime(c.bucket), regimes.sha256)
    for q, name in zip(QUANTILES, ("p1", "p10", "p50", "p90", "p99"), strict=True):
        assert c.quantiles["spread_bps"][name] == regimes.quantile("spread_bps", c.bucket, q)
    # the hour's spread estimate: Corwin–Schultz on each 1m bar and the one before, median over the hour
    bars = load_bars("BTC/USDT", "1m", hour - pd.Timedelta(minutes=1), hour + pd.Timedelta(minutes=59))
    hi, lo = np.log(bars["high"].to_numpy()), np.log(bars["low"].to_numpy())
    beta = (hi[1:] - lo[1:]) ** 2 + (hi[:-1] - lo[:-1]) ** 2
    gamma = (np.maximum(hi[1:], hi[:-1]) - np.minimum(lo[1:], lo[:-1])) ** 2
    k = 3 - 2 * np.sqrt(2)
    alpha = (np.sqrt(2 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    spread = np.clip(2 * (np.exp(alpha) - 1) / (1 + np.exp(alpha)), 0, None) * 1e4
    assert c.figures["spread_bps"] == pytest.approx(float(np.median(spread)), rel=1e-9)
    volume = float(np.median(bars["quote_volume"].to_numpy()[1:]))
    assert c.figures["quote_volume_per_min"] == pytest.approx(volume, rel=1e-9)
    for metric, band in c.bands.items():  # the band named holds the figure
        lo_q, _, hi_q = band.partition("–")
        qs = c.quantiles[metric]
        if hi_q:
            assert qs[lo_q] <= c.figures[metric] <= qs[hi_q]
        else:
            assert band in ("below p1", "above p99")


def test_the_template_renders_the_report_listed_in_the_index(incident_journal: tuple[Path, int], tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    path, incident = incident_journal
    reports = tmp_path / "reports"
    monkeypatch.setenv("TOOLKIT_REPORTS_DIR", str(reports))
    assert main(["incident", str(incident), "--journal", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    page_path = Path(out["report_path"])
    assert page_path.parent == reports / "incident" and page_path.suffix == ".html"
    page = page_path.read_text(encoding="utf-8")
    text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
    assert " ".join(out["summary"].split()) in text  # the summary sentence at the top
    assert text.index("Incident #") < text.index("Timeline") < text.index("Market context") < text.index(
        "PnL impact")
    for row in out["report"]["timeline"]:  # every line of the timeline
        assert row["what"] in text, row
    assert "by oncall-alice" in text and "fresh bars again" in text
    assert page.count("<img") >= 2  # the market-context and the PnL figures
    assert "incident_report(" not in page and "Traceback" not in page  # no code, no error
    index = (reports / "index.html").read_text(encoding="utf-8")
    assert "<h2>Incidents</h2>" in index and f"#{incident} stale_feed" in index
    assert str(page_path.relative_to(reports)) in index
    entry = json.loads((reports / "index.jsonl").read_text().splitlines()[-1])
    assert (entry["kind"], entry["status"], entry["incident_id"]) == ("incident", "resolved", incident)
