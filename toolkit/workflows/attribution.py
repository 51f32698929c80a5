"""Attribution of a deployed version end to end: load → ``templates/attribution.ipynb`` → HTML → MLflow → index.

:func:`load_attribution` gathers what :func:`toolkit.attribution.attribute` needs: the journal
(read-only), the version's evidence bundle (checked against its ``evidence.sha256`` tag), the
version's own strategy and sizing code (``adapter.load_python_model``, as the runner decides
with), the archived bars from the version's required history before the first decision to
one bar after the last, and the paper policy's thresholds. The template calls it; so does
``toolkit attribute --no-report``.

:func:`run_attribution_workflow` runs the template (papermill), renders the HTML without
code, and records an MLflow run in experiment ``attribution`` linked to the version (tags
``model``, ``version``, ``stage``; metrics; artifacts ``attribution.json``,
``paper_record/paper_record.json``, ``live_slippage_by_bucket.json`` — the record's slippage by
hour of the week beside the regime map stored with the version's verdict, :mod:`toolkit.ops.slippage` —
the report and the executed notebook) and the version
tags ``attribution.<stage>.run_id | verdict | days | evaluated_at | sentence``. The stage is
that of the alias the journal's deployment traded (``paper`` → paper, ``champion`` → live).
The ``paper_record`` gate of a later ``toolkit gates`` reads the paper stage's record.

:func:`demo_attribution` is the step ``make demo`` calls after paper-trading the version.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit import config
from toolkit.clock import SYSTEM_CLOCK, Clock
from toolkit.errors import ConfigurationError, DataError, RegistryError, ToolkitError
from toolkit.naming import child_path, safe_filename, validate_model_name

#: the live slippage by hour-of-week bucket, an artifact of the attribution run (``toolkit.ops.slippage``)
SLIPPAGE_FILE = "live_slippage_by_bucket.json"

__all__ = ["SLIPPAGE_FILE", "AttributionRun", "demo_attribution", "load_attribution", "run_attribution_workflow",
           "stage_of"]

EXPERIMENT = "attribution"


@dataclass(frozen=True)
class AttributionRun:
    """What an attribution workflow produced."""

    model: str
    version: str
    stage: str
    verdict: str
    sentence: str
    run_id: str | None
    report_path: str | None
    notebook_path: str | None
    summary: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stage_of(journal_switches: list[dict[str, Any]]) -> str:
    """Return the stage the deployment traded at (``live`` for alias champion, else ``paper``)."""
    aliases = {str(s["alias"]) for s in journal_switches}
    return "live" if aliases == {"champion"} else "paper"


def _journal_version(jd: Any, version: str | None) -> str:
    versions = jd.versions
    if version is None:
        return str(jd.decisions[-1]["version"])
    if str(version) not in versions:
        raise ConfigurationError("version", f"a version the journal's deployment traded ({', '.join(versions)})",
                                 str(version))
    return str(version)


def load_attribution(model: str, journal: str | Path, version: str | int | None = None, start: Any = None,
                     end: Any = None, capital: float | None = None, quotes: str | Path | None = None,
                     deployment: str | None = None, work: str | Path | None = None,
                     execution_tolerance_bps: float | None = None) -> Any:
    """Load everything for one version's record and return ``toolkit.attribution.attribute``'s result.

    ``execution_tolerance_bps`` overrides the paper policy's ``paper_record.execution_tolerance_bps``
    (the verdict records the one it used; the ``paper_record`` gate accepts only the policy's).

    Raises
    ------
    ConfigurationError
        Unknown model or version, a version the journal did not trade, no capital to be found.
    JournalError
        The journal is unreadable or malformed (``toolkit.attribution.errors``).
    DataError
        The archive lacks bars the replay needs.
    RegistryError
        The version's evidence does not match its registered hash.
    """
    from toolkit.attribution import attribute, read_journal
    from toolkit.backtest.bundle import bundle_sha256, load_bundle
    from toolkit.data.store import load_bars
    from toolkit.gates.policy import load_policy, policy_in_force_path
    from toolkit.registry import adapter

    validate_model_name(model, "model")
    jd = read_journal(journal, deployment=deployment, model=model)
    v = _journal_version(jd, None if version is None else str(version))
    info = adapter.version_info(model, v)
    tmp = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="toolkit-attr-"))
    try:
        bundle_dir = adapter.download_evidence(model, v, tmp / "bundle")
        sha = bundle_sha256(bundle_dir)
        if sha != info.tags.get("evidence.sha256"):
            raise RegistryError(f"{model} version {v}: evidence artifacts hash to {sha[:12]}, registered "
                                f"{str(info.tags.get('evidence.sha256'))[:12]}; not attributing against altered "
                                "evidence")
        bundle = load_bundle(bundle_dir)
    finally:
        if work is None:
            shutil.rmtree(tmp, ignore_errors=True)
    python_model, model_config = adapter.load_python_model(model, v)
    cfg = bundle.config
    bar_minutes = float(model_config.get("bar_minutes") or cfg.bar_minutes())
    strategy, sizing = python_model.strategy, python_model.sizing
    required = max(int(model_config.get("required_history") or 0), int(strategy.required_history),
                   int(sizing.required_history(bar_minutes)))
    bar = pd.Timedelta(minutes=bar_minutes)
    times = [pd.Timestamp(int(d["bar_time"]), unit="ms", tz="UTC") for d in jd.decisions]
    lo = times[0] - (required - 1) * bar
    bars = load_bars(cfg.symbol, cfg.timeframe, lo, times[-1] + bar)
    bars = bars[(bars.index >= lo) & (bars.index <= times[-1] + bar)]
    if bars.empty or bars.index[0] > lo:
        raise DataError(f"bars: expected {cfg.symbol} {cfg.timeframe} from {lo} (the version's {required} bars of "
                        f"history before its first decision), found "
                        f"{'none' if bars.empty else 'the archive starting ' + str(bars.index[0])}; fetch them "
                        "with `toolkit data fetch`")
    direction = strategy.positions(bars).to_numpy(dtype="float64")
    from toolkit.attribution.shortfall import liquidity_regime

    regime = liquidity_regime(load_bars(cfg.symbol, cfg.timeframe, lo - pd.Timedelta(days=31), times[-1] + bar))
    quotes_frame = pd.read_parquet(quotes) if quotes is not None else None
    paper = load_policy(policy_in_force_path("paper"), stage="paper").paper_record
    tolerance = paper.execution_tolerance_bps if execution_tolerance_bps is None else execution_tolerance_bps
    att = attribute(jd, bars, direction, cfg, bundle, sha, v, capital=capital, start=start, end=end,
                    quotes=quotes_frame, alpha=paper.min_consistency_p, min_days=float(paper.min_days),
                    regime=regime, execution_tolerance_bps=tolerance)
    _live_slippage(att, stage_of(jd.switches), bar_minutes)
    return att


def _stored_regime_map(model: str, version: str, stage: str) -> tuple[Any, str]:
    """Return the regime map stored with the version's ``stage`` verdict (or None) and what was found."""
    from toolkit.ops.regimes import RegimeMap
    from toolkit.registry import adapter

    with tempfile.TemporaryDirectory(prefix="toolkit-attr-map-") as tmp:
        try:
            files = adapter.download_gate_artifacts(model, version, tmp, stage)
        except RegistryError as exc:
            return None, str(exc)
        path = files.evidence / "regime_map.json"
        if not path.is_file():
            return None, f"no regime_map.json with the {stage} verdict"
        try:
            return RegimeMap.from_json(path.read_text(encoding="utf-8"), source="regime_map.json"), ""
        except ToolkitError as exc:
            return None, str(exc)


def _live_slippage(att: Any, stage: str, bar_minutes: float) -> None:
    """Measure the record's slippage by hour-of-week bucket against the version's stored regime map."""
    from toolkit.ops.slippage import slippage_by_bucket, slippage_document

    regimes, why = _stored_regime_map(att.model, att.version, stage)
    if regimes is None:
        att.notes.append(f"Live slippage by hour of the week has no modelled figures: {why}.")
    att.slippage = slippage_by_bucket(att.orders, bar_minutes, regimes)
    att.slippage_document = slippage_document(att.slippage, model=att.model, version=att.version,
                                              bar_minutes=bar_minutes, regimes=regimes)


def _record(att: Any, stage: str, out_dir: Path, html: Path | None, notebook: Path | None, clock: Clock) -> str:
    from toolkit.attribution import PAPER_RECORD_FILE
    from toolkit.registry import adapter

    (out_dir / "paper_record").mkdir(parents=True, exist_ok=True)
    (out_dir / "paper_record" / PAPER_RECORD_FILE).write_text(json.dumps(att.paper_record(), indent=1, sort_keys=True)
                                                              + "\n", encoding="utf-8")
    (out_dir / "attribution.json").write_text(json.dumps(att.summary(), indent=1, sort_keys=True) + "\n",
                                              encoding="utf-8")
    if att.slippage_document is not None:
        (out_dir / SLIPPAGE_FILE).write_text(json.dumps(att.slippage_document, indent=1, sort_keys=True) + "\n",
                                             encoding="utf-8")
    exp = adapter.ensure_experiment(EXPERIMENT)
    run_id = adapter.create_run(exp, f"{att.model}-v{att.version}-{stage}", {
        "model": att.model, "version": att.version, "stage": stage, "verdict": att.verdict.verdict,
        "journal.sha256": att.journal_sha256, "evidence.sha256": att.bundle_sha256, "kind": "attribution",
        "execution_tolerance_bps": f"{att.inputs.tolerance_bps:g}"})
    try:
        adapter.log_params(run_id, {"deployment": att.deployment, "start": att.period[0].isoformat(),
                                    "end": att.period[1].isoformat(), "alpha": att.inputs.alpha,
                                    "min_days": att.inputs.min_days, "tolerance_bps": att.inputs.tolerance_bps})
        adapter.log_metrics(run_id, att.metrics())
        adapter.log_artifact(run_id, out_dir / "attribution.json")
        adapter.log_artifacts(run_id, out_dir / "paper_record", "paper_record")
        if att.slippage_document is not None:
            adapter.log_artifact(run_id, out_dir / SLIPPAGE_FILE)
        if html is not None:
            adapter.log_artifact(run_id, html, "report")
        if notebook is not None:
            adapter.log_artifact(run_id, notebook, "notebook")
        adapter.end_run(run_id)
    except BaseException:
        adapter.end_run(run_id, "FAILED")
        raise
    now = clock.now().isoformat(timespec="seconds")
    for key, value in (("run_id", run_id), ("verdict", att.verdict.verdict), ("days", f"{att.verdict.days:.2f}"),
                       ("evaluated_at", now), ("sentence", att.verdict.sentence[:4000])):
        adapter.set_version_tag(att.model, att.version, f"attribution.{stage}.{key}", value)
    return run_id


def run_attribution_workflow(model: str, journal: str | Path, version: str | int | None = None, start: Any = None,
                             end: Any = None, capital: float | None = None, quotes: str | Path | None = None,
                             deployment: str | None = None, report: bool = True, record: bool = True,
                             reports: Path | None = None, clock: Clock = SYSTEM_CLOCK,
                             execution_tolerance_bps: float | None = None) -> AttributionRun:
    """Attribute a version's record in ``journal``: template → HTML → MLflow run and tags → index entry.

    ``report=False`` computes in this process without the template (no HTML); ``record=False``
    writes nothing to MLflow. ``execution_tolerance_bps`` overrides the paper policy's (validated
    here; MLflow keeps the one used as param ``tolerance_bps`` and tag ``execution_tolerance_bps``).

    Raises
    ------
    ConfigurationError
        A tolerance that is not a finite number of bps in [0, 1000].
    """
    from toolkit.attribution.verdict import validate_tolerance_bps

    if execution_tolerance_bps is not None:
        execution_tolerance_bps = validate_tolerance_bps(execution_tolerance_bps)
    from toolkit.attribution import read_journal
    from toolkit.reporting.index import append_index_entry
    from toolkit.workflows.overview import refresh_overview

    validate_model_name(model, "model")
    jp = Path(journal).resolve()
    jd = read_journal(jp, deployment=deployment, model=model)
    stage = stage_of(jd.switches)
    v = _journal_version(jd, None if version is None else str(version))
    root = reports or config.reports_dir()
    stamp = clock.now().strftime("%Y%m%dT%H%M%S%fZ")
    work = Path(tempfile.mkdtemp(prefix="toolkit-attribution-"))
    html = nb = None
    try:
        if report:
            from toolkit.reporting.notebooks import prepare_rendering, render_html, start_template, template_path

            nb_path = child_path(root, "attribution", f"{safe_filename(model)}-v{v}-{stage}-{stamp}.ipynb")
            with start_template(template_path("attribution")) as run:
                params = {"model": model, "version": v, "journal": str(jp), "start": _iso(start), "end": _iso(end),
                          "capital": capital, "quotes": None if quotes is None else str(Path(quotes).resolve()),
                          "deployment": jd.deployment, "output_dir": str(work),
                          "execution_tolerance_bps": execution_tolerance_bps}
                prepare_rendering()
                nb = run.execute(nb_path, params)
            html = render_html(nb, nb_path.with_suffix(".html"), title=f"Attribution {model} v{v} ({stage})")
            att = _load_pickle(work)
        else:
            att = load_attribution(model, jp, v, start, end, capital, quotes, jd.deployment,
                                   execution_tolerance_bps=execution_tolerance_bps)
        run_id = _record(att, stage, work, html, nb, clock) if record else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = att.summary()
    refresh_overview([att.model], root)
    append_index_entry({
        "created_at": clock.now().isoformat(timespec="seconds"), "kind": f"{stage} attribution", "model": model,
        "version": v, "run_id": run_id, "html": None if html is None else str(html.relative_to(root.resolve())),
        "summary": att.verdict.sentence, "status": "ok" if att.verdict.verdict in ("edge intact",
                                                                                   "not enough data yet") else "failed",
        "verdict": att.verdict.verdict, "stage": stage,
        "live_sharpe": att.verdict.live_sharpe, "backtest_sharpe": att.verdict.backtest_sharpe,
        "days": att.verdict.days, "pnl_gap": att.pnl.totals["gap"],
    }, root)
    return AttributionRun(model=model, version=v, stage=stage, verdict=att.verdict.verdict, sentence=att.sentence,
                          run_id=run_id, report_path=None if html is None else str(html),
                          notebook_path=None if nb is None else str(nb), summary=summary)


def _iso(t: Any) -> str | None:
    return None if t is None else pd.Timestamp(t).isoformat()


def _load_pickle(work: Path) -> Any:
    import pickle

    path = work / "attribution.pickle"
    if not path.is_file():
        raise DataError(f"attribution.ipynb ran but left no {path.name} in its output_dir")
    return pickle.loads(path.read_bytes())


def attribute_journal(journal: str | Path, report: bool = True, record: bool = True,
                      reports: Path | None = None, clock: Clock = SYSTEM_CLOCK
                      ) -> list[tuple[str, str, AttributionRun | ToolkitError]]:
    """Attribute every deployment of ``journal`` (the latest version each traded): what a scheduler runs each
    morning. Returns ``(deployment, model, run or the error)`` per deployment; one failing does not stop the
    others."""
    from toolkit.attribution.journal import journal_deployments

    out: list[tuple[str, str, AttributionRun | ToolkitError]] = []
    for deployment, model in journal_deployments(journal):
        try:
            out.append((deployment, model, run_attribution_workflow(model, journal, deployment=deployment,
                                                                    report=report, record=record, reports=reports,
                                                                    clock=clock)))
        except ToolkitError as exc:
            out.append((deployment, model, exc))
    return out


def demo_attribution(model: str, version: str | int, journal: str | Path, echo: Callable[[str], None] | None = print,
                     clock: Clock = SYSTEM_CLOCK) -> AttributionRun:
    """Attribute the paper-traded stretch of the demo (``make demo``'s step after the runner's paper trading)."""
    say = echo or (lambda _m: None)
    run = run_attribution_workflow(model, journal, version=version, clock=clock)
    say(f"    attribution of {model} v{version} on paper: {run.sentence}")
    if run.report_path:
        say(f"    report {run.report_path}")
    return run
