"""Tables and figures of the gate report (presentation only; every number comes from the gates)."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from toolkit.gates.checks import dsr as dsr_gate
from toolkit.gates.evidence import Evidence
from toolkit.gates.policy import GatePolicy
from toolkit.gates.result import fmt
from toolkit.gates.risk import drawdown_pct_of_allocation, risk_returns
from toolkit.gates.verdict import Verdict
from toolkit.stats.pbo import pbo_cscv
from toolkit.stats.sharpe import expected_max_sharpe_effective, psr_from_moments, sharpe_moments

__all__ = [
    "drawdown_figure",
    "dsr_figure",
    "gate_table",
    "latency_figure",
    "pbo_figure",
    "stage_note",
    "verdict_footer",
    "verdict_header",
]


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return fmt(value, ".4g")
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return "n/a"
    return str(value)


def _pairs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in d.items() if not isinstance(v, dict | list))


def gate_table(verdict: Verdict) -> pd.DataFrame:
    """Return one row per gate: result, whether it votes at this stage, measured values, threshold, explanation."""
    rows = [{
        "gate": g.name, "category": g.category, "result": "PASS" if g.passed else "FAIL",
        "votes": "yes" if g.enforced else "advisory",
        "measured": _pairs(g.inputs), "threshold": _pairs(g.threshold), "explanation": g.explanation,
    } for g in verdict.gates]
    return pd.DataFrame(rows).set_index("gate")


def verdict_header(verdict: Verdict, policy: GatePolicy) -> str:
    """Return the report's opening paragraph as Markdown."""
    s = verdict.subject
    state = "**PASSED**" if verdict.passed else f"**FAILED** ({', '.join(verdict.failed)})"
    n_pass = sum(g.passed for g in verdict.gates)
    advisory = f" ({len(verdict.advisory_failed)} advisory gates failed)" if verdict.advisory_failed else ""
    return (
        f"# Promotion gates: {s.get('model_name')}\n\n"
        f"**Verdict** ({policy.stage} stage): {state}: {n_pass} of {len(verdict.gates)} gates passed{advisory}.  \n"
        f"**Strategy**: {s.get('strategy')} ({s.get('strategy_type')}) {s.get('params')} on {s.get('symbol')} "
        f"{s.get('timeframe')}; out-of-sample from {s.get('split_at')}; {s.get('n_trials')} trials in the "
        "ledger.  \n"
        f"**Policy**: {policy.name} {policy.version}, allocation {policy.capital.allocation_usdt:,.0f} USDT."
    )


def stage_note(verdict: Verdict, policy: GatePolicy) -> str:
    """Return, as Markdown, the stage judged and which gates are advisory (shown, not voting) at it."""
    alias = {"paper": "paper", "live": "champion"}[policy.stage]
    advisory = [g for g in verdict.gates if not g.enforced]
    if not advisory:
        return f"**Stage**: {policy.stage} (alias `{alias}`): every gate votes."
    shown = ", ".join(f"{g.name} ({'pass' if g.passed else 'FAIL'})" for g in advisory)
    return (f"**Stage**: {policy.stage} (alias `{alias}`). **Advisory** at this stage (computed, shown, not "
            f"voting): {shown}.")


def verdict_footer(verdict: Verdict) -> str:
    """Return the hashes binding the verdict to its inputs, as Markdown."""
    return (
        f"**Hashes** (sha256): policy `{verdict.policy_sha}`, evidence `{verdict.evidence_sha}` "
        f"(bundle `{verdict.bundle_sha}`), verdict `{verdict.verdict_sha}`.  \n"
        f"Backtest `{verdict.subject.get('backtest_id')}`, data `{verdict.subject.get('data_hash')}`."
    )


def dsr_figure(evidence: Evidence, policy: GatePolicy) -> Figure:
    """Plot the deflated Sharpe ratio against the number of independent trials, as the DSR gate computes it.

    Same returns and the gate's null variance; the dot is the gate's own figure (its effective N).
    """
    sr, skew, kurt, n = sharpe_moments(evidence.oos_returns)
    g = dsr_gate(evidence, policy).inputs
    var = g.get("null_sharpe_variance")
    n_eff = float(g.get("n_effective_trials") or 0.0)
    if var is None or not math.isfinite(var):
        var = 0.0
    top = max(10.0 * float(g.get("n_trials") or 1), 1000.0)
    ns = np.unique(np.geomspace(1.0, top, 200))
    dsr = [psr_from_moments(sr, skew, kurt, n, expected_max_sharpe_effective(var, float(k))) for k in ns]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    ax.plot(ns, dsr, lw=1.4, label="DSR of the judged returns")
    ax.axhline(policy.statistics.min_dsr, color="tab:red", ls="--", lw=1, label=f"floor {policy.statistics.min_dsr}")
    here = g.get("dsr", math.nan)
    ax.scatter([max(n_eff, 1.0)], [here], color="black", zorder=3,
               label=f"{g.get('n_trials')} trials, {n_eff:.1f} independent: {fmt(here)}")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("number of independent trials")
    ax.set_ylabel("DSR")
    ax.set_title(f"Deflated Sharpe ratio vs independent trials (null V[SR] = {var:.3g} per period², n = {n})")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def pbo_figure(evidence: Evidence, policy: GatePolicy) -> Figure:
    """Plot the histogram of CSCV logits (left of 0 = the in-sample winner under the OOS median)."""
    mat = evidence.bundle.trial_returns.to_numpy(dtype="float64")
    fig, ax = plt.subplots(figsize=(9, 3.4))
    s = policy.statistics.pbo_splits
    if mat.shape[1] < 2 or mat.shape[0] < 2 * s:
        ax.text(0.5, 0.5, "PBO undefined (fewer than 2 trials or too few rows)", ha="center", transform=ax.transAxes)
        return fig
    res = pbo_cscv(np.nan_to_num(mat), s)
    logits = res.logits[np.isfinite(res.logits)]
    ax.hist(logits, bins=40, color="tab:blue", alpha=0.7)
    ax.axvline(0.0, color="tab:red", lw=1)
    ax.set_xlabel("logit λ of the in-sample winner's out-of-sample rank")
    ax.set_ylabel("combinations")
    ax.set_title(f"PBO = {res.pbo:.3f} (max {policy.statistics.max_pbo}); {res.n_trials} trials, "
                 f"{res.n_combinations:,} CSCV combinations of {s} blocks")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def drawdown_figure(evidence: Evidence, policy: GatePolicy) -> Figure:
    """Plot the drawdown in % of the allocation against its limit."""
    dd = drawdown_pct_of_allocation(risk_returns(evidence, policy), policy.capital.allocation_usdt)
    lim = policy.capital.max_drawdown_pct
    fig, ax = plt.subplots(figsize=(11, 3.0))
    ax.fill_between(dd.index, -dd.to_numpy(), 0.0, color="tab:red", alpha=0.4, step="post")
    ax.axhline(-lim, color="black", ls="--", lw=1, label=f"limit {lim:g}% of allocation")
    if policy.capital.risk_window == "full":
        ax.axvline(evidence.split_at, color="grey", ls=":", lw=1)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(100.0))
    ax.set_title(f"Drawdown, % of the {policy.capital.allocation_usdt:,.0f} USDT allocation "
                 f"(worst {float(dd.max()):.2f}%; window: {policy.capital.risk_window})")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def latency_figure(evidence: Evidence, policy: GatePolicy) -> Figure:
    """Plot the histogram of decision latencies with p50, p99 and the strategy type's budget."""
    x = evidence.latency_ns.astype("float64") / 1e6
    budget = policy.latency_budget_ms(evidence.strategy_type)
    p50, p99 = (float(np.percentile(x, q)) for q in (50, 99))
    fig, ax = plt.subplots(figsize=(9, 3.4))
    lo, hi = max(float(x.min()), 1e-6), max(float(x.max()), budget)
    ax.hist(x, bins=np.geomspace(lo, max(hi, lo * 1.01), 80).tolist(), color="tab:gray", alpha=0.8)
    ax.axvline(p50, color="tab:blue", lw=1, label=f"p50 {p50:.3f} ms")
    ax.axvline(p99, color="tab:orange", lw=1, label=f"p99 {p99:.3f} ms")
    ax.axvline(budget, color="tab:red", ls="--", lw=1.2, label=f"{evidence.strategy_type} budget {budget:g} ms")
    ax.set_xscale("log")
    ax.set_xlabel("decision latency (ms)")
    ax.set_ylabel("decisions")
    ax.set_title(f"Decision latency on a replay of {x.size:,} bars "
                 f"(window {evidence.extras['latency']['window_bars']} bars, warm)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
