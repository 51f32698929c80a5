"""End to end: the CLI runs the template through papermill into a real sqlite MLflow; bad input leaves nothing.

Everything here is real: a papermill kernel on the project's kernelspec, nbconvert,
MLflow on a temporary sqlite store, and the registered version loaded back with
``mlflow.pyfunc.load_model``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlflow
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
TOOLKIT = [sys.executable, "-m", "toolkit.cli"]


def _run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TOOLKIT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "TOOLKIT_ARTIFACTS": str(root / "artifacts"),
        "TOOLKIT_LEDGER": str(root / "trials.db"),
        "TOOLKIT_REPORTS_DIR": str(root / "reports"),
    })
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="module")
def backtest(store: Path) -> dict:
    proc = _run(["backtest", "--strategy", "ma_cross", "--timeframe", "1h", "--start", "2024-01-01",
                 "--end", "2024-03-31", "--grid", "fast=5,10", "--grid", "slow=30,60", "--json"], _env(store))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _client(store: Path) -> MlflowClient:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)  # other tests in this process may have pointed the registry elsewhere
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def test_cli_json_names_the_run_version_and_report(backtest: dict, store: Path) -> None:
    assert backtest["model_name"] == "ma_cross.BTC-USDT.1h"
    assert backtest["model_version"] == "1"
    report = Path(backtest["report_path"])
    assert report.is_file() and report.is_relative_to(store / "reports")
    html = report.read_text()
    assert "Backtest: ma_cross on BTC/USDT 1h" in html
    assert "config_from_params(" not in html  # code cells are hidden from the desk's report
    index = (store / "reports" / "index.html").read_text()
    assert report.name in index


def test_run_carries_params_metrics_tags_and_artifacts(backtest: dict, store: Path) -> None:
    client = _client(store)
    run = client.get_run(backtest["run_id"])
    tags = run.data.tags
    for key in ("git.commit", "data.hash", "template.sha256", "toolkit.version", "evidence.sha256"):
        assert tags[key] and tags[key] != "none", key
    assert tags["data.hash"] == backtest["data_hash"]
    assert run.data.params["strategy"] == "ma_cross"
    assert run.data.params["param.fast"] == str(backtest["chosen"]["fast"])
    assert run.data.metrics["oos.sharpe"] == pytest.approx(backtest["metrics"]["sharpe"])
    assert run.data.metrics["trials.ledger_total"] == 4
    names = {a.path for a in client.list_artifacts(backtest["run_id"], "evidence")}
    for f in ("returns.parquet", "trades.parquet", "trials.parquet", "bars.parquet", "data_certificate.json"):
        assert f"evidence/{f}" in names
    assert next(a.path for a in client.list_artifacts(backtest["run_id"], "notebook")).endswith(".ipynb")
    assert next(a.path for a in client.list_artifacts(backtest["run_id"], "report")).endswith(".html")
    version = client.get_model_version(backtest["model_name"], backtest["model_version"])
    assert version.run_id == backtest["run_id"]
    assert version.tags["evidence.sha256"] == tags["evidence.sha256"]
    assert version.tags["strategy.type"] == "intraday"


def test_registered_version_predicts_the_backtest_positions(backtest: dict, store: Path, tmp_path: Path) -> None:
    client = _client(store)
    local = client.download_artifacts(backtest["run_id"], "evidence", str(tmp_path))
    evidence = pd.read_parquet(Path(local) / "returns.parquet")
    bars = pd.read_parquet(Path(local) / "bars.parquet")
    model = mlflow.pyfunc.load_model(f"models:/{backtest['model_name']}/{backtest['model_version']}")
    frame = bars.reset_index()[["timestamp", "open", "high", "low", "close", "volume"]]
    frame["timestamp"] = frame["timestamp"].dt.tz_localize(None)
    out = model.predict(frame)
    meta = json.loads((Path(local) / "backtest.json").read_text())
    last = meta["folds"][-1]["test_lo"]  # the deployed parameters decide from the last walk-forward block on
    np.testing.assert_array_equal(out["direction"].to_numpy()[last:], evidence["direction"].to_numpy()[last:])
    # sized like the backtest: where both start flat inside the block, the banded positions are the same
    flat = np.flatnonzero((out["position"].to_numpy()[last:] == 0) & (evidence["position"].to_numpy()[last:] == 0))
    assert flat.size, "the deployed strategy is never flat in the last block"
    start = last + int(flat[0])
    np.testing.assert_array_equal(out["position"].to_numpy()[start:], evidence["position"].to_numpy()[start:])
    assert 0 < np.abs(out["position"]).max() <= 1.0 and np.abs(out["direction"]).max() == 1.0


def test_the_version_carries_its_signature(backtest: dict, store: Path) -> None:
    from mlflow.models import get_model_info

    _client(store)
    info = get_model_info(backtest["model_uri"])
    inputs = {c["name"]: c["type"] for c in info.signature.inputs.to_dict()}
    outputs = {c["name"]: c["type"] for c in info.signature.outputs.to_dict()}
    assert inputs == {"timestamp": "datetime", "open": "double", "high": "double", "low": "double",
                      "close": "double", "volume": "double"}
    assert outputs == {"direction": "double", "target": "double", "position": "double"}


def test_executed_notebook_passes_nbval(backtest: dict) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           backtest["notebook_path"], "--nbval-kernel-name", "desk-toolkit"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert " passed" in proc.stdout


def _bars_file(tmp_path: Path, corrupt: str) -> Path:
    frame = pd.read_parquet(ROOT / "toolkit/data/bundled/bars/BTC-USDT/1h/2017-08_2025-11.parquet")
    frame = frame[(frame["timestamp"] >= "2024-01-01") & (frame["timestamp"] < "2024-03-01")].reset_index(drop=True)
    path = tmp_path / f"bars-{corrupt}.parquet"
    if corrupt == "nan":
        frame.loc[100, "close"] = np.nan
    elif corrupt == "high_below_low":
        frame.loc[100, "high"] = frame.loc[100, "low"] - 10.0
    elif corrupt == "negative_volume":
        frame.loc[100, "volume"] = -1.0
    elif corrupt == "off_grid":
        frame.loc[100, "timestamp"] = frame.loc[100, "timestamp"] + pd.Timedelta(minutes=7)
    elif corrupt == "mostly_missing":  # 84 % of the hours gone, in blocks (the file is still hourly)
        frame = frame[np.arange(len(frame)) % 100 < 16].reset_index(drop=True)
    frame.to_parquet(path)
    if corrupt == "garbage":
        path.write_bytes(b"PAR1" + os.urandom(512))
    return path


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty tracking database, created once (MLflow's schema migrations take seconds)."""
    root = tmp_path_factory.mktemp("empty-store")
    assert _client(root).search_experiments() is not None
    return root / "mlflow.db"


def _fresh_store(root: Path, empty: Path) -> None:
    """Start from an existing empty tracking database, so "nothing recorded" is checked against a real store."""
    shutil.copyfile(empty, root / "mlflow.db")


def _assert_nothing_recorded(root: Path) -> None:
    from mlflow.entities import ViewType

    client = _client(root)
    assert client.search_registered_models() == []
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    assert client.search_runs(experiments, run_view_type=ViewType.ALL) == []


LONG_NAME = "m" * 300
BAD_INPUT = [
    (["--strategy", "nope"], 2, "strategy: expected one of"),
    (["--strategy", "ma_cross", "--start", "2024-02-31"], 2, "start: expected a date"),
    (["--strategy", "ma_cross", "--start", "2024-03-01", "--end", "2024-01-01"], 2, "end: expected a date after"),
    (["--strategy", "ma_cross", "--start", "2031-01-01", "--end", "2031-02-01"], 3, "found none"),
    (["--strategy", "ma_cross", "--grid", "fats=5"], 2, "fats"),
    (["--strategy", "ma_cross", "--grid", "fast=5", "--grid", "fast=10"], 2, "grid.fast: expected each name once"),
    (["--strategy", "ma_cross", "--grid", "fast=5,10", "--param", "fast=5"], 2, "params.fast: expected a parameter "
     "either fixed"),
    (["--strategy", "ma_cross", "--model-name", "../../etc/x"], 2, "model_name: expected"),
    (["--strategy", "ma_cross", "--model-name", LONG_NAME], 2, "model_name: expected"),
    (["--strategy", "ma_cross", "--model-name", ""], 2, "model_name: expected"),
    (["--strategy", "ma_cross", "--timeframe", "15m", "--start", "2024-04-01", "--end", "2024-06-30"], 3,
     "missing_bars"),
    (["--strategy", "ma_cross", "--bars-file", "{nan}"], 3, "expected finite prices"),
    (["--strategy", "ma_cross", "--bars-file", "{garbage}"], 3, "expected a readable Parquet"),
    (["--strategy", "ma_cross", "--timeframe", "1h", "--bars-file", "{high_below_low}"], 3, "ohlc_violations"),
    (["--strategy", "ma_cross", "--timeframe", "1h", "--bars-file", "{negative_volume}"], 3, "nonpositive"),
    (["--strategy", "ma_cross", "--timeframe", "1h", "--bars-file", "{off_grid}"], 3, "off_grid"),
    (["--strategy", "ma_cross", "--timeframe", "1h", "--bars-file", "{mostly_missing}"], 3, "missing_bars"),
    (["--strategy", "ma_cross", "--bars-file", "no/such/file.csv"], 2, "bars_file: expected an existing"),
    (["--strategy", "ma_cross", "--timeframe", "1d", "--start", "2024-01-01", "--end", "2024-01-20"], 7,
     "at least 30 bars in every in-sample window"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUT, ids=[" ".join(a[1:])[:60] for a, _, _ in BAD_INPUT])
def test_bad_input_fails_clearly_and_leaves_no_run(args: list[str], code: int, message: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, empty_store: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Through ``toolkit.cli.main`` in this process (``tests/test_cli.py`` runs the installed command)."""
    from toolkit.cli import main

    for kind in ("nan", "garbage", "high_below_low", "negative_volume", "off_grid", "mostly_missing"):
        args = [a.replace("{" + kind + "}", str(_bars_file(tmp_path, kind))) if "{" + kind + "}" in a else a
                for a in args]
    _fresh_store(tmp_path, empty_store)
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    returncode = main(["backtest", *args, "--json"])
    out, err = capsys.readouterr()
    assert returncode == code, (returncode, err[-2000:])
    assert message in err
    error = json.loads(out)["error"]  # --json: a JSON error object on stdout, for scripts
    assert error["exit_code"] == code and message in error["message"]
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, err
    _assert_nothing_recorded(tmp_path)
    if code != 7:  # refused before a kernel started: no report files either (a failed cell keeps its notebook)
        assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").rglob("*.ipynb"))
        assert not (tmp_path / "trials.db").exists()  # no trial was run, none recorded
    assert not (tmp_path / "etc").exists()  # where "--model-name ../../etc/x" would have written under reports/


def test_a_second_run_relative_bars_file_and_failed_quality(backtest: dict, store: Path, tmp_path: Path) -> None:
    """A second run in the same store: the ledger counts both runs' trials and the version number goes up.

    It also reads a relative --bars-file from the caller's directory, and registers bars failing their
    certificate only because it is asked to, loudly.
    """
    cwd = tmp_path / "work"
    cwd.mkdir()
    _bars_file(cwd, "high_below_low").rename(cwd / "my_bars.parquet")
    proc = subprocess.run([*TOOLKIT, "backtest", "--strategy", "ma_cross", "--timeframe", "1h", "--grid", "fast=5",
                           "--grid", "slow=30,60", "--bars-file", "my_bars.parquet", "--allow-failed-quality",
                           "--json"], cwd=cwd, env=_env(store), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads(proc.stdout)
    assert run["model_name"] == backtest["model_name"] and run["model_version"] == "2"
    assert run["n_trials"] == 6  # 4 trials from the first run + 2 now: re-running shows up as more trials
    assert run["data_quality"] == "failed" and "ohlc_violations" in run["warnings"][0]
    assert "WARNING" in proc.stderr and "ohlc_violations" in proc.stderr
    version = _client(store).get_model_version(run["model_name"], run["model_version"])
    assert version.tags["data.quality"] == "failed"
    params = _client(store).get_run(run["run_id"]).data.params
    assert params["start"] == ""  # the whole file was used


def test_version_loads_and_predicts_without_the_toolkit_package(backtest: dict, store: Path, tmp_path: Path) -> None:
    """The version is self-contained: a process where ``import toolkit`` fails, outside the repo, still loads it."""
    client = _client(store)
    local = client.download_artifacts(backtest["run_id"], "evidence", str(tmp_path))
    script = f"""
import sys
sys.modules["toolkit"] = None  # any import of the repository's package now fails
import mlflow, pandas as pd, numpy as np
mlflow.set_tracking_uri({f"sqlite:///{store / 'mlflow.db'}"!r})
model = mlflow.pyfunc.load_model("models:/{backtest['model_name']}/{backtest['model_version']}")
bars = pd.read_parquet({str(Path(local) / 'bars.parquet')!r}).reset_index()
bars["timestamp"] = bars["timestamp"].dt.tz_localize(None)
last = {json.loads((Path(local) / "backtest.json").read_text())["folds"][-1]["test_lo"]}
got = model.predict(bars[["timestamp", "open", "high", "low", "close", "volume"]])["direction"].to_numpy()[last:]
want = pd.read_parquet({str(Path(local) / 'returns.parquet')!r})["direction"].to_numpy()[last:]
assert np.array_equal(got, want), "decisions differ"
assert not any(m == "toolkit" or m.startswith("toolkit.") for m in sys.modules if sys.modules[m] is not None)
print("ok", len(got))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("ok ")
