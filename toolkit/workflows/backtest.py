"""The backtest workflow: validate → run ``templates/backtest.ipynb`` (papermill) → render HTML → record → index.

Everything that can be checked is checked in this process before a kernel starts: the
parameters (strictly, names included), the model name, the bar file's path (resolved
here, so a relative path means the caller's directory, not the kernel's), the bars
themselves and their quality certificate over the *requested* range. Bars that fail
the certificate are refused unless ``allow_failed_quality`` is set, in which case the
version is tagged ``data.quality=failed`` and the result says so.

Nothing reaches MLflow unless the notebook ran to the end: a failing cell leaves the
executed notebook on disk (to read the error) and no run or version; an interruption
(Ctrl-C) removes the half-written report files as well. While the template's kernel starts,
this process connects to the registry (reads only) and imports the HTML renderer, which
would otherwise wait for the last cell.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit import config
from toolkit.backtest.config import BacktestConfig, config_from_params
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import ConfigurationError, DataQualityError, interrupted
from toolkit.naming import child_path
from toolkit.reporting.index import append_index_entry
from toolkit.reporting.notebooks import (
    prepare_rendering,
    render_html,
    start_template,
    template_path,
    template_sha256,
)
from toolkit.reporting.views import bars_for
from toolkit.workflows.overview import refresh_overview

__all__ = ["BacktestRun", "prepare_backtest", "run_backtest_workflow"]


@dataclass(frozen=True)
class BacktestRun:
    """What a backtest workflow produced."""

    run_id: str
    experiment_id: str
    model_name: str
    model_version: str
    model_uri: str
    report_path: str
    notebook_path: str
    chosen: dict[str, Any]
    metrics: dict[str, Any]
    n_trials: int
    data_hash: str
    data_quality: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = asdict(self)
        out["warnings"] = list(self.warnings)
        return out


def _resolve_bars_file(params: dict[str, Any]) -> None:
    raw = params.get("bars_file")
    if raw in (None, ""):
        params.pop("bars_file", None)
        return
    path = Path(str(raw)).expanduser()
    resolved = path.resolve()
    if not resolved.is_file():
        raise ConfigurationError("bars_file", "an existing Parquet or CSV file (a relative path is read from "
                                 f"the current directory {Path.cwd()})", str(raw))
    params["bars_file"] = str(resolved)


def prepare_backtest(params: dict[str, Any], allow_failed_quality: bool = False) -> tuple[
        BacktestConfig, dict[str, Any], list[str]]:
    """Validate ``params`` and the bars they select; return the config, the template parameters, warnings.

    Raises
    ------
    ConfigurationError
        An unknown or invalid parameter, a bad model name, a missing bar file.
    DataError
        The bars cannot be read or the range holds none.
    DataQualityError
        The bars fail their certificate over the requested range and ``allow_failed_quality`` is False.
    """
    from toolkit.data.quality import certify

    template_params = dict(params)
    _resolve_bars_file(template_params)
    cfg = config_from_params(**dict(template_params))  # strict validation before any work
    bars = bars_for(cfg)  # data problems surface here, before a kernel starts
    cert = certify(bars, cfg.symbol, cfg.timeframe, start=cfg.start, end=cfg.end)
    warnings: list[str] = []
    if not cert.passed:
        detail = "; ".join(f"{c.name}={c.value:g} (limit {c.rule} {c.threshold:g})"
                           for c in cert.checks if not c.passed)
        what = (f"{cfg.symbol} {cfg.timeframe} {cert.requested_start or cert.first_bar} to "
                f"{cert.requested_end or cert.last_bar}: the bars FAIL their data-quality certificate ({detail})")
        if not allow_failed_quality:
            raise DataQualityError(f"{what}; nothing was run or registered. Fix the data or the range, or pass "
                                   "--allow-failed-quality to register it anyway, tagged data.quality=failed")
        warnings.append(f"{what}; registered anyway because allow_failed_quality was set "
                        "(version tagged data.quality=failed)")
    return cfg, template_params, warnings


def run_backtest_workflow(params: dict[str, Any], reports: Path | None = None, tracking_uri: str | None = None,
                          progress: bool = False, clock: Clock = SYSTEM_CLOCK,
                          allow_failed_quality: bool = False) -> BacktestRun:
    """Validate ``params``, run ``templates/backtest.ipynb``, render HTML and register the version.

    Parameters
    ----------
    params
        The template's parameters (``strategy``, ``symbol``, ``timeframe``, ``start``, ``end``,
        ``grid`` …); unknown names are errors.
    reports
        Reports root (default ``toolkit.config.reports_dir()``); files go to ``<reports>/backtest/``.
    tracking_uri
        Overrides ``toolkit.config.tracking_uri()``.
    progress
        Show papermill's progress bar.
    clock
        Names the report files (UTC).
    allow_failed_quality
        Register even when the bars fail their certificate (tagged and warned).
    """
    from toolkit.backtest.bundle import load_bundle
    from toolkit.registry import adapter
    from toolkit.registry.record import record_backtest

    cfg, template_params, warnings = prepare_backtest(params, allow_failed_quality)
    root = reports or config.reports_dir()
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%fZ")
    name = cfg.model_name_or_default
    nb_path = child_path(root, "backtest", f"{name}-{stamp}.ipynb")
    html_path = nb_path.with_suffix(".html")
    template = template_path("backtest")
    bundle = Path(tempfile.mkdtemp(prefix="backtest-bundle-"))
    try:
        run_params = {**template_params, "output_dir": str(bundle), "progress": False}
        run = start_template(template)
        run.check(run_params)  # before the kernel starts
        with run:  # the kernel starts and imports the template's modules while this process
            adapter.connect(tracking_uri)  # opens the registry it records into
            prepare_rendering()  # and imports the renderer
            nb = run.execute(nb_path, run_params, progress=progress)
        html = render_html(nb, html_path, title=f"Backtest {name}")
        recorded = record_backtest(bundle, notebook=nb, html=html, template_sha=template_sha256(template),
                                   tracking_uri=tracking_uri, allow_failed_quality=allow_failed_quality)
        summary = load_bundle(bundle)
    except BaseException as exc:
        if interrupted(exc):  # the CLI reports it as an interruption (see toolkit.errors.interrupted)
            for f in (nb_path, html_path):  # an interrupted run leaves no half-written report
                f.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
    m = summary.metrics
    quality = "passed" if summary.certificate.get("passed") else "failed"
    refresh_overview([recorded.model_name], root)
    append_index_entry({
        "created_at": clock.now().isoformat(timespec="seconds"),
        "kind": "backtest", "model": recorded.model_name, "version": recorded.model_version,
        "run_id": recorded.run_id, "html": str(html.relative_to(root.resolve())),
        "summary": f"{summary.chosen} OOS Sharpe {m['sharpe']:.2f}, return {m['total_return']:.2%}, "
                   f"{int(m['trade_count'])} trades" + ("; DATA QUALITY FAILED" if quality == "failed" else ""),
        "status": "ok" if quality == "passed" else "failed",
    }, root)
    return BacktestRun(
        run_id=recorded.run_id, experiment_id=recorded.experiment_id, model_name=recorded.model_name,
        model_version=recorded.model_version, model_uri=recorded.model_uri, report_path=str(html),
        notebook_path=str(nb), chosen=dict(summary.chosen), metrics=dict(m), n_trials=int(summary.n_trials),
        data_hash=summary.data_hash, data_quality=quality, warnings=tuple(warnings),
    )
