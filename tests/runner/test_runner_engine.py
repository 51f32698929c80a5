"""The runner in process against a real emulator over real ccxt, with a real promoted version in MLflow.

Parity with the backtest's code bar for bar; a timeout-after-acceptance fault does not duplicate an
order; the version checks refuse to start before any order (unknown model, alias unset, an alias set
by hand, a failed verdict, missing credentials).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from runner_support import CANARY_KEY, CANARY_SECRET, MODEL, PARAMS, SIZING, PromotedRegistry

from runner.engine import Runner
from toolkit.emulator import Emulator
from toolkit.emulator.testing import admin, step_clock
from toolkit.errors import ConfigurationError

ENV = {"TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY, "TOOLKIT_EXCHANGE_SECRET": CANARY_SECRET}
BARS = 36  # hours replayed by the parity test


def exchange_orders(emu: Emulator) -> list[dict[str, object]]:
    from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET
    from toolkit.exchange import exchange_client

    ex = exchange_client(url=emu.url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=emu.clock,
                         enableRateLimit=False)
    ex.load_markets()
    return list(ex.fetch_orders("BTC/USDT"))


def test_decisions_and_targets_equal_the_backtest_bar_for_bar(registry_env: PromotedRegistry,
                                                             make_emulator: Callable[..., Emulator],
                                                             make_runner: Callable[..., Runner]) -> None:
    from toolkit.backtest import config_from_params
    from toolkit.backtest.config import Fold
    from toolkit.backtest.engine import replay

    emu = make_emulator()
    r = make_runner(emu)
    r.open()
    for _ in range(BARS):
        r.cycle()
        step_clock(emu.url, 60)
    r.cycle()
    assert r.journal is not None and r.session is not None
    decisions = pd.DataFrame(r.journal.decisions("btc")).set_index("bar_time")
    assert len(decisions) == BARS + 1 and decisions.index.is_monotonic_increasing
    assert (np.diff(decisions.index) == 3_600_000).all()  # one decision per closed bar, none skipped or repeated
    version = r.versions["btc"]
    # the bars the exchange serves, from the runner's first history bar to its last decision (closed bars only)
    first = int(decisions.index[0]) - (version.required_history - 1) * version.bar_ms
    rows = r.session.fetch_ohlcv("BTC/USDT", "1h", since=first, limit=1000)
    bars = pd.DataFrame(rows, columns=["t", "open", "high", "low", "close", "volume"]).set_index("t")
    bars = bars.loc[: int(decisions.index[-1])]
    bars.index = pd.DatetimeIndex(pd.to_datetime(bars.index, unit="ms", utc=True), name="timestamp")
    assert len(bars) == version.required_history + BARS
    cfg = config_from_params(strategy="ma_cross", symbol="BTC/USDT", timeframe="1h", start="2024-02-20",
                             end="2024-03-04", grid={k: [v] for k, v in PARAMS.items()}, sizing=SIZING)
    # the backtest's own code path (directions, sizing, band, simulation), one fold over the whole stretch
    backtest = replay(cfg, bars, [Fold(train_lo=0, test_lo=0, test_hi=len(bars))], [PARAMS])
    k = version.required_history - 1
    assert (backtest.positions[:k] == 0).all()  # flat before the runner's first decision: the same start
    np.testing.assert_array_equal(decisions["direction"].to_numpy(), backtest.directions[k:])
    np.testing.assert_allclose(decisions["target"].to_numpy(), backtest.positions[k:], rtol=1e-12, atol=1e-15)
    assert decisions["decision_price"].astype(float).tolist() == bars["close"].iloc[k:].tolist()
    assert (decisions["target"] != 0).any() and decisions["target"].nunique() > 1  # the stretch trades
    # orders only when the target moved, as the backtest trades only on a changed target
    traded = {int(o["bar_time"]) for o in r.journal.orders("btc")}
    moved = set(decisions.index[decisions["target"].diff().fillna(decisions["target"]) != 0].astype(int))
    assert traded == moved
    # the journal's position is the exchange's balance
    balance = r.session.fetch_balance()
    pos = r.journal.position("btc", "BTC", "USDT")
    assert Decimal(str(balance["BTC"]["total"])) == pos.base
    assert r.journal.incidents(open_only=True) == []


def test_timeout_after_acceptance_does_not_duplicate_the_order(registry_env: PromotedRegistry,
                                                               make_emulator: Callable[..., Emulator],
                                                               make_runner: Callable[..., Runner]) -> None:
    emu = make_emulator()
    admin(emu.url, "POST", "/admin/faults", {"faults": [{"kind": "drop_after_order", "times": 1}], "replace": True})
    r = make_runner(emu)
    r.open()
    r.cycle()  # the first decision goes long: its order is accepted, the answer never arrives
    assert admin(emu.url, "GET", "/admin/faults")["counts"].get("drop_after_order") == 1
    for _ in range(2):
        step_clock(emu.url, 60)
        r.cycle()
    assert r.journal is not None
    orders = r.journal.orders("btc")
    first = orders[0]
    events = [e["state"] for e in r.journal.rows("SELECT state FROM order_events WHERE client_order_id = ? "
                                                 "ORDER BY seq", (first["client_order_id"],))]
    assert events[:3] == ["intent", "unknown", "closed"]  # looked up by client id, found, never re-sent
    on_exchange = exchange_orders(emu)
    assert [o["clientOrderId"] for o in on_exchange].count(first["client_order_id"]) == 1
    assert len(on_exchange) == len(orders)  # nothing but what the journal knows
    assert [i["kind"] for i in r.journal.incidents()] == ["outcome_unknown"]
    pos = r.journal.position("btc", "BTC", "USDT")
    assert pos.base > 0 and Decimal(str(r.session.fetch_balance()["BTC"]["total"])) == pos.base


@pytest.mark.parametrize("deployment, field", [
    ({"model": "no.such.model"}, "deployments[0].model"),
    ({"alias": "champion"}, "deployments[0].alias"),        # champion is unset
    ({"symbol": "ETH/USDT"}, "deployments[0].symbol"),     # the version trades BTC/USDT
])
def test_refuses_to_start_before_any_order(registry_env: PromotedRegistry, make_emulator: Callable[..., Emulator],
                                           make_runner: Callable[..., Runner], deployment: dict[str, str],
                                           field: str) -> None:
    emu = make_emulator()
    r = make_runner(emu, deployment=deployment)
    with pytest.raises(ConfigurationError) as err:
        r.open()
    assert err.value.field == field
    assert exchange_orders(emu) == []


def test_refuses_missing_credentials_before_reading_the_registry(make_emulator: Callable[..., Emulator],
                                                                 make_runner: Callable[..., Runner]) -> None:
    emu = make_emulator()
    r = make_runner(emu, environ={"TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY})
    with pytest.raises(ConfigurationError) as err:
        r.open()
    assert err.value.field == "environment TOOLKIT_EXCHANGE_SECRET"
    assert CANARY_KEY not in str(err.value)
    assert exchange_orders(emu) == [] and r.versions == {}


def test_refuses_an_alias_set_by_hand_and_a_failed_verdict(private_registry: PromotedRegistry,
                                                           make_emulator: Callable[..., Emulator],
                                                           make_runner: Callable[..., Runner]) -> None:
    from toolkit.registry import adapter

    emu = make_emulator()
    adapter.configure()  # the private copy (the environment points at it)
    assert adapter.alias_version(MODEL, "paper") == "1"
    adapter.set_alias(MODEL, "paper", "2")  # version 2 passed its paper gates but was never promoted
    with pytest.raises(ConfigurationError, match="set by hand") as err:
        make_runner(emu).open()
    assert err.value.field == "deployments[0].alias"
    adapter.set_alias(MODEL, "paper", "1")  # back to the promoted version, whose verdict is then marked failed
    make_runner(emu).preflight()  # starts again once the alias is the audited one
    adapter.set_version_tag(MODEL, "1", "gate.paper.verdict", "failed")
    with pytest.raises(ConfigurationError, match="passing paper verdict") as err:
        make_runner(emu).open()
    assert err.value.field == "deployments[0].alias"
    assert exchange_orders(emu) == []


def test_after_a_flatten_and_a_restart_the_next_decision_starts_from_the_position_held(
        registry_env: PromotedRegistry, make_emulator: Callable[..., Emulator],
        make_runner: Callable[..., Runner]) -> None:
    from runner import protect

    emu = make_emulator()
    r = make_runner(emu)
    r.open()
    r.cycle()  # the first decision buys
    assert r.journal is not None
    bought = r.journal.last_decision("btc")
    assert bought is not None and float(bought["target"]) > 0 and r.journal.position("btc", "BTC", "USDT").base > 0
    protect.flatten(r, r.cfg.deployments[0], "tests: the kill switch")
    assert r.journal.position("btc", "BTC", "USDT").base * 60_000 < 5
    r.close()
    again = Runner(r.cfg, environ={"TOOLKIT_EXCHANGE_API_KEY": CANARY_KEY, "TOOLKIT_EXCHANGE_SECRET": CANARY_SECRET})
    try:
        again.open()  # a new process: the flatten is known from the journal, not from memory
        assert again.is_fresh("btc")
        step_clock(emu.url, 60)
        again.cycle()
        assert again.journal is not None
        d = again.journal.last_decision("btc")
        # the position held (the dust under the market's minimum the flatten could not sell), not the last target
        assert d is not None and 0.0 <= float(d["held_before"]) < 1e-4 < float(bought["target"])
        assert float(d["target"]) > 0 and again.journal.position("btc", "BTC", "USDT").base > 0  # bought back
        assert not again.is_fresh("btc") and again.journal.get_meta("fresh:btc") == "0"
    finally:
        again.close()


@pytest.mark.parametrize("max_age_ms", [1000, 0])
def test_the_arrival_price_is_the_last_trade_the_cycles_klines_read_saw(registry_env: PromotedRegistry,
                                                                        make_emulator: Callable[..., Emulator],
                                                                        make_runner: Callable[..., Runner],
                                                                        max_age_ms: int) -> None:
    # a fresh read (1 s, the default) gives it without a request; 0 makes the runner ask ticker/price first
    emu = make_emulator()
    r = make_runner(emu, exchange={"clock_max_age_ms": max_age_ms})
    r.open()
    admin(emu.url, "DELETE", "/admin/requests")
    r.cycle()  # the first decision goes long from flat: one order
    asked = [q["path"] for q in admin(emu.url, "GET", "/admin/requests")]
    assert r.journal is not None and r.session is not None
    orders = r.journal.orders("btc")
    assert len(orders) == 1 and "/api/v3/klines" in asked
    assert asked.count("/api/v3/ticker/price") == (0 if max_age_ms else 1)
    # the emulator's last trade (its clock has not moved): what ticker/price answers now
    assert Decimal(orders[0]["arrival_price"]) == r.session.fetch_last_price("BTC/USDT")
