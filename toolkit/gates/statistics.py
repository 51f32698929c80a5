"""The statistics gates: out-of-sample Sharpe, PSR (with MinTRL), DSR against skill-less trials, PBO, trades.

Pure functions of (evidence, policy), one ``GateResult`` each; Sharpe ratios in inputs are
per period unless the name says annual.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from toolkit.gates.evidence import Evidence
from toolkit.gates.policy import GatePolicy
from toolkit.gates.result import GateResult, finite, fmt, gate
from toolkit.stats.metrics import sharpe_ratio
from toolkit.stats.pbo import pbo_cscv
from toolkit.stats.sharpe import (
    expected_max_sharpe,
    expected_max_sharpe_effective,
    min_track_record_length_from_moments,
    psr_from_moments,
    sharpe_moments,
)

__all__ = ["dsr", "mean_trial_correlation", "min_trades", "oos_sharpe", "pbo", "psr", "trial_sharpes"]


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
