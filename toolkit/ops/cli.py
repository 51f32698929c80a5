"""``toolkit regimes`` and ``toolkit alerts``: the regime map of a market and the alert rules, for operators."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli_support import emit

__all__ = ["register"]

alerts_app = typer.Typer(help="Alert rules: check a rules file, export it for Prometheus.", no_args_is_help=True)
DEFAULT_RULES = Path(__file__).resolve().parents[2] / "runner" / "alert_rules.toml"

RulesOption = Annotated[Path, typer.Option("--rules", help="rules file (TOML)")]


def regimes_command(
    symbol: Annotated[str, typer.Option(help="market, e.g. BTC/USDT")] = "BTC/USDT",
    timeframe: Annotated[str, typer.Option(help="bar length, one hour or shorter")] = "1m",
    start: Annotated[str, typer.Option(help="first day (UTC)")] = "2024-01-01",
    end: Annotated[str, typer.Option(help="last day (UTC, included)")] = "2024-04-30",
    reference_notional: Annotated[float, typer.Option(help="modelled order size")] = 10_000.0,
    out: Annotated[Path | None, typer.Option(help="write the map's JSON here")] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Measure the liquidity regimes of a market by hour of the week from the bar store."""
    from toolkit.data import load_bars
    from toolkit.ops.plots import regime_summary
    from toolkit.ops.regimes import regime_map

    regimes = regime_map(load_bars(symbol, timeframe, start, end), symbol, reference_notional=reference_notional)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(regimes.to_json(), encoding="utf-8")
    table = regimes.frame("quote_volume_per_min").map(lambda v: f"{v / 1e3:,.0f}k")
    emit(regimes.document, json_output,
         regime_summary(regimes).replace("**", "").replace("`", "")
         + "\n\nmedian quote volume per minute, weekday x UTC hour:\n" + table.to_string())


@alerts_app.command("check")
def alerts_check(rules: RulesOption = DEFAULT_RULES,
                 json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Validate a rules file (every rule present, thresholds well formed, runbooks on disk)."""
    from toolkit.errors import ConfigurationError
    from toolkit.ops.alerts import load_rules

    loaded = load_rules(rules)
    runbooks = {name: Path(r.runbook) if r.runbook else DEFAULT_RULES.parent / "runbooks" / f"{name}.md"
                for name, r in loaded.rules.items()}
    missing = sorted(name for name, p in runbooks.items() if not p.is_file())
    if missing:
        raise ConfigurationError(f"rules.{missing[0]}.runbook", "an existing runbook file", str(runbooks[missing[0]]))
    emit({"rules": sorted(loaded.rules), "runbooks": {k: str(v) for k, v in runbooks.items()}}, json_output,
         f"{rules}: {len(loaded.rules)} rules, every runbook present")


@alerts_app.command("prometheus")
def alerts_prometheus(rules: RulesOption = DEFAULT_RULES,
                      for_minutes: Annotated[int, typer.Option(help="Prometheus `for:` duration")] = 2) -> None:
    """Print the rules as a Prometheus alerting-rules file (YAML) for Alertmanager."""
    import yaml

    from toolkit.ops.alerts import load_rules, prometheus_rules

    typer.echo(yaml.safe_dump(prometheus_rules(load_rules(rules), for_minutes), sort_keys=False), nl=False)


def register(app: typer.Typer) -> None:
    """Add ``regimes`` and ``alerts`` to ``app``."""
    app.command("regimes")(regimes_command)
    app.add_typer(alerts_app, name="alerts")
