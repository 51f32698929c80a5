"""The desk's front page: ``reports/index.html``, rebuilt from an append-only ``reports/index.jsonl``, with the
desk overview (``reports/overview.json``, one row per model; ``toolkit.workflows.overview``) on top, then the
runner's incidents (the latest report of each, ``toolkit incident``), then every other report."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from toolkit import config

__all__ = ["append_index_entry", "incidents_table", "overview_table", "write_index"]


def _overview(root: Path) -> dict[str, Any]:
    path = root / "overview.json"  # written by toolkit.workflows.overview
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def append_index_entry(entry: dict[str, Any], reports: Path | None = None) -> Path:
    """Append one report entry to ``reports/index.jsonl`` and rebuild ``reports/index.html``."""
    root = reports or config.reports_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "index.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return write_index(root)


def _h(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _hours(h: float | None) -> str:
    if h is None:
        return "-"
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def _holder(h: dict[str, Any] | None) -> str:
    if h is None:
        return "-"
    sharpe = h.get("backtest_oos_sharpe")
    rec = h.get("paper_record")
    record = "no paper record yet" if not rec else f"paper record: {rec['verdict']} ({float(rec['days']):.1f} days)"
    return (f"v{_h(h['version'])} since {_h(str(h.get('since') or '')[:16])}<br><small>backtest OOS Sharpe "
            f"{'-' if sharpe is None else f'{sharpe:.2f}'}; {_h(record)}</small>")


def overview_table(overview: dict[str, Any]) -> str:
    """Return the HTML of the desk overview (``toolkit.workflows.overview`` rows), one row per model."""
    if not overview:
        return ""
    head = ["model", "paper", "champion", "latest paper verdict", "latest live verdict",
            "registration → paper (median)", "paper → live (median)", "promotions paper / live",
            "rollbacks paper / live"]
    rows = []
    for name, r in sorted(overview.items()):
        verdicts = []
        for stage in ("paper", "live"):
            v = r["latest_verdicts"].get(stage)
            verdicts.append("-" if v is None else
                            f"<span class='{'failed' if v['verdict'] != 'passed' else ''}'>v{_h(v['version'])} "
                            f"{_h(v['verdict'])}</span>")
        warn = "".join(f"<br><small class='failed'>{_h(w)}</small>" for w in r.get("warnings", []))
        plural = "" if r["versions"] == 1 else "s"
        cells = [f"<b>{_h(name)}</b> ({r['versions']} version{plural}){warn}",
                 _holder(r["paper"]), _holder(r["champion"]),
                 *verdicts, _hours(r["median_hours_registration_to_paper"]), _hours(r["median_hours_paper_to_live"]),
                 f"{r['promotions']['paper']} / {r['promotions']['live']}",
                 f"{r['rollbacks']['paper']} / {r['rollbacks']['live']}"]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<h2>Models</h2><table><tr>" + "".join(f"<th>{_h(c)}</th>" for c in head) + "</tr>"
            + "".join(rows) + "</table><h2>Reports</h2>")


def incidents_table(entries: list[dict[str, Any]]) -> str:
    """Return the HTML of the incident reports (``kind`` ``incident``), the latest report of each incident only."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for e in sorted(entries, key=lambda e: e.get("created_at", "")):
        latest[(str(e.get("journal")), int(e.get("incident_id", 0)))] = e
    if not latest:
        return ""
    head = ["opened (UTC)", "incident", "deployment", "severity", "state", "summary", "report"]
    rows = []
    for e in sorted(latest.values(), key=lambda e: e.get("opened_at", ""), reverse=True):
        link = e.get("html")
        state = str(e.get("status", ""))
        cells = [f"<span style='white-space:nowrap'>{_h(str(e.get('opened_at', ''))[:16].replace('T', ' '))}</span>",
                 f"#{_h(e.get('incident_id'))} {_h(e.get('incident_kind'))}", _h(e.get("deployment") or "account"),
                 _h(e.get("severity")), f"<span class='{'failed' if state == 'open' else ''}'>{_h(state)}</span>",
                 f"<small>{_h(e.get('summary'))}</small>",
                 f'<a href="{html.escape(link)}">report</a>' if link else ""]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return ("<h2>Incidents</h2><p>The latest report of each runner incident (<code>toolkit incident ID --journal "
            "PATH</code>), newest incident first.</p><table><tr>" + "".join(f"<th>{_h(c)}</th>" for c in head)
            + "</tr>" + "".join(rows) + "</table>")


def write_index(reports: Path | None = None) -> Path:
    """Rebuild ``reports/index.html`` from ``reports/index.jsonl`` (newest first)."""
    root = reports or config.reports_dir()
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    log = root / "index.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entries.append(json.loads(line))
    incidents = [e for e in entries if e.get("kind") == "incident"]
    entries = [e for e in entries if e.get("kind") != "incident"]
    entries.sort(key=lambda e: e.get("created_at", ""), reverse=True)
    cols = ["created_at", "kind", "model", "version", "summary", "status"]
    rows = []
    for e in entries:
        link = e.get("html")
        cells = "".join(f"<td>{html.escape(str(e.get(c, '')))}</td>" for c in cols)
        href = f'<a href="{html.escape(link)}">report</a>' if link else ""
        rows.append(f"<tr>{cells}<td>{href}</td></tr>")
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Desk reports</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}"
        ".failed{color:#b00}small{color:#555}</style></head><body><h1>Desk reports</h1>"
        + overview_table(_overview(root)) + incidents_table(incidents)
        + f"<p>{len(entries)} reports, newest first. Times are UTC.</p><table><tr>"
        + "".join(f"<th>{c}</th>" for c in [*cols, "link"]) + "</tr>" + "".join(rows)
        + "</table></body></html>\n"
    )
    out = root / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
