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
from toolkit.gates.statistics import dsr, min_trades, oos_sharpe, pbo, psr, trial_sharpes

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
    """A paper track record long enough (policy minimum and MinTRL) and consistent with the backtest.

    Measured by post-trade attribution (``toolkit.attribution``) on the version's paper trading:
    the edge (live Sharpe at decision prices against the backtest's, PSR and block bootstrap) and
    the execution (shortfall against the fill model) must both be consistent at the policy's
    ``min_consistency_p``, measured under the policy's own thresholds, on this version's bundle.
    """
    rec = ev.extras.get("paper_record")
    lim = pol.paper_record
    threshold = {"min_days": lim.min_days, "min_consistency_p": lim.min_consistency_p,
                 "execution_tolerance_bps": lim.execution_tolerance_bps}
    if not isinstance(rec, dict):
        return gate("paper_record", "paper", False, {"days": 0, "consistency_p": None}, threshold,
                    "no paper record yet: the version has not traded on paper (attribution measures it)")
    days, p = rec.get("days"), rec.get("consistency_p")
    raw_inputs = rec.get("inputs")
    inputs: dict[str, Any] = raw_inputs if isinstance(raw_inputs, dict) else {}
    measured = {"days": days, "required_days": rec.get("required_days"), "consistency_p": p,
                "execution_p": rec.get("execution_p"), "verdict": rec.get("verdict"),
                "mean_excess_cost_bps": rec.get("mean_excess_cost_bps"), "journal_sha256": rec.get("journal_sha256")}
    if "verdict" not in rec:  # a bare (days, p) record, as the policy tests write it
        ok = bool(finite(days) and finite(p) and days >= lim.min_days and p >= lim.min_consistency_p)  # type: ignore[operator]
        return gate("paper_record", "paper", ok, measured, threshold,
                    f"{fmt(days, '.0f')} days on paper (need {lim.min_days}); consistency with the backtest "
                    f"p = {fmt(p)} (floor {lim.min_consistency_p:.2f})")
    problems = []
    if rec.get("bundle_sha256") != ev.bundle_sha:
        problems.append(f"measured against evidence {str(rec.get('bundle_sha256'))[:12]}, not this version's "
                        f"{ev.bundle_sha[:12]}")
    tolerance = inputs.get("tolerance_bps", 2.0)  # records before the setting existed used 2 bps
    if inputs.get("alpha") != lim.min_consistency_p or inputs.get("min_days") != float(lim.min_days) \
            or tolerance != lim.execution_tolerance_bps:
        problems.append(f"measured under other thresholds (alpha {inputs.get('alpha')}, min_days "
                        f"{inputs.get('min_days')}, execution tolerance {tolerance} bps): run `toolkit attribute` "
                        "again")
    if rec.get("verdict") != "edge intact":
        problems.append(str(rec.get("sentence") or rec.get("verdict")))
    ok = not problems and bool(finite(days) and finite(p) and days >= lim.min_days  # type: ignore[operator]
                               and finite(rec.get("required_days")) and days >= rec["required_days"]  # type: ignore[operator]
                               and p >= lim.min_consistency_p)  # type: ignore[operator]
    why = "; ".join(problems) if problems else str(rec.get("sentence"))
    return gate("paper_record", "paper", ok, measured, threshold, f"paper record: {why}")


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
