"""The ``toolkit`` command line: one entry point mounting each area's thin commands.

Errors are mapped to exit codes in one place (``main``): a ``ToolkitError`` prints its
message on stderr and exits with its class's code; a usage error exits 2 with click's
message; Ctrl-C exits 130 with one line. With ``--json``, a failure also prints a JSON
error object on stdout (unless the command already printed its own JSON document), so a
script always gets JSON there. A command's own exit status (``toolkit data check`` exits
1 when the certificate fails) reaches the process.

Mounting the commands imports none of their dependencies: each command imports what it needs
when it runs (``tests/test_entry_point.py`` checks that ``toolkit --help`` loads no pandas, ccxt,
MLflow, papermill or vectorbt), and the process freezes its objects before it exits (``cli``).
When a ``toolkit warm`` server runs for this install, ``cli`` hands the command to it instead
(:mod:`toolkit.warm.client`).
"""

from __future__ import annotations

import gc
import json
import sys
from typing import Annotated, Any

import typer

from toolkit.cli_support import emit, json_emitted, reset
from toolkit.errors import ToolkitError, interrupted

__all__ = ["app", "cli", "main", "serve_warm"]

app = typer.Typer(help="Research-to-production toolkit for a digital-asset trading desk.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Market data: quality certificates and fetching.", no_args_is_help=True)
report_app = typer.Typer(help="Rendered reports.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(report_app, name="report")
INTERRUPTED = 130
_registered = {"done": False}


@report_app.command("index")
def report_index(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Rebuild reports/index.html from the report log, the desk overview refreshed from the registry."""
    from toolkit.reporting.index import write_index
    from toolkit.workflows.overview import refresh_overview

    refresh_overview()
    path = write_index()
    emit({"index": str(path)}, json_output, f"index {path}")


def _register() -> None:
    """Mount the commands of every area (once)."""
    if _registered["done"]:
        return
    from toolkit.data.fetch_cli import fetch_command
    from toolkit.data.quality_cli import check_command
    from toolkit.emulator.cli import app as emulator_app
    from toolkit.ops.cli import register as register_ops
    from toolkit.registry.cli import register as register_registry
    from toolkit.warm.cli import app as warm_app
    from toolkit.workflows.cli import register as register_workflows

    data_app.command("check", help="Certify bars: gaps, duplicates, OHLC consistency, flat runs, outliers.")(
        check_command)
    data_app.command("fetch", help="Fetch OHLCV through ccxt into the bar store (resumable).")(fetch_command)
    app.add_typer(emulator_app, name="emulator", help="The loopback Binance-compatible exchange emulator.")
    register_workflows(app)
    register_registry(app)
    register_ops(app)
    app.add_typer(warm_app, name="warm")
    _registered["done"] = True


def _error_object(kind: str, message: str, code: int, exc: BaseException | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": kind, "message": message, "exit_code": code}
    for name in ("field", "expected", "found"):
        if exc is not None and hasattr(exc, name):
            err[name] = getattr(exc, name)
    return {"error": err}


def _fail(as_json: bool, kind: str, message: str, code: int, exc: BaseException | None = None) -> int:
    typer.echo(f"error: {message}", err=True)
    if as_json and not json_emitted():
        typer.echo(json.dumps(_error_object(kind, message, code, exc), indent=2, sort_keys=True, default=str))
    return code


def _interrupted(as_json: bool) -> int:
    return _fail(as_json, "Interrupted", "interrupted (Ctrl-C); nothing half-written was kept", INTERRUPTED)


def _is_parameter_error(exc: BaseException) -> bool:
    """Return whether ``exc`` is a strategy's ``ParameterError`` (a bad parameter: exit 2).

    Only a command that imported ``toolkit.strategies`` can raise one, so the entry point does not
    import it (nor numpy, pandas and numba with it) to ask.
    """
    strategies = sys.modules.get("toolkit.strategies")
    return strategies is not None and isinstance(exc, strategies.ParameterError)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the process exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    reset()
    _register()
    try:
        rv = app(args=args, standalone_mode=False, prog_name="toolkit")
    except ToolkitError as exc:
        return _fail(as_json, type(exc).__name__, str(exc), exc.exit_code, exc)
    except (KeyboardInterrupt, typer.Abort):
        return _interrupted(as_json)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except Exception as exc:
        if interrupted(exc):  # a Ctrl-C Python reported as another error (see toolkit.errors.interrupted)
            return _interrupted(as_json)
        if _is_parameter_error(exc):
            return _fail(as_json, "ConfigurationError", str(exc), 2, exc)
        # usage errors: typer vendors click as typer._click, so match by shape
        show, usage_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(usage_code, int):
            show()
            if as_json and not json_emitted():
                fmt = getattr(exc, "format_message", None)
                message = str(fmt() if callable(fmt) else exc)
                typer.echo(json.dumps(_error_object("UsageError", message, usage_code), indent=2, sort_keys=True))
            return usage_code
        raise
    if rv == INTERRUPTED:  # typer turns Ctrl-C inside a command into Exit(130) and returns it
        return _interrupted(as_json)
    return int(rv) if isinstance(rv, int) else 0


def serve_warm(argv: list[str]) -> int:
    """Run the ``toolkit warm`` server (``toolkit warm start`` launches it): its workers run :func:`main`."""
    from toolkit.warm.server import serve_main

    return serve_main(argv, main, _register)


def cli() -> None:
    """Console-script entry point: the command runs in a ``toolkit warm`` worker when a server runs, else here."""
    from toolkit.warm.client import run_warm

    code = run_warm(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    code = main()
    # The process ends here. Its finalisation would run full garbage collections over every object
    # the command imported (about 1 s after mlflow, papermill and pandas, 2 s with vectorbt); frozen
    # objects are left alone, so it exits at once. atexit handlers (MLflow's among them) still run.
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":  # python -m toolkit.cli
    cli()
