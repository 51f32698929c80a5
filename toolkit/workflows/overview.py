"""The desk overview at the top of ``reports/index.html``: per model, where each stage stands.

One row per model: the versions holding ``paper`` and ``champion`` and since when, the latest verdict
per stage, the holders' backtest (out-of-sample Sharpe) next to their paper record (the attribution
verdict and its length), how long versions took from registration to paper and from paper to live
(medians over the model's promotions), and the rollbacks per stage: the figures behind "faster
promotion cycles with fewer rollback events".

Rows are computed from the registry (``toolkit.registry.status``) and kept in ``reports/overview.json``;
each workflow refreshes its model's row when it records something, and ``toolkit report index`` refreshes
every model the index knows.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit import config
from toolkit.errors import ToolkitError

__all__ = ["OVERVIEW_FILE", "model_overview", "refresh_overview"]

OVERVIEW_FILE = "overview.json"


def _hours(later: str | None, earlier: str | None) -> float | None:
    if not later or not earlier:
        return None
    return (pd.Timestamp(later) - pd.Timestamp(earlier)).total_seconds() / 3600.0


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and v >= 0]
    return float(statistics.median(known)) if known else None


def model_overview(model_name: str) -> dict[str, Any]:
    """Return the overview row of one model (JSON-safe)."""
    from toolkit.registry import adapter
    from toolkit.registry.status import status

    st = status(model_name, audit_limit=0)
    rows = {r["version"]: r for r in st["versions"]}
    to_paper = [_hours(r["promotion"]["paper"]["promoted_at"], r["created_at"]) for r in st["versions"]]
    to_live = [_hours(r["promotion"]["live"]["promoted_at"], r["promotion"]["paper"]["promoted_at"])
               for r in st["versions"]]

    def holder(alias: str, stage: str) -> dict[str, Any] | None:
        h = st["champion" if alias == "champion" else "paper"]
        if h is None:
            return None
        row = rows[h["version"]]
        info = adapter.version_info(model_name, h["version"])
        sharpe = None
        if row["run_id"]:
            sharpe = adapter.run_metrics(row["run_id"]).get("oos.sharpe")
        record = {k: info.tags.get(f"attribution.paper.{k}") for k in ("verdict", "days", "sentence", "evaluated_at")}
        return {"version": h["version"], "since": h["promoted_at"], "backtest_oos_sharpe": sharpe,
                "paper_record": record if record["verdict"] else None}

    return {
        "model": model_name,
        "paper": holder("paper", "paper"),
        "champion": holder("champion", "live"),
        "latest_verdicts": {stage: (None if v is None else {"version": v["version"], "verdict": v["verdict"],
                                                            "evaluated_at": v["evaluated_at"]})
                            for stage, v in st["latest_verdicts"].items()},
        "versions": len(st["versions"]),
        "median_hours_registration_to_paper": _median(to_paper),
        "median_hours_paper_to_live": _median(to_live),
        "promotions": {s: st["metrics"][s]["promotions"] for s in ("paper", "live")},
        "rollbacks": {s: st["metrics"][s]["rollbacks"] for s in ("paper", "live")},
        "warnings": st["warnings"],
    }


def refresh_overview(models: list[str] | None = None, reports: Path | None = None) -> Path:
    """Recompute the rows of ``models`` (default: every model in the overview and the report log) and write
    ``reports/overview.json`` atomically; a model the registry no longer knows is dropped."""
    root = reports or config.reports_dir()
    root.mkdir(parents=True, exist_ok=True)
    path = root / OVERVIEW_FILE
    current: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if models is None:
        log = root / "index.jsonl"
        logged = {json.loads(ln).get("model") for ln in log.read_text(encoding="utf-8").splitlines()
                  if ln.strip()} if log.is_file() else set()
        models = sorted({*current, *(m for m in logged if m)})
    for name in models:
        try:
            current[name] = model_overview(name)
        except ToolkitError:  # removed from the registry, or a registry that cannot be read: say nothing false
            current.pop(name, None)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(current, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
