"""The intraday risk posture from the journal alone (the runner stopped): figures checked by hand on a small
journal, then ``runner status`` (text and ``--json``) showing them."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from runner_support import write_config

from runner.cli import main
from runner.config import load_config
from runner.journal import Journal
from runner.posture import Z_99, deployment_posture, posture, record_reconciliation

T0 = int(pd.Timestamp("2024-03-01 16:00", tz="UTC").value // 1_000_000)
HOUR = 3_600_000
DAY = int(pd.Timestamp("2024-03-02", tz="UTC").value // 1_000_000)
CLOSES = [100.0, 101.0, 99.0, 100.0, 102.0, 103.0, 101.0, 104.0, 105.0, 103.0, 106.0, 108.0]  # 16:00 … 03:00


def _fill(trade: str, side: str, price: str, amount: str, fee: str, at: int) -> dict[str, object]:
    cost = str(Decimal(price) * Decimal(amount))
    return {"symbol": "BTC/USDT", "trade_id": trade, "exchange_order_id": trade, "client_order_id": f"btc-{trade}",
            "deployment": "btc", "side": side, "price": price, "amount": amount, "cost": cost, "fee": fee,
            "fee_asset": "USDT", "at": at, "recorded_at": at}


@pytest.fixture
def journal_config(tmp_path: Path) -> Path:
    path = write_config(tmp_path / "runner.toml", "http://127.0.0.1:9", tmp_path / "journal.sqlite",
                        deployment={"capital": 10000.0})
    j = Journal(tmp_path / "journal.sqlite")
    try:
        j.record_switch(T0, "btc", "m", "paper", None, "1", "start")
        j.record_bars("btc", [(T0 + i * HOUR, c, c, c, c, 1.0) for i, c in enumerate(CLOSES)])
        j.record_fills([_fill("1", "buy", "100", "10", "1", T0 + 5 * HOUR),            # 21:00 the day before
                        _fill("2", "sell", "110", "4", "0.44", DAY + 90 * 60_000)])    # 01:30 today
        j.set_meta("peak_equity:btc:1", "11000")
        j.set_meta("heartbeat", json.dumps({"exchange_ms": DAY + 4 * HOUR, "wall": 0.0, "cycle": 7}))
        record_reconciliation(j, DAY + 4 * HOUR, {"BTC": Decimal("0.01"), "USDT": Decimal("-2")})
        j.record_intent({"client_order_id": "btc-open", "deployment": "btc", "bar_time": DAY + 3 * HOUR, "leg": 0,
                         "symbol": "BTC/USDT", "side": "buy", "type": "market", "amount": "1", "arrival_price": "108",
                         "intent_at": DAY + 4 * HOUR, "state": "open", "updated_at": DAY + 4 * HOUR, "version": "1",
                         "purpose": "trade"})
    finally:
        j.close()
    return path


def test_the_posture_is_the_hand_computed_figures(journal_config: Path) -> None:
    cfg = load_config(journal_config)
    j = Journal(cfg.journal)
    try:
        p = deployment_posture(cfg, j, cfg.deployments[0], limits=(20.0, "test", 5.0))
    finally:
        j.close()
    last = 108.0
    equity = 10000 - 1000 - 1 + 440 - 0.44 + 6 * last              # 9,086.56
    day_start = 10000 - 1000 - 1 + 10 * 104.0                      # the 23:00 bar closed at 00:00: 104
    returns = np.diff(np.log(CLOSES))
    var = Z_99 * np.std(returns, ddof=1) * math.sqrt(24) * 6 * last
    assert p.position == "6" and p.last_price == last and p.exposure == pytest.approx(648.0)
    assert p.equity == pytest.approx(equity) and p.intraday_pnl == pytest.approx(equity - day_start)
    assert p.drawdown_pct == pytest.approx((11000 - equity) / 11000 * 100)
    assert (p.drawdown_limit_pct, p.drawdown_limit_source) == (20.0, "test")
    assert p.var_1d == pytest.approx(var) and p.var_limit == pytest.approx(0.05 * equity)
    assert p.open_orders == 1 and p.last_reconciliation == DAY + 4 * HOUR
    assert p.drift == {"BTC": "0.01", "USDT": "-2"} and p.drift_pct == pytest.approx((0.01 * last + 2) / 100)


def test_the_var_needs_ten_returns_and_scales_with_the_position(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path / "r.toml", "http://127.0.0.1:9", tmp_path / "j.sqlite"))
    j = Journal(cfg.journal)
    try:
        j.record_bars("btc", [(T0 + i * HOUR, c, c, c, c, 1.0) for i, c in enumerate(CLOSES[:10])])
        j.record_fills([_fill("1", "buy", "100", "2", "0", T0)])
        assert deployment_posture(cfg, j, cfg.deployments[0], (20.0, "t", 5.0)).var_1d is None  # 9 returns
        j.record_bars("btc", [(T0 + 10 * HOUR, 106.0, 106.0, 106.0, 106.0, 1.0)])
        two = deployment_posture(cfg, j, cfg.deployments[0], (20.0, "t", 5.0)).var_1d
        j.record_fills([_fill("2", "buy", "100", "2", "0", T0 + HOUR)])
        four = deployment_posture(cfg, j, cfg.deployments[0], (20.0, "t", 5.0)).var_1d
    finally:
        j.close()
    assert two is not None and four == pytest.approx(2 * two)


def test_runner_status_shows_the_posture_with_the_runner_stopped(journal_config: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(journal_config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["running"] is False
    d = doc["posture"]["deployments"]["btc"]
    assert d["exposure"] == pytest.approx(648.0) and d["open_orders"] == 1
    assert doc["posture"]["account"]["exposure"] == pytest.approx(648.0)
    assert doc["posture"]["var_method"].startswith("parametric 99 % one-day")
    cfg = load_config(journal_config)
    j = Journal(cfg.journal)
    try:
        assert doc["posture"]["deployments"]["btc"]["var_1d"] == pytest.approx(posture(cfg, j)["deployments"]["btc"]
                                                                                ["var_1d"])
    finally:
        j.close()
    assert main(["status", "--config", str(journal_config)]) == 0
    text = capsys.readouterr().out
    assert "risk posture" in text and "btc: exposure 648.00" in text and "open orders 1" in text
    assert "account: exposure 648.00" in text and "reconciled 2024-03-02T04:00:00+00:00" in text
