"""The gates: pure functions of (evidence, policy), one ``GateResult`` each.

Every gate states what it measured (``inputs``), the limit it applied
(``threshold``), whether it passed and one line saying why. Undefined
measurements (no trades, a Sharpe without variance, too few trials) fail: a
gate passes only on positive evidence. Sharpe ratios in inputs are annualised
(365-day years) unless the name says ``per_period``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from toolkit.data.quality import data_hash
from toolkit.errors import ConfigurationError
from toolkit.gates.evidence import Evidence, lookahead_cuts, measurement_settings
from toolkit.gates.policy import GatePolicy
from toolkit.gates.result import GateResult, finite, fmt, gate
from toolkit.gates.risk import (
    capacity,
    cost_stress,
    cvar_99,
    exposure,
    leverage,
    max_drawdown,
    order_notional,
    sizing,
    spot_long_only,
    var_99,
    worst_day,
)
from toolkit.stats.metrics import sharpe_ratio
from toolkit.stats.pbo import pbo_cscv
from toolkit.stats.sharpe import (
    expected_max_sharpe,
    expected_max_sharpe_effective,
    min_track_record_length_from_moments,
    psr_from_moments,
    sharpe_moments,
)

__all__ = ["GATES", "GATE_NAMES", "MEASURED_BY", "GateResult", "run_gates", "settings_mismatch", "trial_sharpes",
           "votes"]


# --------------------------------------------------------------------------- data


def data_quality(ev: Evidence, pol: GatePolicy) -> GateResult:
    """The bars are re-certified under the policy's limits; the recorded hashes must describe them."""
    from toolkit.data.quality import certify

    cert = ev.bundle.certificate
    cfg = ev.config
    recomputed = data_hash(ev.bundle.bars)
    hashes = {"bars": recomputed, "backtest": ev.bundle.data_hash, "certificate": cert.get("data_hash")}
    match = len(set(hashes.values())) == 1
    again = certify(ev.bundle.bars, cfg.symbol, cfg.timeframe, pol.data.quality,
                    start=cfg.start, end=cfg.end).to_dict()
    cert_ok = bool(again.get("passed"))
    passed = (cert_ok or not pol.data.require_certificate_passed) and (
        match or not pol.data.require_hash_match
    )
    if not cert_ok:
        why = f"the bars fail the policy's data-quality checks {again.get('failed')}"
    elif not match:
        why = "data hash mismatch: the certificate or backtest does not describe these bars"
    else:
        why = (f"the exact {again.get('n_bars')} bars evaluated pass the policy's data-quality limits "
               f"(hash {recomputed[:12]}…)")
    return gate(
        "data_quality",
        "data",
        passed,
        {
            "certificate_passed": cert_ok,
            "recorded_certificate_passed": bool(cert.get("passed")),
            "failed_checks": again.get("failed", []),
            "data_hash": hashes,
            "n_bars": again.get("n_bars"),
            "expected_bars": again.get("expected_bars"),
        },
        {
            "certificate_passed": pol.data.require_certificate_passed,
            "hash_match": pol.data.require_hash_match,
            "quality": pol.data.quality.model_dump(),
        },
        why,
    )


# --------------------------------------------------------------------------- statistics


def trial_sharpes(ev: Evidence, pol: GatePolicy) -> tuple[np.ndarray, int]:
    """Return the comparable trials' Sharpes (per period of this timeframe) and N.

    V[SR] is estimated from comparable trials only: the same market, timeframe and
    period (the ledger rows of backtests on bars with this bundle's data hash), each
    Sharpe measured on its own sample, so a short demo run on other bars does not
    inflate it. N counts everything ever tried for the family (strategy and market):
    the distinct (timeframe, parameters) in the ledger, so re-running the same grid on
    another period is not a new trial. The registry's count of trials
    (``registry_trials``, every combination of every recorded run) guards the ledger:
    when it exceeds the ledger's rows, trials are missing from the ledger and N is
    the registry's count instead (never fewer than the ledger's distinct trials).
    """
    trials = ev.bundle.trials
    col = "sharpe_oos" if pol.statistics.dsr_trial_sharpe == "oos" else "sharpe_is"
    same = trials[(trials["data_hash"] == ev.bundle.data_hash) & (trials["timeframe"] == ev.config.timeframe)]
    sr = same[col].to_numpy(dtype="float64")
    distinct = len(set(zip(trials["timeframe"], trials["params"], strict=True)))
    registry = int(ev.extras.get("registry_trials") or 0)
    n = max(distinct, registry) if registry > len(trials) else distinct
    return sr[np.isfinite(sr)], n


def _stats_inputs(ev: Evidence) -> dict[str, Any]:
    sr, skew, kurt, n = sharpe_moments(ev.oos_returns)
    return {"sr": sr, "skew": skew, "kurt": kurt, "n": n}


def oos_sharpe(ev: Evidence, pol: GatePolicy) -> GateResult:
    s = sharpe_ratio(ev.oos_returns, ev.periods_per_year)
    lim = pol.statistics.min_oos_sharpe
    return gate(
        "oos_sharpe",
        "statistics",
        finite(s) and s >= lim,
        {"sharpe_oos_annual": s, "n_obs": len(ev.oos_returns)},
        {"min": lim},
        f"out-of-sample Sharpe {fmt(s, '.2f')} vs floor {lim:.2f} (annualised, 365-day years)",
    )


def psr(ev: Evidence, pol: GatePolicy) -> GateResult:
    """P(true Sharpe > 0), with MinTRL as the figure of how much more record would be needed (not a vote)."""
    m = _stats_inputs(ev)
    p = psr_from_moments(m["sr"], m["skew"], m["kurt"], m["n"], 0.0)
    lim = pol.statistics.min_psr
    alpha = pol.statistics.mintrl_alpha
    need = min_track_record_length_from_moments(m["sr"], m["skew"], m["kurt"], 0.0, alpha)
    per_day = ev.periods_per_year / 365.0
    more = max(0.0, (need - m["n"]) / per_day) if finite(need) else math.inf
    return gate(
        "psr",
        "statistics",
        finite(p) and p >= lim,
        {
            "psr": p,
            "sharpe_per_period": m["sr"],
            "skew": m["skew"],
            "kurtosis_raw": m["kurt"],
            "n_obs": m["n"],
            "min_trl_obs": need,
            "min_trl_days": need / per_day if finite(need) else math.inf,
            "days_more_needed": more,
        },
        {"min": lim, "sr_benchmark_per_period": 0.0, "mintrl_alpha": alpha},
        f"P(true Sharpe > 0) = {fmt(p)} vs floor {lim:.2f}; "
        + (f"MinTRL at {1 - alpha:.0%}: {fmt(need / per_day, '.0f')} days of record, "
           + ("met" if more == 0 else f"{more:.0f} more days needed") if finite(need)
           else "no record length suffices while the Sharpe is not above 0"),
    )


def mean_trial_correlation(ev: Evidence) -> float:
    """Return the mean pairwise correlation of this study's trial returns (0 with fewer than 2 trials)."""
    mat = np.nan_to_num(ev.bundle.trial_returns.to_numpy(dtype="float64"))
    keep = mat.std(axis=0) > 0
    if keep.sum() < 2:
        return 0.0
    c = np.corrcoef(mat[:, keep], rowvar=False)
    k = c.shape[0]
    return float((c.sum() - k) / (k * (k - 1)))


def dsr(ev: Evidence, pol: GatePolicy) -> GateResult:
    """P(true Sharpe > the best Sharpe N skill-less trials would show by luck) (Bailey & López de Prado).

    N counts the family's trials (``trial_sharpes``); with ``dsr_effective_trials`` it is
    deflated to the independent ones, N / (1 + (N − 1)·ρ̄), ρ̄ the mean correlation of the
    study's trial returns (a real number; ``expected_max_sharpe_effective``). V[SR] of skill-less
    trials is the Sharpe estimator's sampling variance 1/(n − 1) (``dsr_null_variance: sampling``;
    under the null every trial's true Sharpe is 0, so their estimates differ by sampling error alone), or the comparable
    trials' spread (``trials``; that spread also holds the trials' genuine skill differences).
    """
    m = _stats_inputs(ev)
    st = pol.statistics
    trials, n_trials = trial_sharpes(ev, pol)
    lim = st.min_dsr
    rho = mean_trial_correlation(ev) if st.dsr_effective_trials else 0.0
    n_eff = max(1.0, n_trials / (1.0 + (n_trials - 1) * max(rho, 0.0))) if n_trials >= 1 else 0.0
    if n_trials < 1 or (st.dsr_null_variance == "trials" and n_eff > 1 and trials.size < 2):
        return gate(
            "dsr",
            "statistics",
            False,
            {"n_trials": n_trials, "finite_trial_sharpes": int(trials.size)},
            {"min": lim},
            "DSR undefined: fewer than 2 comparable trials (same market, timeframe and period) in the ledger",
        )
    if st.dsr_null_variance == "sampling":
        var = 1.0 / (m["n"] - 1) if m["n"] > 1 else math.nan
    else:
        var = float(np.var(trials, ddof=1)) if trials.size > 1 else 0.0
    if not finite(var):
        sr0 = math.nan
    elif st.dsr_effective_trials:
        sr0 = expected_max_sharpe_effective(var, n_eff)
    else:
        sr0 = expected_max_sharpe([], n_trials, var)
    d = psr_from_moments(m["sr"], m["skew"], m["kurt"], m["n"], sr0)
    return gate(
        "dsr",
        "statistics",
        finite(d) and d >= lim,
        {
            "dsr": d,
            "sr0_per_period": sr0,
            "null_sharpe_variance": var,
            "null_variance": st.dsr_null_variance,
            "trial_sharpe_variance": float(np.var(trials, ddof=1)) if trials.size > 1 else None,
            "n_trials": n_trials,
            "mean_trial_correlation": rho,
            "n_effective_trials": n_eff,
            "n_trials_ledger": len(ev.bundle.trials),
            "n_comparable_trials": int(trials.size),
            "n_trials_registry": ev.extras.get("registry_trials"),
            "sharpe_per_period": m["sr"],
            "trial_sharpe": st.dsr_trial_sharpe,
        },
        {"min": lim},
        f"deflated Sharpe {fmt(d)} after {n_trials} trials ({n_eff:.1f} independent; SR0 {fmt(sr0, '.4f')}/bar) "
        f"vs floor {lim:.2f}",
    )


def pbo(ev: Evidence, pol: GatePolicy) -> GateResult:
    mat = ev.bundle.trial_returns.to_numpy(dtype="float64")
    s = pol.statistics.pbo_splits
    lim = pol.statistics.max_pbo
    if mat.shape[1] < 2 or mat.shape[0] < 2 * s:
        return gate(
            "pbo",
            "statistics",
            False,
            {"n_trials": int(mat.shape[1]), "n_rows": int(mat.shape[0])},
            {"max": lim, "n_splits": s},
            f"PBO undefined: needs >= 2 trials and >= {2 * s} rows, has {mat.shape[1]} and {mat.shape[0]}",
        )
    res = pbo_cscv(np.nan_to_num(mat), s)
    return gate(
        "pbo",
        "statistics",
        res.pbo <= lim,
        {
            "pbo": res.pbo,
            "n_trials": res.n_trials,
            "n_combinations": res.n_combinations,
            "logit_median": float(np.median(res.logits)),
            "prob_oos_loss": res.prob_oos_loss,
            "degradation_slope": res.degradation_slope,
        },
        {"max": lim, "n_splits": s},
        f"probability of backtest overfitting {res.pbo:.3f} over {res.n_combinations} CSCV splits "
        f"vs max {lim:.2f}",
    )


def min_trades(ev: Evidence, pol: GatePolicy) -> GateResult:
    n = len(ev.bundle.trades)
    lim = pol.statistics.min_trades
    return gate(
        "min_trades",
        "statistics",
        n >= lim,
        {"trades_oos": n},
        {"min": lim},
        f"{n} out-of-sample trades vs {lim} needed",
    )


# --------------------------------------------------------------------------- latency, lookahead, robustness


def latency(ev: Evidence, pol: GatePolicy) -> GateResult:
    x = ev.latency_ns.astype("float64") / 1e6
    budget = pol.latency_budget_ms(ev.strategy_type)
    p50 = float(np.percentile(x, 50)) if x.size else math.nan
    p99 = float(np.percentile(x, 99)) if x.size else math.nan
    enough = x.size >= pol.latency.min_samples
    why = (
        f"p99 decision latency {fmt(p99, '.3f')} ms ({x.size} samples) "
        f"vs {ev.strategy_type} budget {budget:g} ms"
    )
    if not enough:
        why = f"only {x.size} latency samples, policy needs {pol.latency.min_samples}"
    return gate(
        "latency",
        "latency",
        enough and finite(p99) and p99 <= budget,
        {
            "p50_ms": p50,
            "p99_ms": p99,
            "max_ms": float(x.max()) if x.size else math.nan,
            "samples": int(x.size),
            "strategy_type": ev.strategy_type,
            "window_bars": ev.extras["latency"]["window_bars"],
        },
        {"p99_ms": budget, "min_samples": pol.latency.min_samples},
        why,
    )


def lookahead(ev: Evidence, pol: GatePolicy) -> GateResult:
    la = ev.extras["lookahead"]
    lim = pol.lookahead.max_mismatches
    bad = la["mismatches"] + la["recorded_mismatches"]
    cuts = len(la["cut_points"])
    need = len(lookahead_cuts(int(ev.extras["warmup"]["warmup"]), len(ev.bundle.bars), pol.lookahead.samples))
    enough = need >= 1 and cuts >= need
    why = (
        f"{la['mismatches']} of {la['decisions_compared']:,} decisions differ on truncated histories "
        f"({cuts} cuts); {la['recorded_mismatches']} differ from the recorded positions"
    )
    if not enough:
        why = (f"only {cuts} of the {need} truncation cuts the policy asks for were checked "
               f"({pol.lookahead.samples} requested, {need} achievable on {len(ev.bundle.bars)} bars)"
               if need else "no truncation cut fits after the warm-up: lookahead cannot be checked")
    return gate(
        "lookahead",
        "lookahead",
        enough and bad <= lim,
        {
            k: la[k]
            for k in (
                "decisions_compared",
                "mismatches",
                "max_abs_diff",
                "first_mismatch",
                "recorded_mismatches",
            )
        }
        | {"cuts": len(la["cut_points"])},
        {"max_mismatches": lim, "tolerance": pol.lookahead.tolerance, "min_cuts": need},
        why,
    )


def recursion(ev: Evidence, pol: GatePolicy) -> GateResult:
    w = ev.extras["warmup"]
    rows = w["rows"]
    bad = sum(r["mismatches"] for r in rows)
    compared = sum(r["compared"] for r in rows)
    lim = pol.lookahead.max_mismatches
    return gate(
        "warmup_sensitivity",
        "lookahead",
        compared > 0 and bad <= lim,
        {"required_history_bars": w["warmup"], "rows": rows},
        {"max_mismatches": lim, "tolerance": pol.lookahead.tolerance},
        f"last decision on {len(rows)} history lengths (x required history {w['warmup']}) differs "
        f"{bad} of {compared} times from the full history",
    )


def robustness(ev: Evidence, pol: GatePolicy) -> GateResult:
    r = ev.extras["robustness"]
    chosen = r["sharpe_oos_annual"]
    sh = [n["sharpe_oos_annual"] for n in r["neighbours"]]
    scored = [s if finite(s) else -math.inf for s in sh]  # an undefined neighbour counts as the worst
    med = float(np.median(scored)) if scored else math.nan
    ratio = med / chosen if finite(med) and finite(chosen) and chosen > 0 else math.nan
    lim = pol.robustness.min_neighbour_ratio
    enough = len(sh) >= pol.robustness.min_neighbours
    why = (
        f"median neighbour OOS Sharpe {fmt(med, '.2f')} is {fmt(ratio, '.2f')}x the chosen "
        f"{fmt(chosen, '.2f')} ({len(sh)} neighbours) vs floor {lim:.2f}x"
    )
    if enough and not (finite(chosen) and chosen > 0):
        why = (f"the chosen OOS Sharpe {fmt(chosen, '.2f')} is not positive, so no neighbour ratio is defined "
               f"(median neighbour {fmt(med, '.2f')}, {len(sh)} neighbours)")
    if not enough:
        why = f"only {len(sh)} neighbouring parameter sets, policy needs {pol.robustness.min_neighbours}"
    return gate(
        "robustness",
        "robustness",
        enough and finite(ratio) and ratio >= lim,
        {
            "chosen_sharpe_oos_annual": chosen,
            "median_neighbour_sharpe": med,
            "ratio": ratio,
            "neighbours": r["neighbours"],
        },
        {"min_ratio": lim, "min_neighbours": pol.robustness.min_neighbours},
        why,
    )


def paper_record(ev: Evidence, pol: GatePolicy) -> GateResult:
    """A paper track record long enough and consistent with the backtest (post-trade attribution)."""
    rec = ev.extras.get("paper_record")
    lim = pol.paper_record
    if not isinstance(rec, dict):
        return gate("paper_record", "paper", False, {"days": 0, "consistency_p": None},
                    {"min_days": lim.min_days, "min_consistency_p": lim.min_consistency_p},
                    "no paper record yet: the version has not traded on paper (attribution measures it)")
    days, p = rec.get("days"), rec.get("consistency_p")
    ok = bool(finite(days) and finite(p) and days >= lim.min_days and p >= lim.min_consistency_p)  # type: ignore[operator]
    return gate("paper_record", "paper", ok, {"days": days, "consistency_p": p},
                {"min_days": lim.min_days, "min_consistency_p": lim.min_consistency_p},
                f"{fmt(days, '.0f')} days on paper (need {lim.min_days}); consistency with the backtest "
                f"p = {fmt(p)} (floor {lim.min_consistency_p:.2f})")


GATES: tuple[Callable[[Evidence, GatePolicy], GateResult], ...] = (
    data_quality,
    oos_sharpe,
    psr,
    dsr,
    pbo,
    min_trades,
    sizing,
    spot_long_only,
    max_drawdown,
    var_99,
    cvar_99,
    worst_day,
    exposure,
    leverage,
    order_notional,
    capacity,
    cost_stress,
    latency,
    lookahead,
    recursion,
    robustness,
    paper_record,
)

GATE_NAMES = ("data_quality", "oos_sharpe", "psr", "dsr", "pbo", "min_trades", "sizing", "spot_long_only",
              "max_drawdown", "var_99_1d", "cvar_99_1d", "worst_day", "gross_exposure", "leverage",
              "order_notional", "capacity", "cost_stress", "latency", "lookahead", "warmup_sensitivity",
              "robustness", "paper_record")


#: measured gate -> the policy section whose settings its measurement depends on
MEASURED_BY = {
    "latency": "latency",
    "lookahead": "lookahead",
    "warmup_sensitivity": "lookahead",
    "robustness": "robustness",
    "cost_stress": "cost_stress",
}


def settings_mismatch(ev: Evidence, pol: GatePolicy, section: str) -> str | None:
    """Return why the evidence's ``section`` was measured under other settings than ``pol``'s, else None."""
    wanted = measurement_settings(pol)[section]
    recorded = (ev.extras.get("settings") or {}).get(section)
    if not isinstance(recorded, dict):
        return (f"measured under different settings: the evidence records no {section} settings, the policy "
                f"asks for {wanted}; re-run toolkit gates")
    diff = [f"{k} measured {recorded.get(k)!r}, policy {v!r}" for k, v in sorted(wanted.items())
            if recorded.get(k) != v]
    diff += [f"{k} measured {recorded[k]!r}, policy has none" for k in sorted(set(recorded) - set(wanted))]
    if not diff:
        return None
    return f"measured under different settings ({section}: {'; '.join(diff)}); re-run toolkit gates"


def votes(name: str, ev: Evidence, pol: GatePolicy) -> bool:
    """Return whether gate ``name`` votes under ``pol`` (not advisory at this stage, nor PBO under walk-forward)."""
    if name in pol.advisory:
        return False
    return not (name == "pbo" and ev.config.selection == "walk_forward"
                and pol.statistics.pbo_under_walk_forward == "advisory")


def run_gates(ev: Evidence, pol: GatePolicy) -> list[GateResult]:
    """Run every gate in a fixed order.

    A measured gate (``MEASURED_BY``) fails, whatever its measurement, when the evidence
    was measured under other settings than ``pol``'s. Gates the policy names ``advisory``
    are computed and shown but do not vote (``enforced=False``).

    Raises
    ------
    ConfigurationError
        The policy names an advisory gate that does not exist.
    """
    unknown = sorted(set(pol.advisory) - set(GATE_NAMES))
    if unknown:
        raise ConfigurationError("policy.advisory", f"names of gates among {list(GATE_NAMES)}", unknown)
    out = []
    for g in GATES:
        result = g(ev, pol)
        section = MEASURED_BY.get(result.name)
        why = settings_mismatch(ev, pol, section) if section else None
        if why is not None and section is not None:
            result = GateResult(result.name, result.category, False,
                                {**result.inputs, "measured_settings": (ev.extras.get("settings") or {}).get(section)},
                                {**result.threshold, "settings": measurement_settings(pol)[section]}, why)
        if not votes(result.name, ev, pol):
            result = replace(result, enforced=False)
        out.append(result)
    return out
