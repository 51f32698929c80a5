"""Gates on a real recorded bundle: measurements, pass/fail under policies, determinism, tampering."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from gate_support import tweak

from toolkit.errors import DataError
from toolkit.gates import EXTRAS_FILE, Evidence, GatePolicy, evaluate, verify_verdict_json
from toolkit.gates.evidence import check_lookahead, check_warmup
from toolkit.gates.resimulation import neighbour_params
from toolkit.strategies import MACross

LENIENT = {
    "statistics": {"min_oos_sharpe": -100.0, "min_psr": 0.0, "min_dsr": 0.0, "max_pbo": 1.0, "min_trades": 0,
                   "mintrl_alpha": 0.5},
    "capital": {"max_drawdown_pct": 100.0, "var_99_1d_pct": 100.0, "cvar_99_1d_pct": 100.0,
                "worst_day_pct": 100.0, "max_gross_exposure": 10.0, "max_leverage": 10.0,
                "max_order_notional_usdt": 1e12, "max_volume_share": 1.0},
    "latency": {"budgets_p99_ms": {"hft": 1e6, "intraday": 1e6, "swing": 1e6}},
    "robustness": {"min_neighbour_ratio": -1e9, "min_neighbours": 0},
    "cost_stress": {"min_sharpe": -100.0},
    "advisory": ["paper_record"],  # no paper record exists before post-trade attribution measures one
}
STRICT = {
    "statistics": {"min_oos_sharpe": 100.0, "min_psr": 1.0, "min_dsr": 1.0, "max_pbo": 0.0, "min_trades": 10**6,
                   "mintrl_alpha": 1e-12},
    "capital": {"max_drawdown_pct": 0.01, "var_99_1d_pct": 0.01, "cvar_99_1d_pct": 0.01, "worst_day_pct": 0.01,
                "max_gross_exposure": 0.5, "max_leverage": 0.5, "max_order_notional_usdt": 1.0,
                "max_volume_share": 1e-9, "target_vol_annual_pct": 1.0},
    "latency": {"budgets_p99_ms": {"hft": 1e-6, "intraday": 1e-6, "swing": 1e-6}},
    "robustness": {"min_neighbour_ratio": 1e9, "min_neighbours": 1000},
    "cost_stress": {"min_sharpe": 100.0},
}
#: gates whose outcome depends on the strategy's code, not a threshold (tested below with bad strategies)
STRUCTURAL = {"data_quality", "lookahead", "warmup_sensitivity", "spot_long_only"}


def _lenient(policy: GatePolicy) -> GatePolicy:
    return tweak(policy, **LENIENT)


def test_measurements_on_a_real_bundle(real_evidence: Evidence, policy: GatePolicy) -> None:
    x = real_evidence.extras
    assert len(x["latency"]["samples_ns"]) == policy.latency.min_samples
    assert all(isinstance(s, int) and s > 0 for s in x["latency"]["samples_ns"])
    assert x["latency"]["window_bars"] >= x["strategy"]["required_history"]
    assert x["lookahead"]["mismatches"] == 0 and x["lookahead"]["recorded_mismatches"] == 0
    assert len(x["lookahead"]["cut_points"]) == policy.lookahead.samples
    assert [r["multiple"] for r in x["warmup"]["rows"]] == policy.lookahead.warmup_multiples
    # the re-simulated chosen configuration reproduces the recorded returns
    assert x["robustness"]["reproduction_max_abs_diff"] < 1e-12
    assert len(x["robustness"]["neighbours"]) >= 1
    # doubling costs can only hurt
    c = x["cost_stress"]
    assert c["stressed"]["total_return_oos"] < c["base"]["total_return_oos"]


def test_real_bundle_under_a_lenient_policy_passes(real_evidence: Evidence, policy: GatePolicy) -> None:
    v = evaluate(real_evidence, _lenient(policy))
    assert v.failed == [], [v.gate(n).explanation for n in v.failed]


def test_real_bundle_under_a_strict_policy_fails_every_threshold(real_evidence: Evidence,
                                                                   policy: GatePolicy) -> None:
    v = evaluate(real_evidence, tweak(policy, **STRICT))
    expected = [g.name for g in v.gates if g.name not in STRUCTURAL and g.name != "pbo"]
    assert v.failed == expected
    assert not v.gate("pbo").passed and not v.gate("pbo").enforced  # walk-forward: PBO is a diagnostic
    assert not v.passed


def test_gate_inputs_match_independent_computation(real_evidence: Evidence, policy: GatePolicy) -> None:
    from toolkit.stats import probabilistic_sharpe_ratio, sharpe_ratio

    v = evaluate(real_evidence, policy)
    oos = real_evidence.oos_returns
    assert v.gate("oos_sharpe").inputs["sharpe_oos_annual"] == pytest.approx(sharpe_ratio(oos, 365 * 24), rel=1e-9)
    assert v.gate("psr").inputs["psr"] == pytest.approx(probabilistic_sharpe_ratio(oos), rel=1e-9)
    assert v.gate("dsr").inputs["n_trials"] == len(real_evidence.bundle.trials)
    assert v.gate("min_trades").inputs["trades_oos"] == len(real_evidence.bundle.trades)
    lat = np.asarray(real_evidence.extras["latency"]["samples_ns"]) / 1e6
    assert v.gate("latency").inputs["p99_ms"] == pytest.approx(np.percentile(lat, 99), rel=1e-9)


def test_re_evaluation_is_byte_identical(real_evidence: Evidence, policy: GatePolicy, bundle_dir: Path,
                                         tmp_path: Path) -> None:
    first = evaluate(real_evidence, policy).to_json()
    assert evaluate(real_evidence, policy).to_json() == first
    real_evidence.write(tmp_path)
    again = evaluate(Evidence.read(bundle_dir, tmp_path), policy).to_json()
    assert again == first
    assert verify_verdict_json(first)
    d = json.loads(first)
    assert d["policy_sha"] == policy.sha256()
    assert d["evidence_sha"] == real_evidence.sha256()
    assert d["verdict"] in ("passed", "failed")
    assert d["passed"] == (d["failed"] == [])
    d["passed"] = not d["passed"]
    assert not verify_verdict_json(json.dumps(d, indent=2, sort_keys=True) + "\n")


def test_another_policy_gives_another_policy_sha(real_evidence: Evidence, policy: GatePolicy) -> None:
    a = json.loads(evaluate(real_evidence, policy).to_json())
    b = json.loads(evaluate(real_evidence, tweak(policy, statistics={"min_trades": 11})).to_json())
    assert a["policy_sha"] != b["policy_sha"]
    assert a["evidence_sha"] == b["evidence_sha"]
    assert a["verdict_sha"] != b["verdict_sha"]


def test_tampered_extras_change_the_evidence_sha(real_evidence: Evidence, bundle_dir: Path,
                                                 tmp_path: Path) -> None:
    real_evidence.write(tmp_path)
    path = tmp_path / EXTRAS_FILE
    data = json.loads(path.read_text())
    data["latency"]["samples_ns"][0] += 1
    path.write_text(json.dumps(data))
    assert Evidence.read(bundle_dir, tmp_path).sha256() != real_evidence.sha256()


def test_a_changed_bundle_no_longer_matches_its_extras(real_evidence: Evidence, bundle_dir: Path,
                                                       tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    real_evidence.write(copy)
    Evidence.read(copy)  # intact: reads
    trades = pd.read_parquet(copy / "trades.parquet")
    trades.iloc[:1].to_parquet(copy / "trades.parquet")
    with pytest.raises(DataError, match="expected extras for bundle"):
        Evidence.read(copy)
    (copy / EXTRAS_FILE).unlink()
    with pytest.raises(DataError, match=EXTRAS_FILE):
        Evidence.read(copy)


class _Peeking(MACross):
    """Uses the next bar's close: lookahead."""

    def signal(self, bars: pd.DataFrame) -> pd.Series:
        return (bars["close"].shift(-1) > bars["close"]).astype(float).where(bars["close"].shift(-1).notna())


class _Recursive(MACross):
    """Parity of all up-bars since the start of the history: depends on how long the history is."""

    @property
    def warmup(self) -> int:
        return 5

    def signal(self, bars: pd.DataFrame) -> pd.Series:
        return ((bars["close"].diff() > 0).cumsum() % 2).astype(float)


def test_lookahead_and_recursion_caught_on_real_bars(real_evidence: Evidence, policy: GatePolicy) -> None:
    bars = real_evidence.bundle.bars
    rec = real_evidence.bundle.returns["position"]
    honest = MACross(**real_evidence.bundle.chosen)
    assert check_lookahead(honest, bars, rec, policy)["mismatches"] == 0
    peek = check_lookahead(_Peeking(fast=5, slow=50), bars, rec, policy)
    assert peek["mismatches"] > 0 and peek["first_mismatch"] is not None
    assert peek["recorded_mismatches"] > 0
    loop = _Recursive(fast=5, slow=50)
    assert check_lookahead(loop, bars, rec, policy)["mismatches"] == 0  # no lookahead...
    assert sum(r["mismatches"] for r in check_warmup(loop, bars, policy)["rows"]) > 0  # ...but recursion
    assert sum(r["mismatches"] for r in check_warmup(honest, bars, policy)["rows"]) == 0


def test_neighbours_follow_the_grid_or_a_relative_step() -> None:
    got = neighbour_params({"fast": 10, "slow": 100}, {"fast": [5, 10, 20], "slow": [50, 100]}, "ma_cross", 0.2)
    assert got == [{"fast": 5, "slow": 100}, {"fast": 20, "slow": 100}, {"fast": 10, "slow": 50}]
    # no grid axis: +-20 %; fast >= slow combinations are skipped
    got = neighbour_params({"fast": 40, "slow": 50}, {}, "ma_cross", 0.2)
    assert got == [{"fast": 32, "slow": 50}, {"fast": 48, "slow": 50}, {"fast": 40, "slow": 60}]
    assert neighbour_params({"fast": 10, "slow": 50, "allow_short": True}, {}, "ma_cross", 0.2)[0] == {
        "fast": 8, "slow": 50, "allow_short": True}


MEASURED = {"latency": "latency", "lookahead": "lookahead", "warmup_sensitivity": "lookahead",
            "robustness": "robustness", "cost_stress": "cost_stress"}


@pytest.mark.parametrize(("section", "change"), [
    ("latency", {"window_bars": 1000}), ("latency", {"min_samples": 2000}), ("lookahead", {"samples": 20}),
    ("lookahead", {"warmup_multiples": [1.0, 3.0]}), ("robustness", {"step": 0.1}), ("cost_stress", {"factor": 3.0}),
])
def test_gates_measured_under_other_settings_fail(real_evidence: Evidence, policy: GatePolicy, section: str,
                                                  change: dict[str, object]) -> None:
    assert next(iter(change)) in real_evidence.extras["settings"][section]  # recorded by collect_evidence
    lenient = _lenient(policy)
    before = evaluate(real_evidence, lenient)
    after = evaluate(real_evidence, tweak(lenient, **{section: change}))
    stale = {name for name, sec in MEASURED.items() if sec == section}
    for name in stale:
        assert before.gate(name).passed
        g = after.gate(name)
        assert not g.passed and "measured under different settings" in g.explanation
        assert "re-run toolkit gates" in g.explanation and next(iter(change)) in g.explanation
    assert {g.name for g in after.gates if not g.passed and g.enforced} == stale


def test_evidence_without_recorded_settings_fails_the_measured_gates(real_evidence: Evidence,
                                                                     policy: GatePolicy) -> None:
    extras = {k: v for k, v in real_evidence.extras.items() if k != "settings"}
    bare = Evidence(bundle_dir=real_evidence.bundle_dir, bundle=real_evidence.bundle,
                    bundle_sha=real_evidence.bundle_sha, extras=extras)
    failed = set(evaluate(bare, _lenient(policy)).failed)
    assert failed == set(MEASURED)
