"""The report of one runner incident end to end: check → ``templates/incident.ipynb`` → HTML → index.

:func:`run_incident_workflow` checks the journal and the incident id before a kernel starts, runs the
template (papermill), renders the HTML without code under ``reports/incident/``, and appends an entry
(kind ``incident``) to the report index. ``report=False`` builds the data in this process without the
template (no HTML, no index entry): what ``toolkit incident --no-report --json`` prints.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import DataError
from toolkit.naming import child_path, safe_filename

__all__ = ["IncidentRun", "run_incident_workflow"]


@dataclass(frozen=True)
class IncidentRun:
    """What an incident-report workflow produced (``report`` is :meth:`IncidentReport.to_dict`)."""

    incident_id: int
    state: str
    summary: str
    report_path: str | None
    notebook_path: str | None
    report: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_incident_workflow(incident_id: int, journal: str | Path, hours: float = 6.0, deployment: str | None = None,
                          symbol: str | None = None, capital: float | None = None, report: bool = True,
                          reports: Path | None = None, clock: Clock = SYSTEM_CLOCK) -> IncidentRun:
    """Report incident ``incident_id`` of ``journal``: template → HTML under ``reports/incident/`` → index entry.

    Raises
    ------
    ConfigurationError
        No such incident, a bad window, no deployment or symbol to be found (before a kernel starts).
    JournalError
        The file is not a runner journal.
    ExecutionFailed
        A cell of the template failed (the executed notebook is kept).
    """
    from toolkit.ops.incident import check_incident, incident_report

    jp = Path(journal).resolve()
    check_incident(jp, incident_id, hours)
    if not report:
        data = incident_report(jp, incident_id, hours, deployment, symbol, capital).to_dict()
        return IncidentRun(incident_id=int(incident_id), state=data["state"], summary=data["summary"],
                           report_path=None, notebook_path=None, report=data)
    from toolkit.reporting.index import append_index_entry
    from toolkit.reporting.notebooks import prepare_rendering, render_html, start_template, template_path

    root = (reports or config.reports_dir()).resolve()
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%fZ")
    nb_path = child_path(root, "incident", f"{safe_filename(jp.stem)}-incident-{int(incident_id)}-{stamp}.ipynb")
    work = Path(tempfile.mkdtemp(prefix="toolkit-incident-"))
    try:
        with start_template(template_path("incident")) as run:
            params = {"incident_id": int(incident_id), "journal": str(jp), "hours": float(hours),
                      "deployment": deployment, "symbol": symbol, "capital": capital, "output_dir": str(work)}
            prepare_rendering()
            nb = run.execute(nb_path, params)
        out = work / "incident.json"
        if not out.is_file():
            raise DataError(f"incident.ipynb ran but left no {out.name} in its output_dir")
        data = json.loads(out.read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    inc = data["incident"]
    html = render_html(nb, nb_path.with_suffix(".html"), title=f"Incident #{incident_id} {inc['kind']}")
    append_index_entry({
        "created_at": clock.now().isoformat(timespec="seconds"), "kind": "incident",
        "html": str(html.relative_to(root)), "summary": data["summary"], "status": data["state"],
        "incident_id": int(incident_id), "incident_kind": inc["kind"], "opened_at": inc["at"],
        "deployment": data["deployment"], "journal": str(jp), "severity": inc["severity"],
    }, root)
    return IncidentRun(incident_id=int(incident_id), state=data["state"], summary=data["summary"],
                       report_path=str(html), notebook_path=str(nb), report=data)
