"""The report index lists incident reports in their own table: the latest report of each incident, newest incident
first, an open one marked; the other reports keep their table."""

from __future__ import annotations

from pathlib import Path

from toolkit.reporting.index import append_index_entry


def _incident(created: str, incident_id: int, state: str, opened: str, html: str) -> dict[str, object]:
    return {"created_at": created, "kind": "incident", "html": html, "summary": f"summary of {html}", "status": state,
            "incident_id": incident_id, "incident_kind": "stale_feed", "opened_at": opened, "deployment": "btc",
            "journal": "/srv/runner/journal.sqlite", "severity": "blocking"}


def test_incidents_have_their_own_table_with_the_latest_report_of_each(tmp_path: Path) -> None:
    append_index_entry(_incident("2024-03-01T03:10:00", 2, "open", "2024-03-01T03:00:00+00:00",
                                 "incident/first.html"), tmp_path)
    append_index_entry({"created_at": "2024-03-01T04:00:00", "kind": "paper attribution", "model": "m",
                        "version": "1", "summary": "edge intact", "status": "ok", "html": "attribution/a.html"},
                       tmp_path)
    append_index_entry(_incident("2024-03-01T09:00:00", 2, "resolved", "2024-03-01T03:00:00+00:00",
                                 "incident/again.html"), tmp_path)
    page = append_index_entry(_incident("2024-03-01T09:05:00", 7, "open", "2024-03-01T08:00:00+00:00",
                                        "incident/seven.html"), tmp_path).read_text(encoding="utf-8")
    incidents = page[page.index("<h2>Incidents</h2>"):page.index("reports, newest first")]
    assert "incident/first.html" not in page  # superseded by the morning's report of the same incident
    assert incidents.index("incident/seven.html") < incidents.index("incident/again.html")  # newest incident first
    assert "#7 stale_feed" in incidents and "<span class='failed'>open</span>" in incidents
    assert "<span class=''>resolved</span>" in incidents
    assert "attribution/a.html" not in incidents and "attribution/a.html" in page
    assert "<p>1 reports, newest first." in page
