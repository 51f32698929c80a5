"""``toolkit regimes`` and ``toolkit alerts``, through the CLI's entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from toolkit.cli import main
from toolkit.data import load_bars
from toolkit.ops.alerts import RULES
from toolkit.ops.regimes import RegimeMap


def test_alerts_check_and_prometheus(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["alerts", "check", "--json"]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["rules"]) == sorted(RULES)
    assert main(["alerts", "prometheus", "--for-minutes", "5"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert {r["labels"]["rule"] for r in doc["groups"][0]["rules"]} == set(RULES)
    bad = tmp_path / "rules.toml"
    bad.write_text((Path(__file__).resolve().parents[2] / "runner" / "alert_rules.toml").read_text()
                   .replace('severity = { low = "log", normal = "ticket", high = "page" }',
                            'severity = { low = "log", normal = "tick", high = "page" }'))
    assert main(["alerts", "check", "--rules", str(bad), "--json"]) == 2
    err = json.loads(capsys.readouterr().out)["error"]
    assert err["field"] == "rules.spread.severity.normal" and err["found"] == "tick"


def test_regimes_writes_a_map_that_reads_back(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "map.json"
    assert main(["regimes", "--timeframe", "1h", "--start", "2023-01-01", "--end", "2023-12-31",
                 "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = RegimeMap.from_json(out.read_text())
    assert stored.sha256 == printed["sha256"]
    assert stored.document["data"]["bars"] == len(load_bars("BTC/USDT", "1h", "2023-01-01", "2023-12-31"))
    assert main(["regimes", "--timeframe", "1d", "--start", "2023-01-01", "--end", "2023-12-31"]) == 2
    assert "bars: expected bars of one hour or shorter" in capsys.readouterr().err
