"""Each gate with passing and failing evidence built from small hand-made frames."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from gate_support import make_evidence, tweak, with_changes

from toolkit.data.quality import data_hash
from toolkit.gates import Evidence, GatePolicy, evaluate
from toolkit.gates.checks import GATES

BASE = make_evidence()


def _returns_with(ev: Evidence, at: int, value: float) -> Evidence:
    r = ev.bundle.returns.copy()
    r.iloc[at, r.columns.get_loc("return")] = value
    return with_changes(ev, {"returns": r})


def _orders(**cols: object) -> Callable[[Evidence], Evidence]:
    def f(ev: Evidence) -> Evidence:
        o = ev.bundle.orders.copy()
        for k, v in cols.items():
            o[k] = v
        return with_changes(ev, {"orders": o})
    return f


def _volume_before_first_order(factor: float) -> Callable[[Evidence], Evidence]:
    # the one order (100k at bar 1) meets the quote volume of bar 0 (the 60 min horizon is one 1h bar)
    def f(ev: Evidence) -> Evidence:
        bars = ev.bundle.bars.copy()
        bars.iloc[0, bars.columns.get_loc("quote_volume")] *= factor
        return with_changes(ev, {"bars": bars})
    return f


def _split(ev: Evidence) -> Evidence:
    """The same evidence from a single in-sample/out-of-sample split (PBO votes there)."""
    return with_changes(ev, {"config": ev.config.model_copy(update={"selection": "split"})})


def _zero_mean_trials(ev: Evidence) -> Evidence:
    # every trial ends with the same total: whatever wins in-sample must lose out-of-sample
    m = ev.bundle.trial_returns.copy()
    return with_changes(_split(ev), {"trial_returns": m - m.mean()})


def _noisy_ledger(ev: Evidence) -> Evidence:
    rng = np.random.default_rng(3)
    trials = pd.DataFrame({"timeframe": ["1h"] * 1000, "sharpe_is": rng.normal(0, 0.2, 1000),
                           "sharpe_oos": rng.normal(0, 0.2, 1000), "data_hash": ev.bundle.data_hash,
                           "params": [f'{{"fast": {j}}}' for j in range(1000)]})
    return with_changes(ev, {"trials": trials})


def _holed_bars(ev: Evidence) -> Evidence:
    """Bars with a 12-bar hole (the policy allows 5), consistently hashed and certified as recorded."""
    bars = ev.bundle.bars.drop(ev.bundle.bars.index[3000:3012])
    dh = data_hash(bars)
    return with_changes(ev, {"bars": bars, "data_hash": dh, "certificate": {**ev.bundle.certificate,
                                                                           "data_hash": dh}})


def _tampered_bars(ev: Evidence) -> Evidence:
    bars = ev.bundle.bars.copy()
    bars.iloc[5, bars.columns.get_loc("close")] *= 1.01
    return with_changes(ev, {"bars": bars})


def _position(value: float) -> Callable[[Evidence], Evidence]:
    def f(ev: Evidence) -> Evidence:
        r = ev.bundle.returns.copy()
        r.iloc[100, r.columns.get_loc("position")] = value
        return with_changes(ev, {"returns": r})
    return f


FAILING: list[tuple[str, str, Callable[[Evidence], Evidence]]] = [
    ("data_quality", "a 12-bar hole the recorded certificate did not flag", _holed_bars),
    ("data_quality", "bars differ from the certified ones", _tampered_bars),
    ("oos_sharpe", "no drift", lambda e: make_evidence(drift=0.0)),
    ("psr", "negative drift", lambda e: make_evidence(drift=-1e-4)),
    ("dsr", "a modest edge after 1000 independent trials", lambda e: make_evidence(drift=1.6e-4, n_trials=1000)),
    ("psr", "a weak edge", lambda e: make_evidence(drift=3e-5)),
    ("pbo", "in-sample winners lose out of sample", _zero_mean_trials),
    ("pbo", "a single trial", lambda e: with_changes(_split(e), {"trial_returns": e.bundle.trial_returns.iloc[:, :1]})),
    ("min_trades", "3 trades", lambda e: make_evidence(trades=3)),
    ("max_drawdown", "a 30% loss in one bar", lambda e: _returns_with(e, 6000, -0.30)),
    ("var_99_1d", "daily volatility of ~10%", lambda e: make_evidence(vol=0.02, drift=2e-3)),
    ("var_99_1d", "fewer than 100 days", lambda e: make_evidence(n=24 * 60)),
    ("cvar_99_1d", "daily volatility of ~10%", lambda e: make_evidence(vol=0.02, drift=2e-3)),
    ("worst_day", "a 15% loss", lambda e: _returns_with(e, 6000, -0.15)),
    ("gross_exposure", "a 1.5x position", _position(1.5)),
    ("leverage", "an order three times the equity", _orders(size=3 * 100_000 / 40_000)),
    ("order_notional", "a 300k order", _orders(notional=300_000.0)),
    ("capacity", "5% of the horizon's volume", _volume_before_first_order(0.1)),
    ("capacity", "an order after a zero-volume horizon", _volume_before_first_order(0.0)),
    ("capacity", "an order outside the bars", _orders(timestamp=pd.Timestamp("2030-01-01", tz="UTC"))),
    ("cost_stress", "losing when costs double", lambda e: with_changes(e, extras={"cost_stress": {
        "stressed": {"sharpe_oos_annual": -0.4}}})),
    ("cost_stress", "stressed at another factor", lambda e: with_changes(e, extras={"cost_stress": {
        "factor": 1.5}})),
    ("latency", "60 ms decisions", lambda e: with_changes(e, extras={"latency": {
        "samples_ns": [60_000_000] * 1000}})),
    ("latency", "999 samples", lambda e: with_changes(e, extras={"latency": {"samples_ns": [1000] * 999}})),
    ("lookahead", "truncated histories disagree", lambda e: with_changes(e, extras={"lookahead": {
        "mismatches": 3}})),
    ("lookahead", "the recorded positions disagree", lambda e: with_changes(e, extras={"lookahead": {
        "recorded_mismatches": 1}})),
    ("warmup_sensitivity", "the last value depends on the history length", lambda e: with_changes(
        e, extras={"warmup": {"rows": [{"multiple": 1.0, "bars": 50, "compared": 10, "mismatches": 2}]}})),
    ("robustness", "neighbours collapse", lambda e: with_changes(e, extras={"robustness": {
        "neighbours": [{"sharpe_oos_annual": 0.5}, {"sharpe_oos_annual": 0.2}]}})),
    ("robustness", "one neighbour only", lambda e: with_changes(e, extras={"robustness": {
        "neighbours": [{"sharpe_oos_annual": 3.0}]}})),
    ("robustness", "undefined neighbour Sharpes", lambda e: with_changes(e, extras={"robustness": {
        "neighbours": [{"sharpe_oos_annual": None}, {"sharpe_oos_annual": None}]}})),
]


def test_hand_made_evidence_passes_every_gate(policy: GatePolicy) -> None:
    verdict = evaluate(BASE, policy)
    assert verdict.failed == []
    assert verdict.passed
    assert [g.name for g in verdict.gates] == [g(BASE, policy).name for g in GATES]
    for g in verdict.gates:
        assert g.explanation and "\n" not in g.explanation
        assert g.threshold and g.inputs


@pytest.mark.parametrize(("name", "case", "change"), FAILING, ids=[f"{n}: {c}" for n, c, _ in FAILING])
def test_gate_fails_on_bad_evidence(policy: GatePolicy, name: str, case: str,
                                    change: Callable[[Evidence], Evidence]) -> None:
    verdict = evaluate(change(BASE), policy)
    assert not verdict.gate(name).passed, verdict.gate(name).explanation
    assert not verdict.passed
    assert name in verdict.failed


def test_latency_budget_depends_on_strategy_type(policy: GatePolicy) -> None:
    slow = with_changes(BASE, extras={"latency": {"samples_ns": [60_000_000] * 1000}})
    assert not evaluate(slow, policy).gate("latency").passed
    swing = with_changes(slow, {"strategy_type": "swing"})
    gate = evaluate(swing, policy).gate("latency")
    assert gate.passed
    assert gate.threshold["p99_ms"] == 500.0
    assert gate.inputs["p99_ms"] == pytest.approx(60.0)


def test_thresholds_come_from_the_policy(policy: GatePolicy) -> None:
    strict = tweak(policy, statistics={"min_trades": 41}, capital={"max_volume_share": 0.004})
    v = evaluate(BASE, strict)
    assert v.failed == ["min_trades", "capacity"]
    assert v.gate("min_trades").inputs["trades_oos"] == 40


def test_allocation_scales_orders(policy: GatePolicy) -> None:
    big = tweak(policy, capital={"allocation_usdt": 1_000_000.0})
    # the one order (100k at bar 1) is restated against the equity before it: capital * (1 + r0)
    r0 = float(BASE.bundle.returns["return"].iloc[0])
    scale = 1_000_000.0 / (100_000.0 * (1.0 + r0))
    g = evaluate(BASE, big).gate("order_notional")
    assert g.inputs["max_order_notional_usdt"] == pytest.approx(100_000.0 * scale)
    horizon_volume = float(BASE.bundle.bars["quote_volume"].iloc[0])  # the hour before the order
    assert evaluate(BASE, big).gate("capacity").inputs["max_volume_share"] == pytest.approx(
        100_000.0 * scale / horizon_volume)


def test_orders_are_restated_at_a_constant_allocation(policy: GatePolicy) -> None:
    # equity doubled before a 200k order: at the 100k allocation that order is 100k
    r = BASE.bundle.returns.copy()
    r["return"] = 0.0
    r.iloc[0, r.columns.get_loc("return")] = 1.0
    idx = r.index
    orders = pd.DataFrame({"timestamp": [idx[5]], "side": ["buy"], "size": [1.0], "price": [200_000.0],
                           "notional": [200_000.0]})
    g = evaluate(with_changes(BASE, {"returns": r, "orders": orders}), policy)
    assert g.gate("order_notional").inputs["max_order_notional_usdt"] == pytest.approx(100_000.0)
    assert g.gate("capacity").inputs["max_volume_share"] == pytest.approx(
        100_000.0 / float(BASE.bundle.bars["quote_volume"].iloc[4]))


def test_drawdown_is_measured_against_the_allocation(policy: GatePolicy) -> None:
    # two bars of -10% then flat: 20% of a constant allocation (not 19% of compounded equity)
    r = BASE.bundle.returns.copy()
    r["return"] = 0.0
    at = int(np.searchsorted(r.index, BASE.split_at)) + 10  # the risk window is out-of-sample
    r.iloc[at:at + 2, r.columns.get_loc("return")] = -0.10
    g = evaluate(with_changes(BASE, {"returns": r}), policy).gate("max_drawdown")
    assert g.inputs["max_drawdown_pct_of_allocation"] == pytest.approx(20.0)
    assert g.inputs["max_drawdown_pct_compounded_equity"] == pytest.approx(19.0)
    assert g.inputs["max_drawdown_usdt"] == pytest.approx(20_000.0)


# --------------------------------------------------------------------------- measurement settings, cut count


def test_too_few_truncation_cuts_fail_the_lookahead_gate(policy: GatePolicy) -> None:
    one_cut = with_changes(BASE, extras={"lookahead": {"cut_points": ["x"]}})
    gate = evaluate(one_cut, policy).gate("lookahead")
    assert not gate.passed and "1 of the 40 truncation cuts" in gate.explanation
    assert evaluate(with_changes(BASE, extras={"lookahead": {"cut_points": ["x"] * 39}}), policy).gate(
        "lookahead").passed is False
    # a history with room for only 5 cuts after the warm-up (49): all 5 achievable cuts suffice
    short = with_changes(BASE, {"bars": BASE.bundle.bars.iloc[:55]}, extras={"lookahead": {
        "cut_points": ["x"] * 5}})
    assert evaluate(short, policy).gate("lookahead").passed


def test_dsr_counts_the_registry_trials_when_the_ledger_shows_fewer(policy: GatePolicy) -> None:
    ev = make_evidence()
    ledger_n = len(ev.bundle.trials)
    base = next(g for g in evaluate(ev, policy).gates if g.name == "dsr")
    more = with_changes(ev, extras={"registry_trials": ledger_n + 500})
    deflated = next(g for g in evaluate(more, policy).gates if g.name == "dsr")
    assert base.inputs["n_trials"] == ledger_n
    assert deflated.inputs["n_trials"] == ledger_n + 500
    assert deflated.inputs["n_trials_registry"] == ledger_n + 500
    assert deflated.inputs["dsr"] < base.inputs["dsr"]
    fewer = with_changes(ev, extras={"registry_trials": 1})  # the ledger knows more: it wins
    assert next(g for g in evaluate(fewer, policy).gates if g.name == "dsr").inputs["n_trials"] == ledger_n
