"""``toolkit emulator serve``: a thin CLI over :class:`toolkit.emulator.Emulator`.

The server (and the bar store, hence pandas) is imported when ``serve`` runs, not when the
``toolkit`` entry point mounts the command.
"""

from __future__ import annotations

import logging
import signal
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr

from toolkit.emulator.defaults import DEFAULT_API_KEY, DEFAULT_API_SECRET
from toolkit.errors import ConfigurationError

__all__ = ["app", "parse_balances", "parse_symbols", "serve"]

# no pretty tracebacks: they print local variables, the API secret among them
app = typer.Typer(help="The loopback Binance spot emulator (paper trading, tests, fault injection).",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def parse_balances(items: list[str]) -> dict[str, Decimal]:
    """Parse ``["USDT=100000", "BTC=1.5"]`` into ``{"USDT": Decimal("100000"), …}``.

    Raises
    ------
    ConfigurationError
        (field ``balance``) for a missing asset or amount, or an amount that is not a
        finite number >= 0 (``NaN``, ``inf``, negative, empty).
    """
    out: dict[str, Decimal] = {}
    for item in items:
        asset, _, amount = item.partition("=")
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            value = Decimal("NaN")
        if not asset.strip().isalnum() or not value.is_finite() or value < 0:
            raise ConfigurationError("balance", "ASSET=AMOUNT with a finite amount >= 0, such as USDT=100000", item)
        out[asset.strip().upper()] = value
    return out


def parse_symbols(text: str) -> tuple[str, ...]:
    """Parse ``"BTC/USDT,ETH/USDT"``; raise ``ConfigurationError`` (field ``symbols``) when none is given."""
    found = tuple(s.strip() for s in text.split(",") if s.strip())
    if not found:
        raise ConfigurationError("symbols", "comma-separated symbols such as BTC/USDT,ETH/USDT", text)
    return found


@app.callback()
def _group() -> None:
    """Keep ``serve`` a named subcommand even though it is the only one."""


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address; loopback unless --allow-remote.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8899,
    speed: Annotated[float, typer.Option(help="Replay minutes per wall minute (1 = real time, 0 = "
                                               "stepped through POST /admin/clock).")] = 60.0,
    faults: Annotated[Path | None, typer.Option(help="JSON faults file (see docs/emulator.md).")] = None,
    api_key: Annotated[str, typer.Option(help="Accepted API key.", envvar="EMULATOR_API_KEY")] = DEFAULT_API_KEY,
    api_secret: Annotated[str, typer.Option(
        help="Accepted API secret (HMAC-SHA256); prefer the environment variable, which `ps` does not show.",
        envvar="EMULATOR_API_SECRET", show_default=False)] = DEFAULT_API_SECRET,
    balance: Annotated[list[str] | None, typer.Option(help="Starting balance ASSET=AMOUNT (repeatable); "
                                                           "used only for a new state file.")] = None,
    symbols: Annotated[str, typer.Option(help="Comma-separated ccxt symbols.")] = "BTC/USDT",
    start: Annotated[str | None, typer.Option(help="Replay start (UTC), e.g. 2024-03-01; a state file "
                                                   "that already has a clock continues from it.")] = None,
    state: Annotated[Path | None, typer.Option(help="SQLite state file (default: user cache).")] = None,
    allow_remote: Annotated[bool, typer.Option(help="Allow a non-loopback --host.")] = False,
    log_requests: Annotated[bool, typer.Option(help="Log every request to stderr.")] = False,
    rate_limits: Annotated[bool, typer.Option(help="Enforce Binance's request-weight and order limits "
                                                   "(--no-rate-limits for throughput benchmarks).")] = True,
) -> None:
    """Serve Binance's spot REST API on loopback, replaying real 1m bars from the bar store.

    SIGINT and SIGTERM stop it the same way: requests in flight are answered, every
    connection is closed, the state is saved, and the process exits with status 0.
    Bad input raises ``ConfigurationError`` naming the field (the toolkit CLI exits 2).
    """
    from toolkit.emulator.server import Emulator, EmulatorConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = EmulatorConfig.build(
        host=host, port=port, speed=speed, faults_path=faults, api_key=api_key, api_secret=SecretStr(api_secret),
        balances=parse_balances(balance) if balance else {"USDT": Decimal(100000)},
        symbols=parse_symbols(symbols), start=start, state_path=state, allow_remote=allow_remote,
        log_requests=log_requests, rate_limits=rate_limits,
    )
    emu = Emulator(cfg)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda _signum, _frame: emu.shutdown())
    try:
        status = emu.status()
        typer.echo(f"emulator on {emu.url} | replay {status['replay_time']} at speed {cfg.speed:g} | "
                   f"state {status['state']} | symbols {', '.join(status['symbols'])} | "
                   f"rate limits {'on' if cfg.rate_limits else 'off'}", err=True)
        emu.serve_forever()
    finally:
        emu.stop()  # idempotent: also after serve_forever's own stop
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo("emulator stopped; state saved", err=True)
