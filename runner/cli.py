"""``runner start|status|stop|resolve``: a thin CLI over :class:`runner.engine.Runner` and the journal.

Exit statuses: 0 ok (a requested stop included), 2 bad configuration or environment (the
message names the field), 4 registry unreachable, 9 halted on an operational exchange
error, 75 temporary, 130 interrupted before trading started. Errors print one line on
stderr (``error: <field>: expected …, found …``); with ``--json`` (status) an error object
on stdout. Credentials never appear in any output: they are read from the environment
only, and the exchange adapter scrubs them from error messages.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from runner.config import RunnerConfig, load_config
from toolkit.errors import ConfigurationError, ToolkitError

__all__ = ["app", "main", "status_report"]

app = typer.Typer(help="The live runner: trades the versions its config deploys.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="the runner's TOML file")]


def _pid_path(cfg: RunnerConfig) -> Path:
    return cfg.journal.with_name(cfg.journal.name + ".pid")


class _Log(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, wall), ``level``, ``logger``, then the event's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        head = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(), "logger": record.name}
        msg = record.getMessage()
        if msg.startswith("{"):
            try:
                return json.dumps({**head, **json.loads(msg)}, default=str)
            except ValueError:
                pass
        doc = {**head, "event": "log", "message": msg}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


@app.command()
def start(config: ConfigOption) -> None:
    """Start trading (foreground; stops cleanly on SIGTERM or SIGINT)."""
    from runner.engine import Runner, RunnerHalted

    cfg = load_config(config)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Log())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
    for noisy in ("urllib3", "mlflow", "alembic", "toolkit.exchange"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    pid_file = _pid_path(cfg)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with pid_file.open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigurationError("journal", "a journal no other runner is using", str(cfg.journal)) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        runner = Runner(cfg)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: runner.stop())
        signal.signal(signal.SIGUSR1, lambda *_: runner.request_kill())  # `runner kill`: the journal holds it
        try:
            runner.open()
            typer.echo(json.dumps({"event": "started", "pid": os.getpid(), "metrics_port": runner.metrics.port,
                                   "deployments": {n: {"model": v.model, "alias": v.alias, "version": v.version}
                                                   for n, v in runner.versions.items()}}), nl=True)
            sys.stdout.flush()
            runner.run()
        finally:
            runner.close()
            fh.seek(0)
            fh.truncate()
        if runner.killed is not None:
            raise RunnerHalted(f"kill switch (incident {runner.killed}): every position flattened, trading halted; "
                               f"`runner resolve --config {config} {runner.killed} --note ...` lifts it")
        typer.echo(json.dumps({"event": "stopped", "cycles": runner.cycles}))


def status_report(cfg: RunnerConfig) -> dict[str, Any]:
    """Return what the journal says: per deployment its version, last decision, position; the intraday risk
    posture (``runner.posture``); open incidents."""
    from runner.journal import Journal

    if not cfg.journal.exists():
        return {"journal": str(cfg.journal), "running": _running_pid(cfg) is not None, "deployments": {},
                "open_incidents": [], "heartbeat": None}
    j = Journal(cfg.journal)
    try:
        deployments = {}
        for d in cfg.deployments:
            last = j.last_decision(d.name)
            pos = j.position(d.name, d.base, d.quote)
            deployments[d.name] = {
                "model": d.model, "alias": d.alias, "symbol": d.symbol, "version": j.current_version(d.name),
                "position": str(pos.base), "quote_flow": str(pos.quote_flow),
                "decisions": len(j.decisions(d.name)), "orders": len(j.orders(d.name)),
                "last_decision": None if last is None else {
                    k: last[k] for k in ("bar_time", "decided_at", "direction", "target", "exec_state", "version")}}
        heartbeat = j.get_meta("heartbeat")
        from runner.posture import posture

        return {"journal": str(cfg.journal), "schema_version": j.schema_version, "pid": _running_pid(cfg),
                "running": _running_pid(cfg) is not None, "deployments": deployments, "posture": posture(cfg, j),
                "open_incidents": j.incidents(open_only=True),
                "heartbeat": None if heartbeat is None else json.loads(heartbeat)}
    finally:
        j.close()


def _running_pid(cfg: RunnerConfig) -> int | None:
    """Return the pid of the runner holding the journal's lock, or None."""
    path = _pid_path(cfg)
    if not path.exists():
        return None
    with path.open("a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


@app.command()
def status(config: ConfigOption, json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the deployments' versions, positions and last decisions, and the open incidents."""
    report = status_report(load_config(config))
    if json_output:
        typer.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
        return
    state = f"running, pid {report.get('pid')}" if report["running"] else "not running"
    typer.echo(f"journal {report['journal']}: {state}")
    for name, d in report["deployments"].items():
        typer.echo(f"  {name}: {d['model']}@{d['alias']} version {d['version']} {d['symbol']} position {d['position']}"
                   f" decisions {d['decisions']} orders {d['orders']}")
    if "posture" in report:
        for line in _posture_lines(report["posture"]):
            typer.echo(line)
    for inc in report["open_incidents"]:
        typer.echo(f"  incident {inc['id']} [{inc['severity']}] {inc['kind']}: {inc['message']}")


def _fmt(x: float | None, spec: str = ",.2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _posture_lines(p: dict[str, Any]) -> list[str]:
    """The risk posture as text: one line per deployment, one for the account."""
    out = ["risk posture (quote currency):"]
    for name, d in p["deployments"].items():
        cuts = "".join(f" {a}×{f:g}" for a, f in d["derisk"].items())
        out.append(f"  {name}: exposure {_fmt(d['exposure'])} intraday PnL {_fmt(d['intraday_pnl'])} "
                   f"drawdown {_fmt(d['drawdown_pct'], '.2f')} % of limit {d['drawdown_limit_pct']:g} % "
                   f"({d['drawdown_limit_source']}) VaR99 1d {_fmt(d['var_1d'])} of limit {_fmt(d['var_limit'])} "
                   f"open orders {d['open_orders']} reconciled {_ms_iso(d['last_reconciliation']) or 'never'} "
                   f"drift {_fmt(d['drift_pct'], '.4f')} %" + (f" de-risked:{cuts}" if cuts else ""))
    a = p["account"]
    out.append(f"  account: exposure {_fmt(a['exposure'])} intraday PnL {_fmt(a['intraday_pnl'])} "
               f"VaR99 1d {_fmt(a['var_1d'])} of limit {_fmt(a['var_limit'])} open orders {a['open_orders']} "
               f"reconciled {_ms_iso(a['last_reconciliation']) or 'never'}")
    out.append(f"  VaR: {p['var_method']}")
    return out


@app.command()
def stop(config: ConfigOption, timeout: Annotated[float, typer.Option(help="seconds to wait")] = 60.0) -> None:
    """Ask the running runner to stop (SIGTERM) and wait for it."""
    cfg = load_config(config)
    pid = _running_pid(cfg)
    if pid is None:
        typer.echo("not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _running_pid(cfg) is None:
            typer.echo(f"stopped (pid {pid})")
            return
        time.sleep(0.1)
    raise ToolkitError(f"runner pid {pid} did not stop within {timeout:.0f} s")


@app.command()
def kill(config: ConfigOption, reason: Annotated[str, typer.Option(help="why (journaled)")],
         timeout: Annotated[float, typer.Option(help="seconds to wait for the runner")] = 120.0) -> None:
    """Kill switch: flatten every deployment and halt (the running runner does it; else this command)."""
    from runner import protect
    from runner.engine import KILL, Runner
    from runner.journal import Journal

    cfg = load_config(config)
    if not reason.strip():
        raise ConfigurationError("reason", "why the kill switch is pulled", reason)
    j = Journal(cfg.journal)
    try:
        incident = j.open_incident(int(time.time() * 1000), KILL, "halt", f"operator: {reason}")
    finally:
        j.close()
    pid = _running_pid(cfg)
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _running_pid(cfg) is None:
                break
            time.sleep(0.1)
        else:
            raise ToolkitError(f"runner pid {pid} did not flatten and stop within {timeout:.0f} s; the kill switch "
                               f"(incident {incident}) stays open and any runner started will execute it")
        done_by = f"runner pid {pid}"
    else:
        pid_file = _pid_path(cfg)
        with pid_file.open("a+") as fh:  # no runner may start while this command trades
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigurationError("journal", "a journal no other runner is using", str(cfg.journal)) from None
            runner = Runner(cfg)
            try:
                runner.open(versions=False)
                protect.check_kill(runner)
            finally:
                runner.close()
        done_by = "this command (no runner was running)"
    j = Journal(cfg.journal)
    try:
        done = j.get_meta(f"kill_done:{incident}")
        positions = {d.name: str(j.position(d.name, d.base, d.quote).base) for d in cfg.deployments}
    finally:
        j.close()
    typer.echo(json.dumps({"event": "killed" if done else "kill_pending", "incident": incident, "by": done_by,
                           "positions": positions}))
    if not done:
        raise ToolkitError(f"the kill switch (incident {incident}) is recorded but was not executed; any runner "
                           "started will execute it")


@app.command()
def resolve(config: ConfigOption, incident: Annotated[int, typer.Argument(help="incident id")],
            note: Annotated[str, typer.Option(help="what was done")]) -> None:
    """Mark an incident resolved (a blocking one then stops blocking new orders)."""
    from runner.journal import Journal

    cfg = load_config(config)
    if not note.strip():
        raise ConfigurationError("note", "what was done about the incident", note)
    j = Journal(cfg.journal)
    try:
        if not j.resolve_incident(incident, int(time.time() * 1000), f"operator: {note}"):
            raise ConfigurationError("incident", "the id of an open incident", incident)
    finally:
        j.close()
    typer.echo(f"incident {incident} resolved")


def _runbook(books: Path, kind: str) -> str | None:
    """Return the runbook of an incident kind (``alert_<rule>``: the rule's), None when there is none."""
    for name in (kind, kind.removeprefix("alert_")):
        if (books / f"{name}.md").is_file():
            return str(books / f"{name}.md")
    return None


def _incident_state(row: dict[str, Any]) -> str:
    if row["resolved_at"] is not None:
        return "resolved"
    return "acknowledged" if row.get("acknowledged_at") is not None else "open"


def _ms_iso(ms: int | None) -> str | None:
    return None if ms is None else dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat(timespec="seconds")


@app.command()
def incidents(config: ConfigOption,
              all_: Annotated[bool, typer.Option("--all", help="resolved ones too")] = False,
              json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the incidents (open and acknowledged; --all: resolved too), newest first, with their runbooks."""
    from runner.journal import Journal

    cfg = load_config(config)
    j = Journal(cfg.journal)
    try:
        rows = [r for r in j.incidents() if all_ or r["resolved_at"] is None][::-1]
    finally:
        j.close()
    books = Path(__file__).resolve().parent / "runbooks"
    out = [{"id": r["id"], "state": _incident_state(r), "at": _ms_iso(r["at"]), "deployment": r["deployment"],
            "kind": r["kind"], "severity": r["severity"], "message": r["message"],
            "acknowledged_at": _ms_iso(r.get("acknowledged_at")), "acknowledged_by": r.get("acknowledged_by"),
            "resolved_at": _ms_iso(r["resolved_at"]), "resolution": r["resolution"],
            "runbook": _runbook(books, r["kind"])}
           for r in rows]
    if json_output:
        typer.echo(json.dumps(out, indent=2))
        return
    if not out:
        typer.echo("no open incidents" if not all_ else "no incidents")
    for r in out:
        who = f" (acknowledged by {r['acknowledged_by']})" if r["state"] == "acknowledged" else ""
        typer.echo(f"#{r['id']} {r['state']}{who} {r['severity']} {r['kind']} {r['deployment'] or 'account'} "
                   f"{r['at']}: {r['message']}" + (f"\n    runbook {r['runbook']}" if r["runbook"] else ""))


@app.command()
def ack(config: ConfigOption, incident: Annotated[int, typer.Argument(help="incident id")],
        by: Annotated[str, typer.Option(help="who takes it (default $USER)")] = "") -> None:
    """Acknowledge an open incident: someone is on it (it keeps blocking until `runner resolve`)."""
    from runner.journal import Journal

    cfg = load_config(config)
    who = by.strip() or os.environ.get("USER", "") or "operator"
    j = Journal(cfg.journal)
    try:
        if not j.acknowledge_incident(incident, int(time.time() * 1000), who):
            raise ConfigurationError("incident", "the id of an open incident nobody has acknowledged", incident)
    finally:
        j.close()
    typer.echo(f"incident {incident} acknowledged by {who}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit status (errors mapped by class, one line on stderr)."""
    try:
        rv = app(args=argv, standalone_mode=False)
    except ToolkitError as exc:
        typer.echo(f"error: {exc}", err=True)
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as exc:
        if hasattr(exc, "exit_code") and hasattr(exc, "format_message"):  # click usage errors
            typer.echo(f"error: {exc.format_message()}", err=True)
            return int(exc.exit_code)
        raise
    return int(rv or 0)


def cli() -> None:
    sys.exit(main())
