"""Edge or execution? The verdict on a live (or paper) record, a pure function of its measured inputs.

Inputs (:class:`RecordInputs`, all JSON-safe, stored with every attribution so the verdict
re-derives exactly; ``toolkit.gates`` re-computes it from them):

- the live per-bar returns **at decision prices** (the positions actually held, marked from
  one decision's close to the next, before execution costs and fees): what the signal earned;
- the backtest's per-bar returns at decision prices over its out-of-sample record (the
  version's bundle: sized positions × the next bar's close-to-close move), the
  distribution the live record is judged against;
- per order, the live implementation shortfall minus the fill model's cost for the same
  order (bps of X · P_d, fees included in both).

Tests, each one-sided at ``alpha`` (the paper policy's ``min_consistency_p``):

- **edge**: the PSR of the live Sharpe ratio against the backtest's Sharpe ratio as the
  benchmark (Bailey & López de Prado 2012; raw kurtosis) — the probability that the live
  record's true Sharpe is at least the backtest's — and a circular block bootstrap of the
  backtest's returns over windows as long as the live record (blocks of a day), whose p is
  the share of resampled Sharpe ratios at or below the live one. Per window, the larger of the
  two ("edge decaying" needs both to reject: serial dependence and fat tails fool the PSR
  alone; a short bootstrap window is coarse alone); over the whole record and its recent half
  (an edge lost mid-record shows there), Bonferroni-combined: ``consistency_p`` = 2 × the
  smaller, capped at 1;
- **execution**: a one-sided Student t test of the mean per-order excess cost over
  ``tolerance_bps`` (``execution_p``; small means execution is worse than the fill model by
  more than the tolerance);
- **length**: the minimum track record length (MinTRL) that tells the backtest's Sharpe
  ratio from zero at ``alpha`` is reported; the length **required** is the one at which a
  decay to no edge at all would be detected with probability ``power`` (80 %): MinTRL's
  formula with ``z_{1−alpha} + z_{power}`` in place of ``z_{1−alpha}`` (about 2.3 times MinTRL
  at 5 % and 80 %), in days, and at least the policy's ``min_days``. Shorter, "edge intact"
  would mostly mean "too short to tell".

Verdict, first that applies: ``execution worse than modelled`` (execution_p < alpha),
``edge decaying`` (consistency_p < alpha), ``not enough data yet`` (shorter than the
required days, with how many more), else ``edge intact``. The bootstrap's seed is fixed,
so the same inputs give the same figures on any machine with the pinned numpy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from toolkit.errors import ConfigurationError
from toolkit.stats.sharpe import min_track_record_length_from_moments, psr_from_moments, sharpe_moments

__all__ = ["EDGE_DECAYING", "EDGE_INTACT", "EXECUTION_TOLERANCE_BPS", "EXECUTION_WORSE", "NOT_ENOUGH", "VERDICTS",
           "RecordInputs", "RecordVerdict", "block_bootstrap_sharpes", "evaluate_record", "validate_tolerance_bps"]

EDGE_INTACT = "edge intact"
EDGE_DECAYING = "edge decaying"
EXECUTION_WORSE = "execution worse than modelled"
NOT_ENOUGH = "not enough data yet"
VERDICTS = (EDGE_INTACT, EDGE_DECAYING, EXECUTION_WORSE, NOT_ENOUGH)
#: execution may cost this much more than the fill model (bps of X·P_d) before it counts as worse
EXECUTION_TOLERANCE_BPS = 2.0
BOOTSTRAP_SEED = 20261130
#: the largest tolerance accepted (bps): beyond it the execution test could never fire on a real record
MAX_TOLERANCE_BPS = 1_000.0
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class RecordInputs:
    """What the verdict is computed from (JSON-safe; see the module docstring)."""

    live_returns: list[float]
    backtest_returns: list[float]
    excess_cost_bps: list[float]
    bars_per_day: float
    days: float
    alpha: float = 0.05
    min_days: float = 30.0
    tolerance_bps: float = EXECUTION_TOLERANCE_BPS
    power: float = 0.8
    bootstrap_samples: int = BOOTSTRAP_SAMPLES
    seed: int = BOOTSTRAP_SEED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordInputs:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass(frozen=True)
class RecordVerdict:
    """The verdict and every figure behind it (Sharpe ratios annualised at 365 days unless ``per_bar``)."""

    verdict: str
    sentence: str
    days: float
    required_days: float
    more_days: float
    live_bars: int
    orders: int
    live_sharpe: float | None
    backtest_sharpe: float | None
    psr_vs_backtest: float | None
    bootstrap_p: float | None
    consistency_p: float | None
    mean_excess_cost_bps: float | None
    execution_p: float | None
    mintrl_days: float | None
    alpha: float
    tolerance_bps: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_tolerance_bps(value: Any, field: str = "execution_tolerance_bps") -> float:
    """Return ``value`` as the execution tolerance (bps); raise ``ConfigurationError`` naming ``field`` otherwise."""
    want = f"a finite number of bps in [0, {MAX_TOLERANCE_BPS:g}]"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(field, want, value)
    v = float(value)
    if not math.isfinite(v) or not 0.0 <= v <= MAX_TOLERANCE_BPS:
        raise ConfigurationError(field, want, value)
    return v


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def block_bootstrap_sharpes(returns: np.ndarray, length: int, block: int, samples: int, seed: int) -> np.ndarray:
    """Return per-bar Sharpe ratios of ``samples`` circular block-bootstrap paths of ``length`` bars."""
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    block = max(1, min(int(block), length))
    n_blocks = -(-length // block)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n, size=(samples, n_blocks))
    out = np.empty(samples)
    offsets = np.arange(block)
    chunk = max(1, 4_000_000 // max(length, 1))
    for lo in range(0, samples, chunk):
        idx = (starts[lo:lo + chunk, :, None] + offsets) % n
        paths = r[idx.reshape(idx.shape[0], -1)[:, :length]]
        sd = paths.std(axis=1, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[lo:lo + chunk] = np.where(sd > 0, paths.mean(axis=1) / sd, np.nan)
    return out


def _t_sf(t: float, dof: int) -> float:
    from scipy.stats import t as student

    return float(student.sf(t, dof))


def _edge_test(live: np.ndarray, bt: np.ndarray, sr_b: float, inputs: RecordInputs) -> tuple[float, float]:
    """Return (PSR of the live Sharpe against the backtest's, block-bootstrap p) for one live window."""
    if len(live) < 2 or len(bt) < 2 or not math.isfinite(sr_b):
        return math.nan, math.nan
    sr_l, sk_l, ku_l, n_l = sharpe_moments(live)
    if not math.isfinite(sr_l):
        return math.nan, math.nan
    psr = psr_from_moments(sr_l, sk_l, ku_l, n_l, sr_b)
    sims = block_bootstrap_sharpes(bt, n_l, max(1, round(inputs.bars_per_day)), inputs.bootstrap_samples, inputs.seed)
    sims = sims[np.isfinite(sims)]
    boot_p = float((1 + np.sum(sims <= sr_l)) / (len(sims) + 1)) if len(sims) else math.nan
    return psr, boot_p


def evaluate_record(inputs: RecordInputs) -> RecordVerdict:
    """Return the verdict on a record (pure: the same inputs give the same verdict)."""
    live = np.asarray(inputs.live_returns, dtype=np.float64)
    bt = np.asarray(inputs.backtest_returns, dtype=np.float64)
    excess = np.asarray(inputs.excess_cost_bps, dtype=np.float64)
    ann = math.sqrt(365.0 * inputs.bars_per_day)
    notes: list[str] = []
    sr_l, _sk_l, _ku_l, n_l = sharpe_moments(live) if len(live) >= 2 else (math.nan, math.nan, math.nan, len(live))
    sr_b, sk_b, ku_b, _n_b = sharpe_moments(bt) if len(bt) >= 2 else (math.nan, math.nan, math.nan, len(bt))
    psr, boot_p = _edge_test(live, bt, sr_b, inputs)
    consistency = max(psr, boot_p) if math.isfinite(psr) and math.isfinite(boot_p) else math.nan
    half = len(live) // 2
    if math.isfinite(consistency) and half >= 2:  # the recent half too: an edge lost mid-record shows there
        psr_h, boot_h = _edge_test(live[half:], bt, sr_b, inputs)
        if math.isfinite(psr_h) and math.isfinite(boot_h):
            consistency = min(1.0, 2.0 * min(consistency, max(psr_h, boot_h)))  # Bonferroni over the two windows
    mintrl_bars = (min_track_record_length_from_moments(sr_b, sk_b, ku_b, 0.0, inputs.alpha)
                   if math.isfinite(sr_b) else math.nan)
    mintrl_days = mintrl_bars / inputs.bars_per_day if math.isfinite(mintrl_bars) else math.inf
    if not math.isfinite(mintrl_days):
        notes.append("the backtest's Sharpe ratio is not above zero: no record length can confirm its edge")
    z_a = NormalDist().inv_cdf(1.0 - inputs.alpha)
    z_b = NormalDist().inv_cdf(inputs.power)
    powered = 1.0 + (mintrl_bars - 1.0) * ((z_a + z_b) / z_a) ** 2 if math.isfinite(mintrl_bars) else math.inf
    required = max(float(inputs.min_days), powered / inputs.bars_per_day)
    exec_p, mean_excess = math.nan, math.nan
    if len(excess) >= 1:
        mean_excess = float(excess.mean())
    if len(excess) >= 2:
        sd = float(excess.std(ddof=1))
        if sd > 0:
            exec_p = _t_sf((mean_excess - inputs.tolerance_bps) / (sd / math.sqrt(len(excess))), len(excess) - 1)
        else:
            exec_p = 0.0 if mean_excess > inputs.tolerance_bps else 1.0
    more = max(0.0, required - inputs.days)
    a = inputs.alpha
    if math.isfinite(exec_p) and exec_p < a:
        verdict = EXECUTION_WORSE
        sentence = (f"Execution worse than modelled: orders cost {mean_excess:+.1f} bps more than the fill model "
                    f"on average over {len(excess)} orders (tolerance {inputs.tolerance_bps:g} bps, p = {exec_p:.3f}).")
    elif math.isfinite(consistency) and consistency < a:
        verdict = EDGE_DECAYING
        sentence = (f"Edge decaying: the live Sharpe ratio {sr_l * ann:.2f} is below the backtest's "
                    f"{sr_b * ann:.2f} beyond chance over {inputs.days:.1f} days (PSR {psr:.3f}, block bootstrap "
                    f"p = {boot_p:.3f}).")
    elif inputs.days < required or not math.isfinite(consistency) or not math.isfinite(exec_p):
        verdict = NOT_ENOUGH
        why = [] if math.isfinite(exec_p) else ["fewer than two orders to judge execution"]
        if not math.isfinite(consistency):
            why.append("no varying live returns to judge the edge")
        left = (f"{more:.0f} more days" if math.isfinite(more) else "an edge the backtest does not show")
        sentence = (f"Not enough data yet: {inputs.days:.1f} days of record, {left} needed "
                    f"(a decay to no edge is detected {inputs.power:.0%} of the time after {required:.0f} days; "
                    f"MinTRL {mintrl_days:.0f} days to tell the backtest's Sharpe {sr_b * ann:.2f} from zero; "
                    f"policy minimum {inputs.min_days:g})"
                    + (f"; {'; '.join(why)}" if why else "") + "; nothing so far says the edge or the execution "
                    "is worse than the backtest.")
    else:
        verdict = EDGE_INTACT
        sentence = (f"Edge intact: over {inputs.days:.1f} days the live Sharpe ratio {sr_l * ann:.2f} is consistent "
                    f"with the backtest's {sr_b * ann:.2f} (p = {consistency:.2f}) and execution costs "
                    f"{mean_excess:+.1f} bps against the fill model (within {inputs.tolerance_bps:g} bps).")
    return RecordVerdict(
        verdict=verdict, sentence=sentence, days=float(inputs.days), required_days=required, more_days=more,
        live_bars=int(n_l), orders=len(excess), live_sharpe=_finite(sr_l * ann), backtest_sharpe=_finite(sr_b * ann),
        psr_vs_backtest=_finite(psr), bootstrap_p=_finite(boot_p), consistency_p=_finite(consistency),
        mean_excess_cost_bps=_finite(mean_excess), execution_p=_finite(exec_p),
        mintrl_days=_finite(mintrl_days), alpha=a, tolerance_bps=inputs.tolerance_bps, notes=notes)
