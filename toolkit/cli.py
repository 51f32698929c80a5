"""The ``toolkit`` command line: thin wrappers over toolkit functions.

Every command has ``--help``; most have ``--json`` for machine output. Errors are
mapped to exit codes in one place (``main``): a ``ToolkitError`` prints its
message on stderr and exits with its class's code; nothing else decides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from toolkit.errors import ToolkitError

__all__ = ["app", "main"]

app = typer.Typer(help="Research-to-production toolkit for a digital-asset trading desk.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Market data: quality certificates and fetching.", no_args_is_help=True)
report_app = typer.Typer(help="Rendered reports.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(report_app, name="report")


def _emit(payload: dict[str, Any], as_json: bool, human: str) -> None:
    if as_json:
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
    else:
        typer.echo(human)


def _register_optional() -> None:
    """Mount the commands of areas that provide them (data check/fetch, emulator, gates)."""
    from toolkit.data.quality_cli import check_command

    data_app.command("check", help="Certify bars: gaps, duplicates, OHLC consistency, flat runs, outliers.")(
        check_command)
    try:
        from toolkit.data.fetch_cli import fetch_command
    except ImportError:  # pragma: no cover - area not installed
        pass
    else:
        data_app.command("fetch", help="Fetch OHLCV through ccxt into the bar store (resumable).")(fetch_command)
    try:
        from toolkit.emulator.cli import app as emulator_app
    except ImportError:  # pragma: no cover
        pass
    else:
        app.add_typer(emulator_app, name="emulator", help="The loopback Binance-compatible exchange emulator.")
    try:
        from toolkit.registry.cli import register as register_gates
    except ImportError:  # pragma: no cover
        pass
    else:
        register_gates(app)


def _params(items: list[str] | None) -> dict[str, Any]:
    from toolkit.backtest.config import parse_grid

    return {k: v[0] for k, v in parse_grid(items).items()} if items else {}


@app.command()
def backtest(
    strategy: Annotated[str, typer.Option(help="ma_cross | donchian | bollinger")],
    symbol: Annotated[str, typer.Option(help="ccxt symbol")] = "BTC/USDT",
    timeframe: Annotated[str, typer.Option(help="bar timeframe (1m, 15m, 1h, 4h, 1d …)")] = "15m",
    start: Annotated[str | None, typer.Option(help="first day (UTC)")] = None,
    end: Annotated[str | None, typer.Option(help="last day (UTC), included")] = None,
    grid: Annotated[list[str] | None, typer.Option(help="NAME=V1,V2,… (repeatable)")] = None,
    param: Annotated[list[str] | None, typer.Option(help="fixed NAME=VALUE (repeatable)")] = None,
    taker_fee: Annotated[float | None, typer.Option(help="taker fee fraction (0.001 = 0.1%)")] = None,
    maker_fee: Annotated[float | None, typer.Option(help="maker fee fraction")] = None,
    spread_share: Annotated[float | None, typer.Option(help="share of the bar spread estimate paid")] = None,
    impact_coef: Annotated[float | None, typer.Option(help="square-root impact constant")] = None,
    capital: Annotated[float | None, typer.Option(help="capital allocation (quote currency)")] = None,
    split: Annotated[float | None, typer.Option(help="in-sample share (0-1)")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment")] = None,
    model_name: Annotated[str | None, typer.Option(help="registered model name")] = None,
    bars_file: Annotated[Path | None, typer.Option(help="backtest this OHLCV file (Parquet/CSV)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Run the backtest template (papermill), render its HTML report and register the version in MLflow."""
    from toolkit.reporting.backtest import backtest_report

    params: dict[str, Any] = {"strategy": strategy, "symbol": symbol, "timeframe": timeframe,
                              "start": start, "end": end}
    optional = {"taker_fee": taker_fee, "maker_fee": maker_fee, "spread_share": spread_share,
                "impact_coef": impact_coef, "capital": capital, "split": split, "experiment": experiment,
                "model_name": model_name, "bars_file": str(bars_file) if bars_file else None}
    params.update({k: v for k, v in optional.items() if v is not None})
    if grid is not None:
        params["grid"] = grid
    if param:
        params["params"] = _params(param)
    result = backtest_report(params, progress=not json_output)
    m = result["metrics"]
    _emit(result, json_output,
          f"registered {result['model_name']} version {result['model_version']} (run {result['run_id']})\n"
          f"chosen {result['chosen']}: OOS Sharpe {m['sharpe']:.2f}, return {m['total_return']:.2%}, "
          f"max drawdown {m['max_drawdown']:.2%}, {int(m['trade_count'])} trades\n"
          f"report {result['report_path']}")


@report_app.command("index")
def report_index(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Rebuild reports/index.html from the report log."""
    from toolkit.reporting.notebooks import write_index

    path = write_index()
    _emit({"index": str(path)}, json_output, f"index {path}")


@app.command()
def demo(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Run the main job on the bundled data: backtest, gates, promotion, index of reports."""
    from toolkit.demo import run_demo

    result = run_demo(echo=None if json_output else typer.echo)
    if json_output:
        typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map toolkit errors to exit codes and clear messages."""
    from toolkit.strategies import ParameterError

    _register_optional()
    try:
        app(args=argv, standalone_mode=False)
    except (ToolkitError, ParameterError) as exc:
        code = exc.exit_code if isinstance(exc, ToolkitError) else 2
        typer.echo(f"error: {exc}", err=True)
        return code
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as exc:  # usage errors: typer 0.29 vendors click as typer._click, so match by shape
        show, usage_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(usage_code, int):
            show()
            return usage_code
        raise
    return 0


def cli() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # python -m toolkit.cli
    cli()
