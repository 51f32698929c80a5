"""Tests of toolkit.stats.pbo: a loop reference, known outcomes and input errors."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

from toolkit.errors import ConfigurationError
from toolkit.stats.pbo import PBOResult, pbo_cscv


def reference_logits(x: np.ndarray, s: int) -> np.ndarray:
    """CSCV written the slow, obvious way: one combination at a time."""
    blocks = np.array_split(np.arange(x.shape[0]), s)
    n = x.shape[1]

    def sharpe(rows: np.ndarray) -> np.ndarray:
        sub = x[rows]
        mean, sd = sub.mean(axis=0), sub.std(axis=0, ddof=1)
        out = np.zeros(n)
        for j in range(n):
            if sd[j] > 0:
                out[j] = mean[j] / sd[j]
            elif mean[j] != 0:
                out[j] = math.copysign(math.inf, mean[j])
        return out

    logits = []
    for combo in itertools.combinations(range(s), s // 2):
        is_rows = np.concatenate([blocks[b] for b in combo])
        oos_rows = np.concatenate([blocks[b] for b in range(s) if b not in combo])
        best = int(np.argmax(sharpe(is_rows)))
        omega = rankdata(sharpe(oos_rows), method="average")[best] / (n + 1)
        logits.append(math.log(omega / (1 - omega)))
    return np.array(logits)


def test_matches_the_loop_reference_with_uneven_blocks() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0.0005, 0.01, (53, 7))  # 53 rows in 6 blocks: sizes 9,9,9,9,9,8
    x[:, 3] = 0.0  # a trial that never trades
    result = pbo_cscv(x, n_splits=6)
    expected = reference_logits(x, 6)
    np.testing.assert_allclose(result.logits, expected, rtol=1e-12, atol=1e-12)
    assert result.pbo == pytest.approx(np.mean(expected <= 0))
    assert result.n_combinations == 20 and result.n_splits == 6 and result.n_trials == 7


def test_accepts_a_dataframe_and_reports_degradation() -> None:
    rng = np.random.default_rng(9)
    frame = pd.DataFrame(rng.normal(0, 0.01, (120, 6)), columns=[f"trial_{i}" for i in range(6)])
    result = pbo_cscv(frame, n_splits=4)
    assert isinstance(result, PBOResult)
    assert result.logits.shape == result.is_sharpes.shape == result.oos_sharpes.shape == (6,)
    slope, intercept = np.polyfit(result.is_sharpes, result.oos_sharpes, 1)
    assert result.degradation_slope == pytest.approx(slope)
    assert result.degradation_intercept == pytest.approx(intercept)
    assert result.prob_oos_loss == pytest.approx(np.mean(result.oos_sharpes < 0))
    with pytest.raises(AttributeError):
        result.pbo = 0.0  # type: ignore[misc]


def test_a_trial_best_in_every_block_gives_pbo_zero() -> None:
    rng = np.random.default_rng(1)
    n = 30
    x = rng.normal(0.0, 0.01, (1600, n))
    x[:, 17] += 0.01  # Sharpe ≈ 1 per bar: best in every block by far
    result = pbo_cscv(x, n_splits=16)
    assert result.n_combinations == 12_870
    assert result.pbo == 0.0
    np.testing.assert_allclose(result.logits, math.log(n))  # ω = N / (N + 1) every time
    assert result.prob_oos_loss == 0.0


def test_pure_noise_gives_pbo_near_one_half() -> None:
    # Each seed's PBO is noisy (combinations share blocks); the mean over 20 seeds has a
    # standard error of about 0.045, so [0.35, 0.65] is a > 3-sigma band around 0.5.
    values = [pbo_cscv(np.random.default_rng(seed).normal(0, 0.01, (400, 20)), 8).pbo for seed in range(20)]
    assert 0.35 < float(np.mean(values)) < 0.65


def test_in_sample_luck_that_reverses_gives_pbo_near_one() -> None:
    # Trial j earns +a in block j and loses elsewhere; all trials have the same total.
    s, rows = 8, 50
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 0.001, (s * rows, s))
    for j in range(s):
        x[:, j] -= 0.01 / (s - 1)
        x[j * rows : (j + 1) * rows, j] += 0.01 + 0.01 / (s - 1)
    result = pbo_cscv(x, n_splits=s)
    assert result.pbo > 0.9
    assert result.degradation_slope < 0


@pytest.mark.parametrize("s,count", [(2, 2), (4, 6), (6, 20), (8, 70), (16, 12_870)])
def test_combination_count(s: int, count: int) -> None:
    x = np.random.default_rng(0).normal(0, 0.01, (max(4 * s, 32), 3))
    result = pbo_cscv(x, n_splits=s)
    assert result.n_combinations == count == math.comb(s, s // 2)
    assert result.logits.shape == (count,)


@pytest.mark.parametrize(
    "matrix,splits,field,fragment",
    [
        (np.zeros((40, 3)), 5, "n_splits", "even integer"),
        (np.zeros((40, 3)), 0, "n_splits", "even integer"),
        (np.zeros((40, 3)), 4.0, "n_splits", "even integer"),
        (np.zeros((40, 1)), 4, "trial_returns", "at least 2 trials"),
        (np.zeros((6, 3)), 8, "trial_returns", "at least n_splits=8 rows"),
        (np.zeros((3, 3)), 2, "trial_returns", "2 rows in each half"),
        (np.zeros(40), 4, "trial_returns", "2-D"),
        (np.where(np.eye(40, 3) > 0, np.nan, 0.0), 4, "trial_returns", "finite"),
    ],
)
def test_input_errors(matrix: np.ndarray, splits: object, field: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as info:
        pbo_cscv(matrix, n_splits=splits)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.slow
def test_full_size_noise_is_not_overfit_evidence() -> None:
    """At the gates' full size (1,000 trials, 16 splits: 12,870 combinations) pure noise gives PBO near 1/2.

    Its speed is measured by ``bench/bench_data.py`` (a benchmark, not an assertion here).
    """
    x = np.random.default_rng(0).normal(0, 0.01, (2000, 1000))
    result = pbo_cscv(x, n_splits=16)
    assert result.n_combinations == 12_870
    assert 0.3 < result.pbo < 0.7, result.pbo
