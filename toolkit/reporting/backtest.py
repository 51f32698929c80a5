"""Run the backtest template end to end: validate, execute, render, record, index."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit import config
from toolkit.backtest.config import config_from_params
from toolkit.reporting.notebooks import (
    append_index_entry,
    execute_template,
    render_html,
    template_path,
    template_sha256,
)
from toolkit.reporting.views import bars_for

__all__ = ["backtest_report"]


def backtest_report(params: dict[str, Any], reports: Path | None = None, tracking_uri: str | None = None,
                    progress: bool = False, now: pd.Timestamp | None = None) -> dict[str, Any]:
    """Validate ``params``, run ``templates/backtest.ipynb``, render HTML and register the version.

    Nothing reaches MLflow unless the notebook ran to the end: a failure in any cell
    leaves the executed notebook on disk and no run or version behind.

    Returns
    -------
    dict with run_id, model_name, model_version, model_uri, report_path, notebook_path and the
    out-of-sample metrics.
    """
    from toolkit.backtest.bundle import load_bundle
    from toolkit.registry.mlflow_store import record_backtest

    cfg = config_from_params(**dict(params))  # strict validation before any work
    bars_for(cfg)  # data problems surface here, before a kernel starts
    root = reports or config.reports_dir()
    stamp = (now or pd.Timestamp.now(tz="UTC")).strftime("%Y%m%dT%H%M%S%fZ")
    name = cfg.model_name_or_default
    base = root / "backtest" / f"{name}-{stamp}"
    template = template_path("backtest")
    bundle = Path(tempfile.mkdtemp(prefix="backtest-bundle-"))
    try:
        nb = execute_template(template, base.parent / f"{base.name}.ipynb",
                              {**params, "output_dir": str(bundle), "progress": False}, progress=progress)
        html = render_html(nb, base.parent / f"{base.name}.html", title=f"Backtest {name}")
        recorded = record_backtest(bundle, notebook=nb, html=html, template_sha=template_sha256(template),
                                   tracking_uri=tracking_uri)
        summary = load_bundle(bundle)
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
    m = summary["metrics"]
    append_index_entry({
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        "kind": "backtest", "model": recorded.model_name, "version": recorded.model_version,
        "run_id": recorded.run_id, "html": str(html.relative_to(root)),
        "summary": f"{summary['chosen']} OOS Sharpe {m['sharpe']:.2f}, return {m['total_return']:.2%}, "
                   f"{int(m['trade_count'])} trades",
        "status": "ok",
    }, root)
    return {
        "run_id": recorded.run_id,
        "experiment_id": recorded.experiment_id,
        "model_name": recorded.model_name,
        "model_version": recorded.model_version,
        "model_uri": recorded.model_uri,
        "report_path": str(html),
        "notebook_path": str(nb),
        "chosen": summary["chosen"],
        "metrics": m,
        "n_trials": summary["n_trials"],
        "data_hash": summary["data_hash"],
    }
