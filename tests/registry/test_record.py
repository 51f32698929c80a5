"""Recording a backtest: a failure half-way leaves nothing; versions with different strategy code coexist.

Real MLflow on a private sqlite store per test. Failures are injected by replacing one
adapter call with one that raises (the store itself is real; no MLflow call is mocked
away): the point is what ``record_backtest`` leaves behind when MLflow fails under it.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import ViewType

import mlflow
from mlflow import MlflowClient
from toolkit.errors import DataQualityError, RegistryError
from toolkit.registry import adapter, record


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real backtest bundle: ma_cross on real BTC/USDT 1h bars, 2024-01..03, one combination."""
    from toolkit.backtest import config_from_params, run_backtest
    from toolkit.backtest.bundle import save_bundle
    from toolkit.backtest.ledger import TrialLedger
    from toolkit.data.quality import certify
    from toolkit.reporting.views import bars_for

    root = tmp_path_factory.mktemp("record")
    cfg = config_from_params(strategy="ma_cross", timeframe="1h", start="2024-01-01", end="2024-03-31",
                             grid={"fast": [10], "slow": [50]})
    bars = bars_for(cfg)
    result = run_backtest(cfg, bars, ledger=TrialLedger(root / "trials.db"), progress=False)
    return save_bundle(result, bars, certify(bars, cfg.symbol, cfg.timeframe).to_dict(), root / "bundle")


def _everything(store: Path) -> dict[str, Any]:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exps = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    runs = c.search_runs(exps, run_view_type=ViewType.ALL) if exps else []
    return {"models": {m.name: sorted(str(v.version) for v in c.search_model_versions(f"name = '{m.name}'"))
                       for m in c.search_registered_models()},
            "runs": sorted((r.info.run_id, r.info.status, r.info.lifecycle_stage) for r in runs)}


def _fail_on(monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException,
             when: Callable[..., bool] = lambda *a, **k: True) -> None:
    real = getattr(adapter, name)

    def failing(*args: Any, **kwargs: Any) -> Any:
        if when(*args, **kwargs):
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(adapter, name, failing)


@pytest.mark.parametrize(("step", "when"), [
    ("log_artifacts", lambda *a, **k: True),  # after the run exists, before the model
    ("set_version_tag", lambda *a, **k: a[2] == "gate.live.verdict"),  # after the version exists (the last tag)
])
def test_a_failure_after_the_run_started_leaves_nothing(bundle: Path, isolated_store: Path, step: str,
                                                        when: Callable[..., bool],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on(monkeypatch, step, RuntimeError("disk full (injected)"), when)
    with pytest.raises(RegistryError, match="disk full") as e:
        record.record_backtest(bundle)
    assert "removed" in str(e.value)
    state = _everything(isolated_store)
    assert state == {"models": {}, "runs": []}, state  # no FAILED run, no empty model, no version
    leftovers = [p for p in (isolated_store / "artifacts").rglob("*") if p.is_file()]
    assert leftovers == []


def test_a_failed_second_version_keeps_the_first(bundle: Path, isolated_store: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    first = record.record_backtest(bundle)
    before = _everything(isolated_store)
    _fail_on(monkeypatch, "set_version_tag", KeyboardInterrupt(), lambda *a, **k: a[2] == "registered_at")
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C half-way cleans up too, then propagates
        record.record_backtest(bundle)
    after = _everything(isolated_store)
    assert after == before and after["models"] == {first.model_name: ["1"]}


def test_bars_failing_their_certificate_are_refused_unless_allowed(bundle: Path, isolated_store: Path,
                                                                   tmp_path: Path) -> None:
    import json

    bad = tmp_path / "bad"
    shutil.copytree(bundle, bad)
    cert = json.loads((bad / "data_certificate.json").read_text())
    cert.update(passed=False, failed=["ohlc_violations"])
    (bad / "data_certificate.json").write_text(json.dumps(cert))
    with pytest.raises(DataQualityError, match="ohlc_violations"):
        record.record_backtest(bad)
    assert _everything(isolated_store)["runs"] == []
    done = record.record_backtest(bad, allow_failed_quality=True)
    assert adapter.version_info(done.model_name, done.model_version).tags["data.quality"] == "failed"


def _flip_ma_cross(directory: Path) -> None:
    """Make a copy of the strategies package whose ma_cross takes the opposite position."""
    path = directory / "ma_cross.py"
    text = path.read_text()
    marker = "class MACross"
    assert marker in text
    path.write_text(text + "\n\n_positions = MACross.positions\nMACross.positions = "
                    "lambda self, bars: -_positions(self, bars)  # test copy: flipped\n")


def test_versions_with_different_strategy_code_load_side_by_side(bundle: Path, isolated_store: Path,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = record.record_backtest(bundle)
    flipped = tmp_path / "strategies"
    shutil.copytree(record.STRATEGIES_DIR, flipped, ignore=shutil.ignore_patterns("__pycache__"))
    _flip_ma_cross(flipped)
    monkeypatch.setattr(record, "STRATEGIES_DIR", flipped)
    v2 = record.record_backtest(bundle)
    p1 = adapter.version_info(v1.model_name, v1.model_version).tags["strategies.package"]
    p2 = adapter.version_info(v2.model_name, v2.model_version).tags["strategies.package"]
    assert p1 != p2 and p1.startswith("desk_strategies_") and p2.startswith("desk_strategies_")
    monkeypatch.setitem(sys.modules, "strategies", None)  # a foreign top-level "strategies" must not matter
    bars = pd.read_parquet(bundle / "bars.parquet").reset_index()
    bars["timestamp"] = bars["timestamp"].dt.tz_localize(None)
    frame = bars[["timestamp", "open", "high", "low", "close", "volume"]]
    last = json.loads((bundle / "backtest.json").read_text())["folds"][-1]["test_lo"]  # the deployed choice's block
    got1 = mlflow.pyfunc.load_model(v1.model_uri).predict(frame)["direction"].to_numpy()[last:]
    got2 = mlflow.pyfunc.load_model(v2.model_uri).predict(frame)["direction"].to_numpy()[last:]
    want = pd.read_parquet(bundle / "returns.parquet")["direction"].to_numpy()[last:]
    np.testing.assert_array_equal(got1, want)
    np.testing.assert_array_equal(got2, -want)  # the second version really runs its own code
    assert np.abs(want).max() == 1.0
