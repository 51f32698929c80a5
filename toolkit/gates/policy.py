"""The gate policy: a versioned, typed YAML file whose sha256 is its identity.

Every threshold a promotion decision depends on lives here, calibrated to a
capital allocation. Unknown keys, wrong types and missing budgets are errors
that name the field (``ConfigurationError``). The policy's identity is the
sha256 of its canonical JSON form (sorted keys, no whitespace), so two files
that differ only in comments, key order or ``1`` vs ``1.0`` have the same hash.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import pydantic

from toolkit.canonical import canonical_json, sha256_hex
from toolkit.data.quality import QualityThresholds
from toolkit.errors import ConfigurationError, from_pydantic

__all__ = [
    "DEFAULT_POLICY_PATH",
    "POLICY_ENV",
    "POLICY_PATHS",
    "STAGES",
    "CapitalPolicy",
    "CostStressPolicy",
    "DataPolicy",
    "GatePolicy",
    "LatencyPolicy",
    "LookaheadPolicy",
    "PaperRecordPolicy",
    "RobustnessPolicy",
    "StatisticsPolicy",
    "load_policy",
    "policy_from_dict",
    "policy_in_force_path",
]

STAGES = ("paper", "live")
#: the shipped policy of each stage
POLICY_PATHS = {stage: Path(__file__).resolve().parent / f"{stage}_policy.yaml" for stage in STAGES}
#: the live policy (what real capital is judged by); kept as the default of ``load_policy(path)`` callers
DEFAULT_POLICY_PATH = POLICY_PATHS["live"]
#: environment variable naming the policy in force, per stage
POLICY_ENV = {stage: f"TOOLKIT_POLICY_{stage.upper()}" for stage in STAGES}
STRATEGY_TYPES = ("hft", "intraday", "swing")
Stage = Literal["paper", "live"]


class _Section(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class CapitalPolicy(_Section):
    """Risk limits relative to the capital allocated to one strategy version."""

    allocation_usdt: float = pydantic.Field(gt=0.0, description="capital allocated to the strategy (USDT)")
    max_drawdown_pct: float = pydantic.Field(
        gt=0.0, le=100.0, description="peak-to-trough loss, % of allocation"
    )
    var_99_1d_pct: float = pydantic.Field(
        gt=0.0, le=100.0, description="99% one-day historical VaR, % of equity"
    )
    cvar_99_1d_pct: float = pydantic.Field(
        gt=0.0, le=100.0, description="99% one-day historical CVaR, % of equity"
    )
    worst_day_pct: float = pydantic.Field(
        gt=0.0, le=100.0, description="worst single UTC day loss, % of equity"
    )
    max_gross_exposure: float = pydantic.Field(gt=0.0, le=10.0, description="max |position| / equity")
    max_leverage: float = pydantic.Field(gt=0.0, le=10.0, description="max gross notional / equity")
    max_order_notional_usdt: float = pydantic.Field(
        gt=0.0, description="largest single order at the allocation"
    )
    max_volume_share: float = pydantic.Field(
        gt=0.0, le=1.0, description="order notional / quote volume traded over the execution horizon"
    )
    execution_horizon_minutes: int = pydantic.Field(
        ge=1, description="horizon an order is worked over: the closed bars before it that cover it"
    )
    risk_window: Literal["oos", "full"] = pydantic.Field(
        description="returns the risk gates read: out-of-sample only, or the whole evaluated period"
    )
    target_vol_annual_pct: float = pydantic.Field(
        gt=0.0, le=200.0, description="highest volatility target a version's sizing may aim at, % a year"
    )
    allow_short: bool = pydantic.Field(description="short positions allowed (needs a margin account model)")
    min_risk_days: int = pydantic.Field(ge=1, description="fewest UTC days a one-day VaR/CVaR is computed on")


class StatisticsPolicy(_Section):
    """Thresholds of the statistical gates (Sharpe ratios annualised unless named per-period)."""

    min_oos_sharpe: float = pydantic.Field(description="annualised out-of-sample Sharpe ratio floor")
    min_psr: float = pydantic.Field(ge=0.0, le=1.0, description="PSR against SR* = 0")
    min_dsr: float = pydantic.Field(ge=0.0, le=1.0, description="deflated Sharpe ratio floor")
    dsr_trial_sharpe: Literal["oos", "is"] = pydantic.Field(
        description="which ledger Sharpe gives the trials' variance V[SR] (dsr_null_variance: trials)"
    )
    dsr_null_variance: Literal["sampling", "trials"] = pydantic.Field(
        description="V[SR] of skill-less trials: the Sharpe estimator's sampling variance, or the trials' spread"
    )
    dsr_effective_trials: bool = pydantic.Field(
        description="deflate for N / (1 + (N-1)·mean correlation of the trials' returns) independent trials"
    )
    pbo_under_walk_forward: Literal["enforced", "advisory"] = pydantic.Field(
        description="whether PBO votes when the judged returns are walk-forward out-of-sample"
    )
    mintrl_alpha: float = pydantic.Field(
        gt=0.0, lt=1.0, description="significance of the MinTRL figure (days still needed; reported, not a gate)"
    )
    max_pbo: float = pydantic.Field(ge=0.0, le=1.0, description="highest acceptable PBO")
    pbo_splits: int = pydantic.Field(ge=2, le=24, description="S, the CSCV blocks (even)")
    min_trades: int = pydantic.Field(ge=0, description="out-of-sample trades needed")

    @pydantic.field_validator("pbo_splits")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"pbo_splits must be even, got {v}")
        return v


class LatencyPolicy(_Section):
    """Decision-latency budgets (p99, milliseconds) per strategy type and how to measure."""

    budgets_p99_ms: dict[Literal["hft", "intraday", "swing"], float] = pydantic.Field(
        description="p99 decision-latency budget per strategy type (ms)"
    )
    min_samples: int = pydantic.Field(ge=1000, description="timed decisions needed (>= 1000)")
    warmup_calls: int = pydantic.Field(ge=0, description="untimed calls before measuring (warm caches)")
    window_bars: int = pydantic.Field(
        ge=2, description="history handed to each decision (at least 2x warm-up)"
    )

    @pydantic.field_validator("budgets_p99_ms")
    @classmethod
    def _all_types(cls, v: dict[str, float]) -> dict[str, float]:
        missing = [t for t in STRATEGY_TYPES if t not in v]
        if missing:
            raise ValueError(f"missing budget for strategy type(s) {missing}")
        bad = {k: b for k, b in v.items() if not (math.isfinite(b) and b > 0)}
        if bad:
            raise ValueError(f"budgets must be finite and > 0, got {bad}")
        return v


class LookaheadPolicy(_Section):
    """Lookahead (truncated histories) and recursion (warm-up length) checks."""

    samples: int = pydantic.Field(ge=1, description="truncation points, evenly spaced after the warm-up")
    warmup_multiples: list[float] = pydantic.Field(
        min_length=1, description="history lengths (x warm-up) whose last decision must equal the full one"
    )
    warmup_samples: int = pydantic.Field(
        ge=1, description="end bars at which warm-up sensitivity is measured"
    )
    tolerance: float = pydantic.Field(ge=0.0, description="largest acceptable |difference| of positions")
    max_mismatches: int = pydantic.Field(ge=0, description="decisions allowed to differ (0: none)")


class RobustnessPolicy(_Section):
    """Neighbouring parameter sets against the chosen one."""

    step: float = pydantic.Field(
        gt=0.0, lt=1.0, description="relative step for parameters without a grid axis"
    )
    min_neighbour_ratio: float = pydantic.Field(
        description="median neighbour OOS Sharpe / chosen OOS Sharpe floor"
    )
    min_neighbours: int = pydantic.Field(ge=0, description="neighbours needed for the gate to be decidable")


class CostStressPolicy(_Section):
    """Re-simulation of the chosen configuration with costs scaled up."""

    factor: float = pydantic.Field(ge=1.0, description="fees and slippage multiplied by this")
    min_sharpe: float = pydantic.Field(description="annualised OOS Sharpe floor under stressed costs")


class DataPolicy(_Section):
    """The data-quality gate: the bars are re-certified under ``quality`` at evaluation."""

    require_certificate_passed: bool
    require_hash_match: bool = pydantic.Field(description="certificate and backtest hash == hash of the bars")
    quality: QualityThresholds = pydantic.Field(description="the data-quality limits the bars are certified under")


class PaperRecordPolicy(_Section):
    """The paper track record a version needs before live capital (measured by post-trade attribution)."""

    min_days: int = pydantic.Field(ge=0, description="UTC days traded on paper")
    min_consistency_p: float = pydantic.Field(
        ge=0.0, le=1.0, description="p-value floor of paper returns against the backtest's distribution"
    )
    execution_tolerance_bps: float = pydantic.Field(
        default=2.0, ge=0.0, le=1_000.0, allow_inf_nan=False,  # = toolkit.attribution.verdict's default and bound
        description="mean shortfall above the fill model's cost (bps) before execution counts as worse"
    )


class GatePolicy(_Section):
    """A complete, versioned gate policy (frozen; unknown keys are errors)."""

    schema_version: Literal[2]
    name: str = pydantic.Field(min_length=1)
    version: str = pydantic.Field(min_length=1, description="the policy's own version label")
    stage: Stage = pydantic.Field(description="the alias a passing verdict allows: paper or live (champion)")
    advisory: list[str] = pydantic.Field(
        default_factory=list, description="gates computed and shown but not voting at this stage"
    )
    capital: CapitalPolicy
    statistics: StatisticsPolicy
    latency: LatencyPolicy
    lookahead: LookaheadPolicy
    robustness: RobustnessPolicy
    cost_stress: CostStressPolicy
    data: DataPolicy
    paper_record: PaperRecordPolicy

    def canonical_json(self) -> str:
        """Return the canonical JSON form: sorted keys, compact, floats as floats."""
        return canonical_json(self.model_dump(mode="json"), ascii_only=True)

    def sha256(self) -> str:
        """Return the sha256 of ``canonical_json()`` (the policy's identity)."""
        return sha256_hex(self.canonical_json())

    def latency_budget_ms(self, strategy_type: str) -> float:
        """Return the p99 budget of ``strategy_type`` (hft, intraday or swing)."""
        try:
            return float(self.latency.budgets_p99_ms[strategy_type])  # type: ignore[index]
        except KeyError:
            raise ConfigurationError(
                "strategy_type", f"one of {list(STRATEGY_TYPES)}", strategy_type
            ) from None


def policy_from_dict(data: Any, source: str = "policy") -> GatePolicy:
    """Validate a mapping as a ``GatePolicy``; errors name the dotted field.

    Parameters
    ----------
    data
        The parsed YAML (a mapping).
    source
        Where it came from, for the message (a path).

    Raises
    ------
    ConfigurationError
        Unknown key, wrong type, missing field or value out of range.
    """
    if not isinstance(data, dict):
        raise ConfigurationError(source, "a YAML mapping of policy sections", type(data).__name__)
    try:
        return GatePolicy(**data)
    except pydantic.ValidationError as exc:
        raise from_pydantic(exc, root="policy") from None


def policy_in_force_path(stage: str = "live") -> Path:
    """Return the path of the ``stage`` gate policy in force: ``$TOOLKIT_POLICY_<STAGE>`` if set, else the shipped one.

    This is the one place the policy that promotion enforces is configured; a
    policy passed explicitly elsewhere (``toolkit gates --policy``) is a what-if
    evaluation whose verdict is promotable only if that file is the one in force.
    """
    if stage not in STAGES:
        raise ConfigurationError("stage", f"one of {list(STAGES)}", stage)
    env = os.environ.get(POLICY_ENV[stage], "").strip()
    return Path(env).expanduser() if env else POLICY_PATHS[stage]


def load_policy(path: str | Path | None = None, stage: str | None = None) -> GatePolicy:
    """Load and validate a gate policy YAML file.

    Parameters
    ----------
    path
        The policy file; ``None`` loads the policy in force for ``stage``
        (``policy_in_force_path(stage)``: ``$TOOLKIT_POLICY_<STAGE>``, else the shipped
        ``<stage>_policy.yaml``).
    stage
        ``paper`` or ``live``; when given, the file must declare that stage. ``None`` with
        ``path=None`` means ``live``.

    Returns
    -------
    GatePolicy
        The frozen policy; ``.sha256()`` is its identity.

    Raises
    ------
    ConfigurationError
        The file is missing or unreadable YAML, a field is unknown, missing, of the wrong
        type or out of range, or it is another stage's policy (the message names it).
    """
    import yaml

    want = stage or ("live" if path is None else None)
    p = Path(path) if path is not None else policy_in_force_path(want or "live")
    if not p.is_file():
        field = POLICY_ENV[want or "live"] if path is None else "policy_path"
        raise ConfigurationError(field, "an existing YAML file", str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigurationError("policy_path", "valid YAML", f"{p}: {exc}".splitlines()[0]) from None
    policy = policy_from_dict(data, str(p))
    if want is not None and policy.stage != want:
        raise ConfigurationError("policy.stage", f"a {want} policy", f"{policy.stage} ({p})")
    return policy
