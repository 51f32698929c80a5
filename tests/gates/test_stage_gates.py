"""Stages and the gates added with them: advisory gates, sizing, spot, paper record, MinTRL, comparable trials."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from gate_support import make_evidence, tweak, with_changes

from toolkit.errors import ConfigurationError
from toolkit.gates import GatePolicy, evaluate, load_policy
from toolkit.gates.checks import GATE_NAMES, GATES, trial_sharpes

BASE = make_evidence()


def test_gate_names_are_the_gates() -> None:
    names = [g.name for g in evaluate(BASE, load_policy(stage="live")).gates]
    assert tuple(names) == GATE_NAMES and len(GATES) == len(GATE_NAMES)
    assert "min_track_record" not in names  # MinTRL is a figure of the PSR gate, not a second vote


def test_advisory_gates_are_shown_but_do_not_vote(policy: GatePolicy) -> None:
    weak = make_evidence(drift=1.6e-4, n_trials=1000)  # a modest edge after 1000 independent trials: DSR fails
    strict = evaluate(weak, policy)
    assert "dsr" in strict.failed and not strict.passed
    relaxed = evaluate(weak, tweak(policy, advisory=["dsr"]))
    assert relaxed.gate("dsr").passed is False and relaxed.gate("dsr").enforced is False
    assert "dsr" not in relaxed.failed and "dsr" in relaxed.advisory_failed and relaxed.passed
    body = json.loads(relaxed.to_json())
    assert [g["enforced"] for g in body["gates"] if g["name"] == "dsr"] == [False]
    assert body["stage"] == "live" and body["toolkit_version"]


def test_an_unknown_advisory_gate_is_an_error(policy: GatePolicy) -> None:
    with pytest.raises(ConfigurationError) as e:
        evaluate(BASE, tweak(policy, advisory=["min_track_record"]))
    assert e.value.field == "policy.advisory" and "min_track_record" in str(e.value)


def test_paper_record_is_missing_until_attribution_measures_one(policy: GatePolicy) -> None:
    none = with_changes(BASE)
    del none.extras["paper_record"]
    g = evaluate(none, policy).gate("paper_record")
    assert not g.passed and "no paper record yet" in g.explanation
    short = with_changes(BASE, extras={"paper_record": {"days": 12.0, "consistency_p": 0.5}})
    assert not evaluate(short, policy).gate("paper_record").passed
    drifted = with_changes(BASE, extras={"paper_record": {"days": 90.0, "consistency_p": 0.01}})
    assert not evaluate(drifted, policy).gate("paper_record").passed
    assert evaluate(BASE, policy).gate("paper_record").passed


def test_sizing_must_aim_inside_the_risk_budget(policy: GatePolicy) -> None:
    from toolkit.strategies import Sizing

    hot = BASE.config.model_copy(update={"sizing": Sizing(target_vol_annual_pct=40.0)})
    g = evaluate(with_changes(BASE, {"config": hot}), policy).gate("sizing")
    assert not g.passed and g.inputs["target_vol_annual_pct"] == 40.0
    big = BASE.config.model_copy(update={"sizing": Sizing(max_position=2.0)})
    assert not evaluate(with_changes(BASE, {"config": big}), policy).gate("sizing").passed
    assert evaluate(BASE, policy).gate("sizing").passed


def test_spot_refuses_shorts_and_a_margin_policy_accepts_them(policy: GatePolicy) -> None:
    r = BASE.bundle.returns.copy()
    r.iloc[500:510, r.columns.get_loc("position")] = -0.2
    short = with_changes(BASE, {"returns": r})
    g = evaluate(short, policy).gate("spot_long_only")
    assert not g.passed and g.inputs["short_bars"] == 10
    assert not evaluate(with_changes(BASE, {"chosen": {"fast": 10, "slow": 50, "allow_short": True}}),
                        policy).gate("spot_long_only").passed
    margin = tweak(policy, capital={"allow_short": True})
    assert evaluate(short, margin).gate("spot_long_only").passed


def test_psr_reports_how_many_more_days_a_weak_edge_needs(policy: GatePolicy) -> None:
    weak = evaluate(make_evidence(drift=6e-5), policy).gate("psr")
    strong = evaluate(BASE, policy).gate("psr")
    assert not weak.passed and weak.inputs["days_more_needed"] > 0
    assert f"{weak.inputs['days_more_needed']:.0f} more days needed" in weak.explanation
    assert strong.passed and strong.inputs["days_more_needed"] == 0 and "met" in strong.explanation
    # the figure is MinTRL in days: observations / bars per day
    assert weak.inputs["min_trl_days"] == pytest.approx(weak.inputs["min_trl_obs"] / 24)


def test_v_sr_uses_comparable_trials_and_n_every_distinct_trial(policy: GatePolicy) -> None:
    trials = BASE.bundle.trials
    rng = np.random.default_rng(5)
    other = pd.DataFrame({"timeframe": "1h", "data_hash": "another-period", "params": trials["params"],
                          "sharpe_is": rng.normal(0, 1.0, len(trials)), "sharpe_oos": rng.normal(0, 1.0, len(trials))})
    new = pd.DataFrame({"timeframe": "15m", "data_hash": "demo", "params": ['{"fast": 99}'] * 3,
                        "sharpe_is": 5.0, "sharpe_oos": 5.0})
    mixed = with_changes(BASE, {"trials": pd.concat([other, trials, new], ignore_index=True)})
    sr, n = trial_sharpes(mixed, policy)
    base_sr, base_n = trial_sharpes(BASE, policy)
    np.testing.assert_array_equal(sr, base_sr)      # the short run on other bars does not touch V[SR]
    assert n == base_n + 1                           # a new parameter set (on any timeframe) is a new trial
    # the registry knows more trials than the ledger holds: the ledger lost some, N takes the registry's
    lost = with_changes(BASE, extras={"registry_trials": 500})
    assert trial_sharpes(lost, policy)[1] == 500


def test_dsr_null_variance_and_effective_trials(policy: GatePolicy) -> None:
    """Sampling variance ignores the ledger's skill spread; correlated trials count as fewer independent ones."""
    ev = make_evidence(drift=1.6e-4, n_trials=200)
    g = evaluate(ev, policy).gate("dsr")
    assert g.inputs["null_sharpe_variance"] == pytest.approx(1 / (len(ev.oos_returns) - 1))
    assert g.inputs["mean_trial_correlation"] < 0.05 and g.inputs["n_effective_trials"] > 150  # independent noise
    same = ev.bundle.trial_returns.copy()
    base = same.iloc[:, 0].to_numpy()
    for c in same.columns[1:]:  # 200 near-copies of one bet
        same[c] = base + 0.05 * same[c].to_numpy()
    one_bet = evaluate(with_changes(ev, {"trial_returns": same}), policy).gate("dsr")
    assert one_bet.inputs["mean_trial_correlation"] > 0.99 and one_bet.inputs["n_effective_trials"] <= 2
    assert one_bet.inputs["dsr"] > g.inputs["dsr"]
    spread = tweak(policy, statistics={"dsr_null_variance": "trials", "dsr_effective_trials": False})
    wide = pd.DataFrame({"timeframe": "1h", "data_hash": ev.bundle.data_hash,
                         "params": [f'{{"fast": {j}}}' for j in range(200)],
                         "sharpe_is": np.linspace(-0.3, 0.3, 200), "sharpe_oos": np.linspace(-0.3, 0.3, 200)})
    t = evaluate(with_changes(ev, {"trials": wide}), spread).gate("dsr")
    assert t.inputs["null_sharpe_variance"] == pytest.approx(np.var(np.linspace(-0.3, 0.3, 200), ddof=1))
    assert not t.passed


def test_pbo_votes_under_a_split_and_advises_under_walk_forward(policy: GatePolicy) -> None:
    m = BASE.bundle.trial_returns.copy()
    overfit = with_changes(BASE, {"trial_returns": m - m.mean()})
    wf = evaluate(overfit, policy).gate("pbo")
    split = evaluate(with_changes(overfit, {"config": BASE.config.model_copy(update={"selection": "split"})}),
                     policy).gate("pbo")
    assert not wf.passed and not wf.enforced
    assert not split.passed and split.enforced
    enforced = tweak(policy, statistics={"pbo_under_walk_forward": "enforced"})
    assert evaluate(overfit, enforced).gate("pbo").enforced


def test_the_dsr_figure_shows_the_gates_own_figure(policy: GatePolicy) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from toolkit.gates.plots import dsr_figure

    ev = make_evidence(drift=1.6e-4, n_trials=200)
    g = evaluate(ev, policy).gate("dsr")
    fig = dsr_figure(ev, policy)
    (x, y), = fig.axes[0].collections[0].get_offsets()
    assert x == pytest.approx(g.inputs["n_effective_trials"]) and y == pytest.approx(g.inputs["dsr"])
