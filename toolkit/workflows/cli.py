"""``toolkit backtest | gates | demo | attribute | incident``: thin wrappers over the workflows.

Exit codes come from the error classes (``toolkit.cli.main`` maps them): a failed verdict
exits with ``GateFailed`` (5) after printing the verdict; bad input with
``ConfigurationError`` (2); data that fails its certificate with ``DataQualityError`` (3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.cli_support import emit, short
from toolkit.errors import GateFailed
from toolkit.workflows.study_cli import study_command

__all__ = ["attribute_command", "backtest_command", "demo_command", "gates_command", "incident_command", "register"]


def _fixed(items: list[str] | None) -> dict[str, Any]:
    from toolkit.backtest.config import parse_grid

    return {k: v[0] for k, v in parse_grid(items).items()} if items else {}


def backtest_command(
    strategy: Annotated[str, typer.Option(help="ma_cross | donchian | bollinger")],
    symbol: Annotated[str, typer.Option(help="ccxt symbol")] = "BTC/USDT",
    timeframe: Annotated[str, typer.Option(help="bar timeframe (1m, 15m, 1h, 4h, 1d …)")] = "15m",
    start: Annotated[str | None, typer.Option(help="first day (UTC)")] = None,
    end: Annotated[str | None, typer.Option(help="last day (UTC), included")] = None,
    grid: Annotated[list[str] | None, typer.Option(help="NAME=V1,V2,… (repeatable, each name once)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="fixed NAME=VALUE (repeatable, each name once)")] = None,
    taker_fee: Annotated[float | None, typer.Option(help="taker fee fraction (0.001 = 0.1%)")] = None,
    maker_fee: Annotated[float | None, typer.Option(help="maker fee fraction")] = None,
    spread_share: Annotated[float | None, typer.Option(help="share of the quoted spread paid")] = None,
    impact_coef: Annotated[float | None, typer.Option(help="square-root impact constant")] = None,
    capital: Annotated[float | None, typer.Option(help="capital allocation (quote currency)")] = None,
    split: Annotated[float | None, typer.Option(help="in-sample share (0-1)")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment")] = None,
    model_name: Annotated[str | None, typer.Option(help="registered model name")] = None,
    bars_file: Annotated[Path | None, typer.Option(help="backtest this OHLCV file (Parquet/CSV)")] = None,
    allow_failed_quality: Annotated[bool, typer.Option(
        help="register even when the bars fail their data-quality certificate (tagged data.quality=failed)")]
    = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Run the backtest template (papermill), render its HTML report and register the version in MLflow."""
    from toolkit.workflows.backtest import run_backtest_workflow

    params: dict[str, Any] = {"strategy": strategy, "symbol": symbol, "timeframe": timeframe,
                              "start": start, "end": end}
    optional = {"taker_fee": taker_fee, "maker_fee": maker_fee, "spread_share": spread_share,
                "impact_coef": impact_coef, "capital": capital, "split": split, "experiment": experiment,
                "model_name": model_name, "bars_file": str(bars_file) if bars_file is not None else None}
    params.update({k: v for k, v in optional.items() if v is not None})
    if grid is not None:
        params["grid"] = grid
    if param:
        params["params"] = _fixed(param)
    run = run_backtest_workflow(params, progress=not json_output, allow_failed_quality=allow_failed_quality)
    m = run.metrics
    for warning in run.warnings:
        typer.echo(f"WARNING: {warning}", err=True)
    emit(run.to_dict(), json_output,
         f"registered {run.model_name} version {run.model_version} (run {run.run_id})\n"
         f"chosen {run.chosen}: OOS Sharpe {m['sharpe']:.2f}, return {m['total_return']:.2%}, "
         f"max drawdown {m['max_drawdown']:.2%}, {int(m['trade_count'])} trades\n"
         f"report {run.report_path}")


def gates_command(
    model: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Option("--version", help="model version")],
    stage: Annotated[str, typer.Option("--stage", help="paper or live: whose policy in force judges it")],
    policy: Annotated[Path | None, typer.Option(
        "--policy", help="gate policy YAML (of that stage) for a what-if evaluation: reported, never recorded "
                         "(default: the stage's policy in force, $TOOLKIT_POLICY_PAPER / $TOOLKIT_POLICY_LIVE "
                         "or shipped, whose verdict is recorded)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Evaluate the promotion gates of a version at a stage (papermill report); record the stage's verdict."""
    from toolkit.workflows.gates import run_gates_workflow

    result = run_gates_workflow(model, version, stage, policy_path=policy)
    lines = [f"{model} version {result.version}: {stage} verdict {result.verdict} "
             f"(verdict sha {short(result.verdict_sha)}, policy {short(result.policy_sha)})"
             + ("" if result.recorded else " — WHAT-IF under another policy: not recorded in the registry")]
    for g in result.gates:
        mark = ("PASS" if g.get("passed") else "FAIL") + ("" if g.get("enforced", True) else " (advisory)")
        lines.append(f"  {mark:<15} {g.get('name', '?'):<20} {g.get('explanation', '')}")
    lines.append(f"report {result.report_path}")
    emit(result.to_dict(), json_output, "\n".join(lines))
    if not result.passed:
        raise GateFailed(f"{model} version {result.version} failed the {stage} gates: {', '.join(result.failed)}")


def attribute_journal_command(
    journal: Annotated[Path, typer.Option("--journal", help="the runner's journal (SQLite, read-only)")],
    no_report: Annotated[bool, typer.Option("--no-report", help="compute only: no template, no HTML")] = False,
    no_record: Annotated[bool, typer.Option("--no-record", help="write nothing to MLflow")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the results as JSON")] = False,
) -> None:
    """Attribute every deployment of a journal (the latest version each traded): the morning run a scheduler
    calls. Exits non-zero when any deployment failed, after attributing the others."""
    from toolkit.errors import ToolkitError
    from toolkit.workflows.attribution import attribute_journal

    results = attribute_journal(journal, report=not no_report, record=not no_record)
    if not results:
        from toolkit.errors import ConfigurationError

        raise ConfigurationError("journal", "a journal with at least one decision", str(journal))
    failed = [(d, m, r) for d, m, r in results if isinstance(r, ToolkitError)]
    payload = [{"deployment": d, "model": m, **({"error": str(r)} if isinstance(r, ToolkitError) else r.to_dict())}
               for d, m, r in results]
    emit(payload, json_output, "\n".join(
        f"{d} ({m}): " + (f"FAILED: {r}" if isinstance(r, ToolkitError) else r.sentence) for d, m, r in results))
    if failed:
        raise failed[0][2]


def attribute_command(
    model: Annotated[str, typer.Argument(help="registered model the journal's deployment trades")],
    journal: Annotated[Path, typer.Option("--journal", help="the runner's journal (SQLite, read-only)")],
    version: Annotated[str | None, typer.Option("--version", help="model version (default: the latest the "
                                                                  "journal traded)")] = None,
    start: Annotated[str | None, typer.Option(help="period start, UTC (default: the first decision)")] = None,
    end: Annotated[str | None, typer.Option(help="period end, excluded (default: after the last decision)")] = None,
    capital: Annotated[float | None, typer.Option(help="the deployment's capital (default: inferred from its "
                                                       "first order from flat)")] = None,
    quotes: Annotated[Path | None, typer.Option(help="Parquet of best bid/ask by time (splits trading cost)")]
    = None,
    deployment: Annotated[str | None, typer.Option(help="the journal's deployment (default: the one trading "
                                                        "the model)")] = None,
    execution_tolerance_bps: Annotated[float | None, typer.Option(
        "--execution-tolerance-bps", help="mean cost above the fill model (bps) before execution is 'worse' "
        "(default: the paper policy's paper_record.execution_tolerance_bps; the gate accepts only that)")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="compute only: no template, no HTML")] = False,
    no_record: Annotated[bool, typer.Option("--no-record", help="write nothing to MLflow")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Attribute a deployed version's record: shortfall, live vs backtest, edge or execution, drawdowns.

    A scheduler runs it every morning per deployed version; the report index shows the latest. The paper
    stage's record is what the live stage's paper_record gate reads.
    """
    from toolkit.workflows.attribution import run_attribution_workflow

    run = run_attribution_workflow(model, journal, version=version, start=start, end=end, capital=capital,
                                   quotes=quotes, deployment=deployment, report=not no_report, record=not no_record,
                                   execution_tolerance_bps=execution_tolerance_bps)
    s = run.summary
    emit(run.to_dict(), json_output,
         f"{run.sentence}\n"
         f"shortfall {s['shortfall']['orders']} orders, {s['shortfall']['total']:+,.2f} quote "
         f"({'n/a' if s['shortfall']['total_bps'] is None else format(s['shortfall']['total_bps'], '+.1f')} bps); "
         f"live − backtest {s['pnl']['gap']:+,.2f} = signal {s['pnl']['signal']:+,.2f} + execution "
         f"{s['pnl']['execution']:+,.2f} + fees {s['pnl']['fees']:+,.2f} + residual {s['pnl']['residual']:+.2g}\n"
         + (f"run {run.run_id} ({run.stage})\n" if run.run_id else "")
         + (f"report {run.report_path}" if run.report_path else ""))


def incident_command(
    incident: Annotated[int, typer.Argument(help="the incident id (`runner incidents --all` lists them)")],
    journal: Annotated[Path, typer.Option("--journal", help="the runner's journal (SQLite, read-only)")],
    hours: Annotated[float, typer.Option(help="window: hours before it opened and after it was resolved")] = 6.0,
    deployment: Annotated[str | None, typer.Option(help="for an account-wide incident in a journal of several "
                                                        "deployments: whose PnL to show")] = None,
    symbol: Annotated[str | None, typer.Option(help="the market (default: the deployment's orders say)")] = None,
    capital: Annotated[float | None, typer.Option(help="the deployment's capital, for bps (default: inferred "
                                                       "from its first order from flat)")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="compute only: no template, no HTML")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Report one runner incident: timeline, market context, what the runner did, PnL impact (HTML under reports/).

    The on-call engineer's first page and the desk's next-morning read; the report index lists it.
    """
    from toolkit.workflows.incident import run_incident_workflow

    run = run_incident_workflow(incident, journal, hours=hours, deployment=deployment, symbol=symbol,
                                capital=capital, report=not no_report)
    emit(run.to_dict(), json_output, run.summary + (f"\nreport {run.report_path}" if run.report_path else ""))


def demo_command(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Run the main job on the bundled data: backtest, gates, promotion, index of reports."""
    from toolkit.workflows.demo import run_demo

    result = run_demo(echo=None if json_output else typer.echo)
    if json_output:
        emit(result, True, "")


def register(app: typer.Typer) -> None:
    """Add the ``backtest``, ``gates``, ``demo``, ``attribute``, ``incident`` and ``study`` commands to ``app``."""
    app.command("backtest")(backtest_command)
    app.command("gates")(gates_command)
    app.command("demo")(demo_command)
    app.command("attribute")(attribute_command)
    app.command("attribute-journal")(attribute_journal_command)
    app.command("incident")(incident_command)
    app.command("study")(study_command)
