"""The desk's front page: ``reports/index.html``, rebuilt from an append-only ``reports/index.jsonl``."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from toolkit import config

__all__ = ["append_index_entry", "write_index"]


def append_index_entry(entry: dict[str, Any], reports: Path | None = None) -> Path:
    """Append one report entry to ``reports/index.jsonl`` and rebuild ``reports/index.html``."""
    root = reports or config.reports_dir()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "index.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(entry, sort_keys=True) + "\n")
    return write_index(root)


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
        ".failed{color:#b00}</style></head><body><h1>Desk reports</h1>"
        f"<p>{len(entries)} reports, newest first. Times are UTC.</p><table><tr>"
        + "".join(f"<th>{c}</th>" for c in [*cols, "link"]) + "</tr>" + "".join(rows)
        + "</table></body></html>\n"
    )
    out = root / "index.html"
    out.write_text(page, encoding="utf-8")
    return out
