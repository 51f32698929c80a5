"""The evidence a verdict is computed from: the backtest's bundle plus what the gates measure.

``collect_evidence`` does the measuring the backtest did not record:

- **latency**: the strategy's decision (``last_position``) timed bar by bar on a
  replay of the bundle's bars, after untimed warm-up calls, each call handed a
  trailing window of ``max(window_bars, required_history)`` bars (what a live runner
  holds); every raw sample (nanoseconds, ``time.perf_counter_ns``) is kept;
- **lookahead**: positions recomputed on histories truncated at evenly spaced
  bars must equal the full-history positions at *every* bar up to the cut (not
  only where trades fired); the full positions are also compared with the
  positions the backtest recorded;
- **warm-up sensitivity** (recursion): the last decision on histories of
  ``ceil(m·required_history) + 1`` bars, for each multiple ``m``, against the full-history
  decision at the same bar (the strategy's declared ``required_history``);
- **cost stress**: the walk-forward record replayed at the policy's
  allocation with base costs and with fees and slippage multiplied by the
  policy's factor;
- **neighbours**: out-of-sample Sharpe of parameter sets next to the chosen one
  (adjacent grid values, or ±step for a parameter without a grid axis),
  simulated with the backtest's own costs and capital.

The extra evidence also records the policy settings it was measured under
(``settings``, see ``measurement_settings``): a gate evaluated under a policy with
other settings fails ("measured under different settings").

The extra evidence is one canonical JSON document (``gate_evidence.json``);
``Evidence.sha256()`` = sha256 of ``"<bundle sha256>\\n<sha256 of that document>"``.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from toolkit.backtest.bundle import BUNDLE_FILES, Bundle, bundle_sha256, load_bundle
from toolkit.backtest.config import BacktestConfig
from toolkit.canonical import canonical_json as _canonical_json
from toolkit.data.resample import bars_per_year
from toolkit.errors import ConfigurationError, DataError
from toolkit.gates.policy import GatePolicy
from toolkit.gates.resimulation import measure_costs_and_neighbours, neighbour_params
from toolkit.strategies import ParameterError, Strategy, make_strategy

__all__ = [
    "EXTRAS_FILE",
    "MEASURED_SECTIONS",
    "Evidence",
    "canonical_json",
    "collect_evidence",
    "lookahead_cuts",
    "measurement_settings",
    "neighbour_params",
]

EXTRAS_FILE = "gate_evidence.json"
EXTRAS_SCHEMA = 1
#: the policy sections whose settings shape a measurement (recorded in the extras under ``settings``)
MEASURED_SECTIONS = ("latency", "lookahead", "robustness", "cost_stress")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float(f"{value:.12g}")
    return value


def canonical_json(value: Any, indent: int | None = None) -> str:
    """Return deterministic JSON: sorted keys, floats at 12 significant digits, NaN -> null, inf -> "inf"."""
    return _canonical_json(_clean(value), indent=indent)


@dataclass(frozen=True, eq=False)
class Evidence:
    """A backtest bundle and the gates' extra measurements.

    Attributes
    ----------
    bundle_dir
        Directory holding the bundle files.
    bundle
        ``toolkit.backtest.bundle.load_bundle`` of it.
    bundle_sha
        ``bundle_sha256(bundle_dir)`` (the version tag ``evidence.sha256``).
    extras
        The extra measurements (JSON-safe; see the module docstring).
    """

    bundle_dir: Path
    bundle: Bundle
    bundle_sha: str
    extras: dict[str, Any]

    @property
    def config(self) -> BacktestConfig:
        return self.bundle.config

    @property
    def strategy_type(self) -> str:
        return str(self.bundle.strategy_type)

    @property
    def split_at(self) -> pd.Timestamp:
        return pd.Timestamp(self.bundle.split_at)

    @property
    def periods_per_year(self) -> float:
        return float(bars_per_year(self.config.timeframe))

    @property
    def returns(self) -> pd.Series:
        """Return the chosen configuration's per-bar returns over the whole period."""
        return self.bundle.returns["return"].astype("float64")  # type: ignore[no-any-return]

    @property
    def oos_returns(self) -> pd.Series:
        r = self.returns
        return r[r.index >= self.split_at]

    @property
    def latency_ns(self) -> np.ndarray:
        """Return the raw decision-latency samples in nanoseconds."""
        return np.asarray(self.extras["latency"]["samples_ns"], dtype=np.int64)

    def extras_json(self) -> str:
        """Return the canonical JSON of the extra evidence (the bytes ``write`` stores)."""
        return canonical_json(self.extras, indent=1) + "\n"

    def sha256(self) -> str:
        """Return sha256 of ``"<bundle sha>\\n<sha256 of extras_json()>"``."""
        extras_sha = hashlib.sha256(self.extras_json().encode()).hexdigest()
        return hashlib.sha256(f"{self.bundle_sha}\n{extras_sha}".encode()).hexdigest()

    def write(self, directory: str | Path) -> Path:
        """Write the extra evidence (``gate_evidence.json``, raw latency samples included) into ``directory``.

        Returns the path of the file written.
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        out = d / EXTRAS_FILE
        out.write_text(self.extras_json(), encoding="utf-8")
        return out

    @classmethod
    def read(cls, directory: str | Path, extras_dir: str | Path | None = None) -> Evidence:
        """Read a bundle and its extra evidence (``extras_dir`` defaults to the bundle's directory).

        Raises
        ------
        DataError
            A bundle file or ``gate_evidence.json`` is missing or unreadable, or the
            extras were collected on another bundle.
        """
        d = Path(directory)
        e = Path(extras_dir) if extras_dir is not None else d
        path = e / EXTRAS_FILE
        if not path.is_file():
            raise DataError(f"gate evidence: expected {path} (written by Evidence.write), found no file")
        try:
            extras = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"gate evidence {path}: expected JSON, found {exc}") from None
        bundle = load_bundle(d)
        sha = bundle_sha256(d)
        if extras.get("bundle_sha256") != sha:
            raise DataError(
                f"gate evidence {path}: expected extras for bundle {sha}, "
                f"found extras for {extras.get('bundle_sha256')}"
            )
        return cls(bundle_dir=d, bundle=bundle, bundle_sha=sha, extras=extras)


# --------------------------------------------------------------------------- measurements


def _window(strategy: Strategy, policy: GatePolicy) -> int:
    return max(policy.latency.window_bars, int(strategy.required_history))


def measure_latency(strategy: Strategy, bars: pd.DataFrame, policy: GatePolicy) -> dict[str, Any]:
    """Time ``strategy.last_position`` bar by bar on a replay of ``bars`` (raw samples in ns)."""
    lp = policy.latency
    length = _window(strategy, policy)
    n_bars = len(bars)
    if n_bars < 2:
        raise DataError(f"latency replay: expected at least 2 bars, found {n_bars}")
    ends = np.arange(min(length, n_bars) - 1, n_bars)  # every bar with a full window (or all bars)
    take = ends[-lp.min_samples :] if len(ends) >= lp.min_samples else np.resize(ends, lp.min_samples)
    windows = [bars.iloc[max(0, i - length + 1) : i + 1] for i in np.unique(take)]
    by_end = dict(zip(np.unique(take).tolist(), windows, strict=True))
    for i in range(lp.warmup_calls):
        strategy.last_position(by_end[int(take[i % len(take)])])
    samples = np.empty(len(take), dtype=np.int64)
    clock = time.perf_counter_ns
    for k, i in enumerate(take.tolist()):
        w = by_end[i]
        t0 = clock()
        strategy.last_position(w)
        samples[k] = clock() - t0
    return {
        "samples_ns": samples.tolist(),
        "window_bars": length,
        "warmup_calls": lp.warmup_calls,
        "distinct_bars": len(by_end),
        "first_bar": bars.index[int(take.min())],
        "last_bar": bars.index[int(take.max())],
        "timer": "time.perf_counter_ns",
        "host": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "system": platform.system(),
        },
    }


def _evenly(lo: int, hi: int, n: int) -> list[int]:
    if hi < lo:
        return []
    return sorted({round(x) for x in np.linspace(lo, hi, n)})


def lookahead_cuts(warmup: int, n_bars: int, samples: int) -> list[int]:
    """Return the bar indices where histories are truncated: ``samples`` evenly spaced after the warm-up.

    Fewer come back when the history has room for fewer distinct cuts (all achievable ones).
    """
    return _evenly(int(warmup) + 1, int(n_bars) - 1, int(samples))


def measurement_settings(policy: GatePolicy) -> dict[str, dict[str, Any]]:
    """Return the policy settings each measured section of the evidence depends on (JSON-safe).

    Thresholds are left out (they only judge a measurement); these settings change
    what is measured, so evidence measured under other settings must be collected again.
    """
    settings = {
        "latency": {
            "min_samples": policy.latency.min_samples,
            "warmup_calls": policy.latency.warmup_calls,
            "window_bars": policy.latency.window_bars,
        },
        "lookahead": {
            "samples": policy.lookahead.samples,
            "warmup_multiples": list(policy.lookahead.warmup_multiples),
            "warmup_samples": policy.lookahead.warmup_samples,
            "tolerance": policy.lookahead.tolerance,
        },
        "robustness": {"step": policy.robustness.step},
        "cost_stress": {"factor": policy.cost_stress.factor, "allocation_usdt": policy.capital.allocation_usdt},
    }
    return json.loads(canonical_json(settings))  # type: ignore[no-any-return]


def check_lookahead(
    strategy: Strategy, bars: pd.DataFrame, recorded: pd.Series, policy: GatePolicy, since: int = 0
) -> dict[str, Any]:
    """Compare positions on truncated histories with the full-history positions at every bar up to the cut.

    The full-history decisions are also compared with the ``recorded`` directions from bar
    ``since`` on (the last walk-forward block, where the deployed parameters decided).
    """
    tol = policy.lookahead.tolerance
    full = strategy.positions(bars).to_numpy(dtype="float64")
    points = lookahead_cuts(int(strategy.warmup), len(bars), policy.lookahead.samples)
    compared = mismatches = 0
    max_diff = 0.0
    first: dict[str, Any] | None = None
    for t in points:
        part = strategy.positions(bars.iloc[: t + 1]).to_numpy(dtype="float64")
        diff = np.abs(part - full[: t + 1])
        bad = diff > tol
        compared += t + 1
        mismatches += int(bad.sum())
        max_diff = max(max_diff, float(diff.max()))
        if first is None and bad.any():
            j = int(np.argmax(bad))
            first = {"cut_at": bars.index[t], "bar": bars.index[j], "truncated": part[j], "full": full[j]}
    rec = recorded.reindex(bars.index).to_numpy(dtype="float64")[since:]
    rec_diff = np.abs(np.nan_to_num(rec, nan=np.inf) - full[since:])
    return {
        "cut_points": [bars.index[t] for t in points],
        "decisions_compared": compared,
        "mismatches": mismatches,
        "max_abs_diff": max_diff,
        "first_mismatch": first,
        "recorded_compared": len(rec),
        "recorded_mismatches": int((rec_diff > tol).sum()),
    }


def check_warmup(strategy: Strategy, bars: pd.DataFrame, policy: GatePolicy) -> dict[str, Any]:
    """Measure how the last decision depends on the history length (multiples of the declared required history).

    A strategy whose decision on ``required_history`` bars differs from its decision on the
    full history cannot be started by the runner from that history.
    """
    w = int(strategy.required_history)
    lengths = {m: max(math.ceil(m * w) + 1, 2) for m in policy.lookahead.warmup_multiples}
    longest = max(lengths.values())
    full = strategy.positions(bars).to_numpy(dtype="float64")
    ends = _evenly(longest - 1, len(bars) - 1, policy.lookahead.warmup_samples)
    rows = []
    for m, n in sorted(lengths.items()):
        diffs = [abs(strategy.last_position(bars.iloc[e - n + 1 : e + 1]) - full[e]) for e in ends]
        rows.append(
            {
                "multiple": m,
                "bars": n,
                "compared": len(diffs),
                "max_abs_diff": max(diffs) if diffs else None,
                "mismatches": int(sum(d > policy.lookahead.tolerance for d in diffs)),
            }
        )
    return {"warmup": w, "end_points": [bars.index[e] for e in ends], "rows": rows}


def collect_evidence(bundle_dir: str | Path, policy: GatePolicy, registry_trials: int | None = None,
                     latency: dict[str, Any] | None = None, paper_record: dict[str, Any] | None = None) -> Evidence:
    """Measure what the gates need beyond the backtest's bundle.

    Parameters
    ----------
    bundle_dir
        A directory with the bundle files (``toolkit.backtest.bundle.BUNDLE_FILES``).
    policy
        The policy whose measurement settings apply (latency samples and window,
        lookahead samples, warm-up multiples, stress factor, allocation, step).
    registry_trials
        Trials the registry knows for this strategy and market up to this version (the sum of
        the combinations of every backtest run recorded under the same ledger key). The
        deflated Sharpe ratio uses the larger of this and the bundle's ledger, so a fresh or
        swapped local ledger cannot shrink N. None when no registry was asked.
    latency
        A latency block measured earlier on this bundle under the same latency settings
        (``extras["latency"]`` of the version's recorded gate evidence), reused as is so that
        re-evaluating a version gives the same evidence; None measures it now. The caller
        checks that it fits (``toolkit.gates.rederive.reusable_latency``).
    paper_record
        The version's paper record measured by post-trade attribution (``paper_record.json`` of its
        latest paper-stage attribution run); its derived figures are recomputed here from its stored
        inputs (``toolkit.attribution.record.rederive_paper_record``), so an edited figure does not
        survive. None: no paper record (the ``paper_record`` gate fails with "no paper record yet").

    Returns
    -------
    Evidence
        The bundle and the extra measurements; ``.write(dir)`` stores the extras.

    Raises
    ------
    DataError
        A bundle file is missing or the bars are too short to replay.
    ConfigurationError
        The bundle names a strategy or parameters that no longer validate.
    """
    d = Path(bundle_dir)
    bundle = load_bundle(d)
    cfg: BacktestConfig = bundle.config
    try:
        strategy = make_strategy(cfg.strategy, dict(bundle.chosen))
    except ParameterError as exc:
        raise ConfigurationError(exc.field, exc.expected, exc.found) from None
    bars: pd.DataFrame = bundle.bars
    cost, robust = measure_costs_and_neighbours(bundle, policy)
    extras: dict[str, Any] = {
        "schema": EXTRAS_SCHEMA,
        "settings": measurement_settings(policy),
        "bundle_sha256": bundle_sha256(d),
        "bundle_files": list(BUNDLE_FILES),
        "strategy": {
            "name": cfg.strategy,
            "params": dict(bundle.chosen),
            "warmup": int(strategy.warmup),
            "required_history": int(strategy.required_history),
            "type": bundle.strategy_type,
        },
        "lookahead": check_lookahead(strategy, bars, bundle.returns["direction"], policy,
                                     since=int(bundle.folds[-1]["test_lo"])),
        "warmup": check_warmup(strategy, bars, policy),
        "cost_stress": cost,
        "robustness": robust,
        "latency": measure_latency(strategy, bars, policy) if latency is None else latency,
        "registry_trials": None if registry_trials is None else int(registry_trials),
    }
    if paper_record is not None:
        from toolkit.attribution.record import rederive_paper_record

        extras["paper_record"] = rederive_paper_record(paper_record)
    extras = json.loads(canonical_json(extras))  # the exact values a reader of the file gets back
    return Evidence(bundle_dir=d, bundle=bundle, bundle_sha=extras["bundle_sha256"], extras=extras)
