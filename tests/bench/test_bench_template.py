"""bench/bench_template.py: the wall time is split at papermill's timestamps, and the phases add up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_template as bt  # noqa: E402


def _cell(start: str, end: str, source: str, kind: str = "code") -> dict:
    return {"cell_type": kind, "source": source, "metadata": {"papermill": {
        "start_time": start, "end_time": end, "duration": None if kind != "code" else 1.0}}}


def test_phases_split_the_wall_time_at_papermills_timestamps() -> None:
    # papermill writes UTC ISO times; the process started at epoch 1_000 (UTC 00:16:40)
    notebook = {"metadata": {"papermill": {"start_time": "1970-01-01T00:16:42+00:00",
                                           "end_time": "1970-01-01T00:16:50.5"}},  # naive: read as UTC
                "cells": [_cell("1970-01-01T00:16:43+00:00", "1970-01-01T00:16:43+00:00", "# note", "markdown"),
                          _cell("1970-01-01T00:16:43+00:00", "1970-01-01T00:16:50+00:00", "import x\ny = 1")]}
    run = bt.CliRun(0, "{}", "", started=1000.0, printed=1013.0, ended=1013.25)
    got = bt.phases(notebook, run, html_written=1011.0)
    assert got["until_papermill"] == pytest.approx(2.0)
    assert got["kernel_wait"] == pytest.approx(1.0)
    assert got["cells"] == pytest.approx(7.0)
    assert got["idle_after_last_cell"] == pytest.approx(0.5)
    assert got["nbconvert"] == pytest.approx(0.5)
    assert got["record"] == pytest.approx(2.0)
    assert got["exit"] == pytest.approx(0.25)
    assert sum(got[k] for k in bt.PHASES) == pytest.approx(got["total"])
    assert got["cell_labels"] == ["(markdown)", "import x"] and got["cell_s"] == [0.0, 1.0]


def test_the_case_is_the_issues() -> None:
    args = bt.backtest_args()
    assert args[:3] == ["backtest", "--strategy", "ma_cross"]
    assert "--timeframe" in args and args[args.index("--timeframe") + 1] == "15m"
    grid = [args[i + 1] for i, a in enumerate(args) if a == "--grid"]
    assert grid == ["fast=10,20,40", "slow=100,200"]  # 6 combinations
