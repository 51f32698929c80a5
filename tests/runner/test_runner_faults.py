"""The fault matrix: each emulator fault (and each refusal Binance answers) against the runner in process, over
real ccxt. For every case: the runner survives (no exception out of its loop's reaction by class), the expected
incident is raised, the exchange holds no duplicate client order id and no order the journal does not know, and
the journal's position equals the exchange's balance."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from runner.engine import Runner
from toolkit.emulator import Emulator
from toolkit.emulator.testing import admin, step_clock

BARS = 6
ORDER = {"path": "/api/v3/order", "method": "POST"}

# (case, emulator options, runner config overrides, faults set after the first cycle, the incident expected)
CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[dict[str, Any]], str]] = [
    ("429 on an order", {}, {}, [{"kind": "rate_limit", "retry_after": 0, "times": 1, **ORDER}], "rate_limited"),
    ("418 ban on an order", {}, {}, [{"kind": "ban", "retry_after": 0, "times": 1, **ORDER}], "rate_limited"),
    ("503 on an order", {}, {}, [{"kind": "http_5xx", "status": 503, "times": 1, **ORDER}], "outcome_unknown"),
    ("timeout, not executed", {}, {"exchange": {"timeout_ms": 1000}},
     [{"kind": "timeout", "seconds": 2, "times": 1, **ORDER}], "outcome_unknown"),
    ("dropped after acceptance", {}, {}, [{"kind": "drop_after_order", "times": 1}], "outcome_unknown"),
    ("clock skew", {}, {}, [{"kind": "clock_skew", "skew_ms": -20000}], "clock_skew"),
    ("stale klines", {}, {}, [{"kind": "stale_klines", "lag_minutes": 180}], "stale_feed"),
    ("maintenance", {}, {}, [{"kind": "maintenance", "start": "2024-03-01T01:30:00Z", "end": "2024-03-01T02:30:00Z"}],
     "exchange_unavailable"),
    ("insufficient funds", {"balances": {"USDT": 50.0}}, {"rollback": {"max_rejections": 100}}, [], "order_rejected"),
    ("min notional", {}, {"deployment": {"capital": 6.0}}, [], "below_min_notional"),
]


def _attempts(r: Runner, emu: Emulator, bars: int, per_bar: int = 4) -> None:
    for _ in range(bars):
        step_clock(emu.url, 60)
        for _ in range(per_bar):  # a few cycles per bar: settling, backoff, the next leg
            r.attempt()


#: in ``make test``: one case per reaction (temporary, outcome unknown, stale feed, rejected); the rest: slow marker
FAST = ("429 on an order", "timeout, not executed", "dropped after acceptance", "stale klines", "insufficient funds")


@pytest.mark.parametrize("case, emu_opts, overrides, faults, incident", [
    pytest.param(*c, id=c[0], marks=() if c[0] in FAST else (pytest.mark.slow,)) for c in CASES])
def test_each_fault_is_survived_with_its_reaction(registry_env: Any, make_emulator: Callable[..., Emulator],
                                                  make_runner: Callable[..., Runner], case: str,
                                                  emu_opts: dict[str, Any], overrides: dict[str, Any],
                                                  faults: list[dict[str, Any]], incident: str) -> None:
    emu = make_emulator(**emu_opts)
    r = make_runner(emu, poll={"retry_initial_seconds": 0.01, "retry_max_seconds": 0.05}, **overrides)
    r._sleep = lambda _s: None  # type: ignore[method-assign]
    r.open()
    if case in ("stale klines", "clock skew"):
        r.attempt()  # a first decision with a good feed and clock
    admin(emu.url, "POST", "/admin/faults", {"faults": faults, "replace": True})
    if case != "stale klines":
        r.attempt()
    if case == "maintenance":  # each attempt in the window costs the reads' retries (~8 s): one per bar
        _attempts(r, emu, 2, per_bar=1)
        assert r.journal is not None and "exchange_unavailable" in [i["kind"] for i in r.journal.incidents()]
        _attempts(r, emu, BARS - 2)
        assert not [i for i in r.journal.incidents(open_only=True) if i["kind"] == "exchange_unavailable"]
    else:
        _attempts(r, emu, BARS if case != "stale klines" else 3)
    assert r.journal is not None and r.session is not None
    kinds = [i["kind"] for i in r.journal.incidents()]
    assert incident in kinds, kinds
    fired = admin(emu.url, "GET", "/admin/faults")["counts"]
    assert all(fired.get(f["kind"], 0) >= 1 for f in faults), fired
    if case == "stale klines":  # no new orders while stale; trading resumes once the feed is fresh
        n = len(r.journal.orders("btc"))
        blocking = [i for i in r.journal.incidents(open_only=True) if i["kind"] == "stale_feed"]
        assert blocking and blocking[0]["severity"] == "blocking"
        admin(emu.url, "DELETE", "/admin/faults")
        _attempts(r, emu, 2)
        assert not [i for i in r.journal.incidents(open_only=True) if i["kind"] == "stale_feed"]
        assert len(r.journal.orders("btc")) >= n
    else:
        assert len(r.journal.decisions("btc")) >= BARS  # the loop went on deciding
    _assert_books(r)
    if case == "min notional":
        assert r.journal.orders("btc") == []  # never sent: the exchange would refuse it (-1013, BadRequest)
    if case == "insufficient funds":
        rejected = [o for o in r.journal.orders("btc") if o["state"] == "rejected"]
        assert rejected and all(o["leg"] == 0 for o in rejected)  # no retry of a refused order within its bar
    if incident == "outcome_unknown":
        events = r.journal.rows("SELECT state FROM order_events WHERE state IN ('unknown', 'lookup_miss')")
        assert events and events[0]["state"] == "unknown"
        if case != "dropped after acceptance":  # not executed: looked up again before it is taken as not placed
            misses = [e for e in events if e["state"] == "lookup_miss"]
            assert len(misses) >= r.cfg.risk.not_found_lookups
            assert any(o["state"] == "not_placed" for o in r.journal.orders("btc"))


def _assert_books(r: Runner) -> None:
    assert r.journal is not None and r.session is not None
    on_exchange = r.session.fetch_orders("BTC/USDT")
    cids = [o.client_order_id for o in on_exchange]
    assert len(cids) == len(set(cids)), f"duplicate client order ids: {cids}"
    journaled = {o["client_order_id"]: o for o in r.journal.orders()}
    assert set(cids) <= set(journaled)
    pos = r.journal.position("btc", "BTC", "USDT")
    assert Decimal(str(r.session.fetch_balance()["BTC"]["total"])) == pos.base
