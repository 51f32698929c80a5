"""``toolkit study STUDY.yaml``: a thin CLI over :func:`toolkit.backtest.cluster.run_study`.

The study file is read by :func:`toolkit.backtest.study.load_study`; Dask (``distributed``) is imported
when the command runs, not when the ``toolkit`` entry point mounts it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli_support import emit

__all__ = ["study_command"]


def study_command(
    study: Annotated[Path, typer.Argument(help="study file (YAML): grids per strategy × markets")],
    scheduler: Annotated[str | None, typer.Option(
        help="a running Dask scheduler (tcp://HOST:PORT); default: a LocalCluster on this host")] = None,
    workers: Annotated[int, typer.Option(help="local worker processes (without --scheduler)")] = 2,
    chunk: Annotated[int, typer.Option(help="combinations per task")] = 64,
    study_id: Annotated[str | None, typer.Option(
        help="the study's identity (default: the file's study_id, else a new one); a re-run adds no trial twice")]
    = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
) -> None:
    """Sweep every cell (strategy × market) of a study on Dask and append its trials to the ledger."""
    from toolkit.backtest.cluster import run_study
    from toolkit.backtest.study import load_study

    spec, configs = load_study(study)
    result = run_study(configs, study_id=study_id or spec.study_id, scheduler=scheduler, workers=workers,
                       chunk=chunk)
    payload = {**dataclasses.asdict(result), "combinations": result.combinations}
    lines = [f"study {result.study_id}: {len(result.cells)} cells, {result.combinations} combinations, "
             f"{result.tasks} tasks on {result.workers} workers ({result.scheduler})"]
    for c in result.cells:
        best = "-" if math.isnan(c.best_sharpe_is) else f"{c.best_sharpe_is:.4f}"
        lines.append(f"  {c.strategy} {c.symbol} {c.timeframe}: {c.combinations} combinations, "
                     f"{c.trials_added} trials added, chosen {c.chosen}, best in-sample Sharpe {best} per bar")
    emit(payload, json_output, "\n".join(lines))
