"""``toolkit data fetch``: a thin CLI over :func:`toolkit.data.fetch.fetch_ohlcv`.

The fetcher (hence ccxt, about a second to import) is imported when the command runs, not when the
``toolkit`` entry point mounts it: every other command starts without ccxt.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

__all__ = ["fetch_command"]


def fetch_command(
    symbol: Annotated[str, typer.Option("--symbol", help="ccxt symbol, e.g. BTC/USDT.")],
    since: Annotated[str, typer.Option("--since", help="First bar (UTC), e.g. 2024-04-01.")],
    until: Annotated[str, typer.Option("--until", help="End (UTC, exclusive), e.g. 2024-04-08.")],
    exchange: Annotated[str, typer.Option("--exchange", help="ccxt exchange id.")] = "binance",
    timeframe: Annotated[str, typer.Option("--timeframe", help="Bar size: 1m, 5m, 1h, 1d …")] = "1m",
    url: Annotated[str | None, typer.Option("--url", help="Binance-compatible base URL, e.g. the "
                                                         "emulator at http://127.0.0.1:8899.")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0,
                                         help="Further attempts per request after a temporary error.")] = 5,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Fetch OHLCV bars through the exchange adapter into the bar store (resumable), then certify their quality.

    Exit codes: 2 for a bad input (an unknown symbol included), 75 when the exchange
    stayed unreachable or rate-limited (run again to resume), 8/9 when it refused.
    """
    from toolkit.data.fetch import fetch_ohlcv

    result = fetch_ohlcv(exchange, symbol, timeframe, since, until, url=url, progress=not json_, retries=retries)
    if json_:
        typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    verdict = {True: "passed", False: "FAILED", None: "not available"}[result.passed]
    typer.echo(f"{result.exchange} {result.symbol} {result.timeframe}: {result.bars_fetched} bars fetched in "
               f"{result.pages} pages ({result.retries} retries), stored {result.first} .. {result.last}"
               + (f", resumed from {result.resumed_from}" if result.resumed_from else ""))
    typer.echo(f"quality certificate: {verdict}")
    for path in result.files:
        typer.echo(f"  wrote {path}")
