"""``toolkit promote | rollback | status``: thin wrappers over the registry functions.

Exit codes come from the error classes (``toolkit.cli.main`` maps them): a refused
promote or rollback exits with ``PromotionRefused`` (6), an unknown model or version
with ``ConfigurationError`` (2). With ``--json`` a failure prints a JSON error object on
stdout (``toolkit.cli.main``). ``toolkit gates`` is a workflow (``toolkit.workflows.cli``).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from toolkit.cli_support import emit
from toolkit.cli_support import short as _short

__all__ = ["format_status", "register"]


def _holder_line(alias: str, h: dict[str, Any] | None) -> str:
    if h is None:
        return f"{alias}: -"
    return f"{alias}: version {h['version']} since {_ts(h['promoted_at'])} by {h['promoted_by'] or '?'}"


def _verdict_line(stage: str, lv: dict[str, Any] | None) -> str:
    if lv is None:
        return f"latest {stage} verdict: none yet"
    return (f"latest {stage} verdict: version {lv['version']} {lv['verdict']} at {_ts(lv['evaluated_at'])} "
            f"(verdict {_short(lv['verdict_sha'])})")


def format_status(st: dict[str, Any]) -> str:
    """Render ``status`` output as lines and a fixed-width table a person can read."""
    lines = [f"WARNING: {w}" for w in st.get("warnings", [])]
    lines += [f"model {st['model']}",
              "  " + _holder_line("paper", st["paper"]),
              "  " + _holder_line("champion", st["champion"]),
              *("  " + _verdict_line(stage, st["latest_verdicts"][stage]) for stage in ("paper", "live"))]
    live = st.get("live")
    if live is not None:
        lines.append(f"  live: version {live['version']} "
                     + ("is eligible as far as the registry's tags say (promote re-checks everything)"
                        if live["eligible"] else "is not eligible for live:"))
        lines += [f"    - {why}" for why in live["why_not"]]
    for stage in ("paper", "live"):
        m = st["metrics"][stage]
        lines.append(f"  {stage} cycle: promotions {m['promotions']}, rollbacks {m['rollbacks']}, "
                     f"last cycle {_hours(m['last_cycle_hours'])}, median cycle {_hours(m['median_cycle_hours'])}")
    lines += ["", f"{'ver':>4}  {'aliases':<16} {'paper verdict':<14} {'live verdict':<14} {'paper state':<12} "
                  f"{'live state':<12} {'evaluated (live)':<21}"]
    for r in st["versions"]:
        g, p = r["gate"], r["promotion"]
        aliases = ",".join(r["aliases"]) or "-"
        lines.append(f"{r['version']:>4}  {aliases:<16} {g['paper']['verdict']:<14} {g['live']['verdict']:<14} "
                     f"{p['paper']['state'] or '-':<12} {p['live']['state'] or '-':<12} "
                     f"{_ts(g['live']['evaluated_at']):<21}")
    lines += ["", f"audit trail {st['audit_path']} (chain {st['audit_chain']}), "
                  f"last {len(st['audit'])} events:"]
    for e in st["audit"]:
        lines.append(f"  {_ts(e['at'])}  {e.get('stage') or '-':<5} {e['action']:<8} {e['outcome']:<8} "
                     f"{e['from_version'] or '-'} -> {e['to_version'] or '-'}  by {e['actor']}: {e['reason']}"
                     + (f"  [{e['detail']}]" if e["detail"] else ""))
    return "\n".join(lines)


def _ts(iso: str | None) -> str:
    """Return an ISO time cut to seconds, marked UTC (``2026-11-25T02:59:58Z``)."""
    return f"{iso[:19]}Z" if iso else "-"


def _hours(h: float | None) -> str:
    return "-" if h is None else f"{h:.2f} h"


STAGE_HELP = "paper (moves alias paper) or live (moves alias champion)"


def promote_command(
    model: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Option("--version", help="model version to promote")],
    stage: Annotated[str, typer.Option("--stage", help=STAGE_HELP)],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit trail)")],
    actor: Annotated[str | None, typer.Option("--actor", help="who (default $USER)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Move the stage's alias to a version whose verdict passed under the stage's policy in force; audit it.

    The policy in force is ``$TOOLKIT_POLICY_PAPER`` / ``$TOOLKIT_POLICY_LIVE`` (a path), else the shipped
    one; it cannot be chosen on the command line. Live needs a version that holds (or held) alias paper.
    """
    from toolkit.registry.promotion import promote

    result = promote(model, version, stage, reason, actor=actor)
    if json_output:
        emit(result, True, "")
    else:
        typer.echo(f"{model}: {result['alias']} {result['from_version'] or '-'} -> {result['to_version']} by "
                   f"{result['actor']} at {result['at']} (verdict {_short(result['verdict_sha'])}, "
                   f"{result['cycle_hours']:.2f} h from registration)")
    if result.get("bookkeeping_error"):
        typer.echo(f"warning: promotion done, but logging the promotion-cycle figures failed: "
                   f"{result['bookkeeping_error']}", err=True)


def rollback_command(
    model: Annotated[str, typer.Argument(help="registered model name")],
    stage: Annotated[str, typer.Option("--stage", help=STAGE_HELP)],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit trail)")],
    actor: Annotated[str | None, typer.Option("--actor", help="who (default $USER)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Move the stage's alias back to the version its holder replaced; audit it."""
    from toolkit.registry.promotion import rollback

    result = rollback(model, stage, reason, actor=actor)
    if json_output:
        emit(result, True, "")
    else:
        typer.echo(f"{model}: {result['alias']} {result['from_version']} -> {result['to_version']} (rollback) by "
                   f"{result['actor']} at {result['at']}")
    if result.get("bookkeeping_error"):
        typer.echo(f"warning: rollback done, but logging the promotion-cycle figures failed: "
                   f"{result['bookkeeping_error']}", err=True)


def status_command(
    model: Annotated[str, typer.Argument(help="registered model name")],
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Show both aliases (who, when), verdicts per stage, why a version is not eligible for live, the figures."""
    from toolkit.registry.status import status

    st = status(model)
    emit(st, json_output, format_status(st) if not json_output else "")


registry_app = typer.Typer(help="The desk's shared registry on loopback: PostgreSQL + mlflow server.",
                           no_args_is_help=True)


@registry_app.command("up")
def registry_up_command(
    auth: Annotated[bool, typer.Option("--auth", help="run MLflow's basic-auth app (admin password from "
                                       "MLFLOW_AUTH_ADMIN_PASSWORD)")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="print the endpoints as JSON")] = False,
) -> None:
    """Start PostgreSQL and mlflow server on loopback (state in mlflow/server); print the variables to export.

    The first line is ``MLFLOW_TRACKING_URI=http://127.0.0.1:PORT``; ``TOOLKIT_DATABASE_URL`` and
    ``PGPASSFILE`` follow (the password stays in that file). Already running: prints the same lines.
    """
    from toolkit.registry.server import up

    ep = up(auth=auth)
    emit(ep.to_dict(), json_output, "\n".join(ep.lines()))


@registry_app.command("down")
def registry_down_command(
    json_output: Annotated[bool, typer.Option("--json", help="print what was stopped as JSON")] = False,
) -> None:
    """Stop the server and PostgreSQL started by ``toolkit registry up``; check nothing is left running."""
    from toolkit.registry.server import down

    stopped = down()
    emit({"stopped": stopped}, json_output, "\n".join(stopped) or "nothing was running")


def register(app: typer.Typer) -> None:
    """Add the ``promote``, ``rollback``, ``status`` and ``registry up|down`` commands to ``app``."""
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("status")(status_command)
    app.add_typer(registry_app, name="registry")
