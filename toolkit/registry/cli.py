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


def format_status(st: dict[str, Any]) -> str:
    """Render ``promotion.status`` output as a fixed-width table a person can read."""
    lines = [f"WARNING: {w}" for w in st.get("warnings", [])]
    lines += [f"model {st['model']}: champion {st['champion'] or '-'}, candidate {st['candidate'] or '-'}",
             f"promotions {st['metrics']['promotions']}, rollbacks {st['metrics']['rollbacks']}, "
             f"last cycle {_hours(st['metrics']['last_cycle_hours'])}, "
             f"median cycle {_hours(st['metrics']['median_cycle_hours'])}",
             "",
             f"{'ver':>4}  {'aliases':<20} {'verdict':<14} {'evaluated':<21} {'policy':<12} "
             f"{'state':<12} {'promoted by':<40}"]
    for r in st["versions"]:
        p, g = r["promotion"], r["gate"]
        who = f"{_ts(p['promoted_at'])} {p['promoted_by'] or ''}".strip()
        aliases = ",".join(r["aliases"]) or "-"
        lines.append(f"{r['version']:>4}  {aliases:<20} {g['verdict']:<14} {_ts(g['evaluated_at']):<21} "
                     f"{_short(g['policy_sha']):<12} {p['state'] or '-':<12} {who:<40}")
    lines += ["", f"audit trail {st['audit_path']} (chain {st['audit_chain']}), "
                  f"last {len(st['audit'])} events:"]
    for e in st["audit"]:
        lines.append(f"  {_ts(e['at'])}  {e['action']:<8} {e['outcome']:<8} {e['from_version'] or '-'} -> "
                     f"{e['to_version'] or '-'}  by {e['actor']}: {e['reason']}"
                     + (f"  [{e['detail']}]" if e["detail"] else ""))
    return "\n".join(lines)


def _ts(iso: str | None) -> str:
    """Return an ISO time cut to seconds, marked UTC (``2026-11-25T02:59:58Z``)."""
    return f"{iso[:19]}Z" if iso else "-"


def _hours(h: float | None) -> str:
    return "-" if h is None else f"{h:.2f} h"


def promote_command(
    model: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Option("--version", help="model version to make champion")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit trail)")],
    actor: Annotated[str | None, typer.Option("--actor", help="who (default $USER)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Set alias champion on a version whose verdict passed under the policy in force; audit it.

    The policy in force is ``$TOOLKIT_POLICY`` (a path), else the shipped default; it cannot be
    chosen on the command line.
    """
    from toolkit.registry.promotion import promote

    result = promote(model, version, reason, actor=actor)
    if json_output:
        emit(result, True, "")
    else:
        typer.echo(f"{model}: champion {result['from_version'] or '-'} -> {result['to_version']} by "
                   f"{result['actor']} at {result['at']} (verdict {_short(result['verdict_sha'])}, "
                   f"{result['cycle_hours']:.2f} h from registration)")
    if result.get("bookkeeping_error"):
        typer.echo(f"warning: promotion done, but logging the promotion-cycle figures failed: "
                   f"{result['bookkeeping_error']}", err=True)


def rollback_command(
    model: Annotated[str, typer.Argument(help="registered model name")],
    reason: Annotated[str, typer.Option("--reason", help="why (kept in the audit trail)")],
    actor: Annotated[str | None, typer.Option("--actor", help="who (default $USER)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Move alias champion back to the version the current champion replaced; audit it."""
    from toolkit.registry.promotion import rollback

    result = rollback(model, reason, actor=actor)
    if json_output:
        emit(result, True, "")
    else:
        typer.echo(f"{model}: champion {result['from_version']} -> {result['to_version']} (rollback) by "
                   f"{result['actor']} at {result['at']}")
    if result.get("bookkeeping_error"):
        typer.echo(f"warning: rollback done, but logging the promotion-cycle figures failed: "
                   f"{result['bookkeeping_error']}", err=True)


def status_command(
    model: Annotated[str, typer.Argument(help="registered model name")],
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Show versions, aliases, verdicts, who promoted what when, and the promotion-cycle figures."""
    from toolkit.registry.status import status

    st = status(model)
    emit(st, json_output, format_status(st) if not json_output else "")


def register(app: typer.Typer) -> None:
    """Add the ``promote``, ``rollback`` and ``status`` commands to ``app``."""
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)
    app.command("status")(status_command)
