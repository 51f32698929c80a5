"""Tests of toolkit.stats.sharpe against hand computation and the papers' definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolkit.errors import ConfigurationError
from toolkit.stats import sharpe as s
from toolkit.stats.metrics import sharpe_ratio

GAMMA = 0.5772156649015329


def phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def phi_inv(p: float) -> float:
    # bisection on math.erf: independent of statistics.NormalDist used by the module
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if phi(mid) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


SAMPLE = [0.012, -0.004, 0.021, -0.015, 0.003, 0.008, -0.030, 0.017, 0.005, 0.011, -0.002, 0.026]


def hand_moments(xs: list[float]) -> tuple[float, float, float, int]:
    n = len(xs)
    mean = sum(xs) / n
    sd1 = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    m2 = sum((x - mean) ** 2 for x in xs) / n
    m3 = sum((x - mean) ** 3 for x in xs) / n
    m4 = sum((x - mean) ** 4 for x in xs) / n
    return mean / sd1, m3 / m2**1.5, m4 / m2**2, n


def test_sharpe_moments_by_hand() -> None:
    sr, skew, kurt, n = s.sharpe_moments(SAMPLE)
    hsr, hskew, hkurt, hn = hand_moments(SAMPLE)
    assert (sr, skew, kurt) == pytest.approx((hsr, hskew, hkurt), rel=1e-12)
    assert n == hn == 12
    assert sr == pytest.approx(sharpe_ratio(SAMPLE))


def test_psr_by_hand() -> None:
    sr, skew, kurt, n = hand_moments(SAMPLE)
    for bench in (0.0, 0.1, -0.05):
        z = (sr - bench) * math.sqrt(n - 1) / math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
        assert s.probabilistic_sharpe_ratio(SAMPLE, bench) == pytest.approx(phi(z), rel=1e-12)


def test_min_track_record_length_by_hand() -> None:
    sr, skew, kurt, _ = hand_moments(SAMPLE)
    for bench, alpha in ((0.0, 0.05), (0.1, 0.01)):
        expected = 1 + (1 - skew * sr + (kurt - 1) / 4 * sr**2) * (phi_inv(1 - alpha) / (sr - bench)) ** 2
        assert s.min_track_record_length(SAMPLE, bench, alpha) == pytest.approx(expected, rel=1e-9)
    assert s.min_track_record_length(SAMPLE, sr_benchmark=sr) == math.inf
    assert s.min_track_record_length([-x for x in SAMPLE]) == math.inf


def test_expected_max_sharpe_by_hand() -> None:
    trials = [0.05, -0.02, 0.11, 0.03, 0.0, 0.07, -0.04]
    n = len(trials)
    mean = sum(trials) / n
    v = sum((t - mean) ** 2 for t in trials) / (n - 1)
    expected = math.sqrt(v) * ((1 - GAMMA) * phi_inv(1 - 1 / n) + GAMMA * phi_inv(1 - 1 / (n * math.e)))
    assert s.expected_max_sharpe(trials) == pytest.approx(expected, rel=1e-9)
    # N = 2: Φ⁻¹(1/2) = 0 leaves only the γE term
    assert s.expected_max_sharpe([0.0, 0.1]) == pytest.approx(
        math.sqrt(0.005) * GAMMA * phi_inv(1 - 1 / (2 * math.e)), rel=1e-9
    )
    assert s.expected_max_sharpe([0.3]) == 0.0
    assert s.expected_max_sharpe([], n_trials=1) == 0.0


def test_expected_max_sharpe_matches_monte_carlo_of_normal_maxima() -> None:
    rng = np.random.default_rng(7)
    sims = rng.standard_normal((20_000, 100)).max(axis=1).mean()  # E[max of 100 N(0,1)] ≈ 2.508
    formula = s.expected_max_sharpe([], n_trials=100, trial_sharpe_variance=1.0)
    assert formula == pytest.approx(sims, rel=0.02)


def test_dsr_paper_worked_example() -> None:
    # Bailey & López de Prado (2014), numerical example: annualised SR 2.5 over 5 years of daily
    # returns (T = 1250), skew -3, kurtosis 10, N = 100 trials with annualised V[SR] = 1/2.
    # The paper reports DSR ≈ 0.9004 (so the strategy fails a 95% test).
    sr = 2.5 / math.sqrt(250)
    sr_star = s.expected_max_sharpe([], n_trials=100, trial_sharpe_variance=0.5 / 250)
    assert sr_star * math.sqrt(250) == pytest.approx(1.7894, abs=1e-3)
    dsr = s.psr_from_moments(sr, -3.0, 10.0, 1250, sr_star)
    assert dsr == pytest.approx(0.9004, abs=1e-4)


def test_psr_uses_raw_kurtosis_for_normal_returns() -> None:
    rng = np.random.default_rng(11)
    r = rng.normal(0.5, 1.0, 200_000)  # SR ≈ 0.5 per period, γ3 ≈ 0, γ4 ≈ 3
    sr, skew, kurt, n = s.sharpe_moments(r)
    assert kurt == pytest.approx(3.0, abs=0.05)
    assert skew == pytest.approx(0.0, abs=0.03)
    bench = sr - 0.0025  # z ≈ 1, where the two denominators differ most in probability
    psr = s.probabilistic_sharpe_ratio(r, bench)
    normal_denominator = math.sqrt(1 + sr**2 / 2)  # ≈ 1.061
    excess_denominator = math.sqrt(1 - skew * sr + (kurt - 3 - 1) / 4 * sr**2)  # the vectorbt mistake
    z = (sr - bench) * math.sqrt(n - 1) / normal_denominator
    assert psr == pytest.approx(phi(z), abs=2e-3)
    assert abs(psr - phi((sr - bench) * math.sqrt(n - 1) / excess_denominator)) > 0.015


def test_min_trl_reaches_the_target_confidence() -> None:
    sr, skew, kurt, _ = s.sharpe_moments(SAMPLE)
    for alpha in (0.05, 0.01, 0.2):
        trl = s.min_track_record_length(SAMPLE, 0.0, alpha)
        assert s.psr_from_moments(sr, skew, kurt, trl, 0.0) == pytest.approx(1 - alpha, abs=1e-9)
    # with real data: repeating the sample keeps its population moments and (nearly) its Sharpe
    rng = np.random.default_rng(3)
    base = rng.normal(0.01, 0.02, 50)
    trl = s.min_track_record_length(base, 0.0, 0.05)
    reps = max(1, round(trl / base.size))
    tiled = np.tile(base, reps)
    n_ratio = tiled.size / trl
    psr = s.probabilistic_sharpe_ratio(tiled, 0.0)
    assert psr == pytest.approx(phi(phi_inv(0.95) * math.sqrt(n_ratio)), abs=0.01)


def test_degenerate_inputs_give_nan() -> None:
    assert math.isnan(s.probabilistic_sharpe_ratio([0.01]))
    assert math.isnan(s.probabilistic_sharpe_ratio([0.01, 0.01, 0.01]))
    assert math.isnan(s.min_track_record_length([0.0, 0.0]))
    assert math.isnan(s.deflated_sharpe_ratio([], [0.1, 0.2]))
    assert all(math.isnan(v) for v in s.sharpe_moments([1.0, 1.0])[:3])


def test_input_errors_name_the_field() -> None:
    with pytest.raises(ConfigurationError, match="alpha"):
        s.min_track_record_length(SAMPLE, alpha=1.5)
    with pytest.raises(ConfigurationError, match="n_trials"):
        s.expected_max_sharpe([0.1, 0.2, 0.3], n_trials=2)
    with pytest.raises(ConfigurationError, match="n_trials"):
        s.expected_max_sharpe([0.1, 0.2], n_trials=0)
    with pytest.raises(ConfigurationError, match="trial_sharpe_variance"):
        s.expected_max_sharpe([0.1], n_trials=10)
    with pytest.raises(ConfigurationError, match="trial_sharpe_variance"):
        s.expected_max_sharpe([0.1, 0.2], trial_sharpe_variance=-1.0)
    with pytest.raises(ConfigurationError, match="trial_sharpes"):
        s.expected_max_sharpe([])
    with pytest.raises(ConfigurationError, match="trial_sharpes"):
        s.deflated_sharpe_ratio(SAMPLE, [0.1, math.nan])


def test_n_trials_override_uses_the_given_variance() -> None:
    trials = [0.01, 0.05, -0.02]
    v = float(np.var(trials, ddof=1))
    assert s.expected_max_sharpe(trials, n_trials=50) == pytest.approx(
        s.expected_max_sharpe([], n_trials=50, trial_sharpe_variance=v)
    )
    assert s.deflated_sharpe_ratio(SAMPLE, trials, n_trials=50) < s.deflated_sharpe_ratio(SAMPLE, trials)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 500), st.floats(1e-6, 0.05))
def test_dsr_below_psr_and_decreasing_in_n(seed: int, n_trials: int, variance: float) -> None:
    r = np.random.default_rng(seed).normal(0.002, 0.01, 300)
    psr0 = s.probabilistic_sharpe_ratio(r, 0.0)
    dsr = s.deflated_sharpe_ratio(r, [], n_trials=n_trials, trial_sharpe_variance=variance)
    more = s.deflated_sharpe_ratio(r, [], n_trials=n_trials * 2 + 1, trial_sharpe_variance=variance)
    assert dsr <= psr0
    assert more <= dsr
    if 1e-9 < psr0 < 1 - 1e-9:  # away from the saturated tails the inequalities are strict
        assert dsr < psr0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 100.0))
def test_psr_is_scale_invariant(seed: int, c: float) -> None:
    r = np.random.default_rng(seed).standard_t(4, 200) * 0.01 + 0.001
    assert s.probabilistic_sharpe_ratio(r * c, 0.02) == pytest.approx(
        s.probabilistic_sharpe_ratio(r, 0.02), rel=1e-9, abs=1e-12
    )


def test_expected_max_sharpe_of_effective_trials() -> None:
    from toolkit.stats.sharpe import expected_max_sharpe, expected_max_sharpe_effective

    for n in (2, 5, 36, 1000):  # an integer N gives eq. 6 itself
        assert expected_max_sharpe_effective(0.01, float(n)) == pytest.approx(expected_max_sharpe([], n, 0.01))
    assert expected_max_sharpe_effective(0.01, 1.0) == 0.0
    assert expected_max_sharpe_effective(0.01, 1.1) == 0.0  # about one trial: no selection, floored at 0
    grid = [expected_max_sharpe_effective(0.01, n) for n in np.linspace(1.0, 50.0, 200)]
    assert (np.diff(grid) >= 0).all()  # more independent trials, a higher bar
    with pytest.raises(ConfigurationError):
        expected_max_sharpe_effective(0.01, 0.5)
