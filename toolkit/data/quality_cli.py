"""``toolkit data check``: print the quality certificate of stored bars or of a user's file.

A thin wrapper over ``toolkit.data.quality.certify``; ``toolkit.cli`` registers
``check_command`` and maps a ``ToolkitError`` to its exit code. pandas and the certificate are
imported when the command runs, so mounting it costs the ``toolkit`` entry point nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from toolkit.errors import ConfigurationError, DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["check_command", "read_bars_lenient"]


def read_bars_lenient(path: Path) -> pd.DataFrame:
    """Read a user's Parquet or CSV bar file without rejecting bad rows (the certificate reports them)."""
    import pandas as pd

    from toolkit.data.store import _frame_from_table

    if not path.is_file():
        raise DataError(f"bars file: expected an existing file, found nothing at {path}")
    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pyarrow/pandas raise many types for a damaged file
        raise DataError(f"{path}: expected a readable Parquet or CSV file, found: {exc}") from exc
    return _frame_from_table(frame, str(path))


def check_command(
    symbol: Annotated[str, typer.Option(help="ccxt symbol, e.g. BTC/USDT")] = "BTC/USDT",
    timeframe: Annotated[str, typer.Option(help="bar timeframe: 1m, 15m, 1h, 4h, 1d …")] = "1m",
    start: Annotated[str | None, typer.Option(help="first bar open time (UTC date or ISO time)")] = None,
    end: Annotated[str | None, typer.Option(help="last bar open time; a bare date includes the day")] = None,
    bars_file: Annotated[
        Path | None, typer.Option(help="certify this Parquet/CSV file instead of the store")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the certificate as JSON")] = False,
    min_bars: Annotated[int | None, typer.Option(help="fewest bars required")] = None,
    max_missing_share: Annotated[float | None, typer.Option(help="missing / expected bars")] = None,
    max_gap_bars: Annotated[int | None, typer.Option(help="longest gap, in bars")] = None,
    max_duplicates: Annotated[int | None, typer.Option(help="duplicated timestamps")] = None,
    max_non_monotonic: Annotated[int | None, typer.Option(help="out-of-order rows")] = None,
    max_off_grid: Annotated[int | None, typer.Option(help="rows off the timeframe grid")] = None,
    max_nonfinite: Annotated[int | None, typer.Option(help="rows with NaN/inf values")] = None,
    max_nonpositive: Annotated[int | None, typer.Option(help="rows with price <= 0 or volume < 0")] = None,
    max_ohlc_violations: Annotated[int | None, typer.Option(help="rows breaking low <= o,c <= high")] = None,
    max_zero_volume_run: Annotated[int | None, typer.Option(help="longest zero-volume run, in bars")] = None,
    max_flat_run: Annotated[int | None, typer.Option(help="longest o=h=l=c run, in bars")] = None,
    outlier_z: Annotated[float | None, typer.Option(help="robust z-score of an outlier return")] = None,
    max_outlier_share: Annotated[float | None, typer.Option(help="outlier returns / returns")] = None,
) -> None:
    """Certify the quality of bars; exit 0 when every check passes, 1 otherwise."""
    from toolkit.data.quality import QualityThresholds, certify
    from toolkit.data.store import load_bars, parse_time

    thresholds = QualityThresholds.build(
        min_bars=min_bars, max_missing_share=max_missing_share, max_gap_bars=max_gap_bars,
        max_duplicates=max_duplicates, max_non_monotonic=max_non_monotonic, max_off_grid=max_off_grid,
        max_nonfinite=max_nonfinite, max_nonpositive=max_nonpositive,
        max_ohlc_violations=max_ohlc_violations, max_zero_volume_run=max_zero_volume_run,
        max_flat_run=max_flat_run, outlier_z=outlier_z, max_outlier_share=max_outlier_share,
    )
    if bars_file is None:
        bars = load_bars(symbol, timeframe, start, end)
    else:
        t0 = parse_time(start, "start")
        t1 = parse_time(end, "end", end=True)
        if t0 is not None and t1 is not None and t1 < t0:
            raise ConfigurationError("end", f"a time after start {t0}", end)
        bars = read_bars_lenient(Path(bars_file))
        if t0 is not None:
            bars = bars[bars.index >= t0]
        if t1 is not None:
            bars = bars[bars.index <= t1]
        if bars.empty:
            raise DataError(f"{bars_file}: expected bars between {t0} and {t1}, found none")
    cert = certify(bars, symbol, timeframe, thresholds, start=start, end=end)
    typer.echo(cert.to_json() if json_output else cert.to_table())
    raise typer.Exit(0 if cert.passed else 1)
