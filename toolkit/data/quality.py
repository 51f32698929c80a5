"""The data-quality certificate of a bar frame, and its content hash.

``certify(bars, symbol, timeframe)`` measures a frame of bars (indexed by bar
open time, UTC, any timeframe) against ``QualityThresholds`` and returns a
``DataCertificate``: one entry per check with the count, the measured value, the
limit, up to five examples and whether it passed. Bad data never raises here:
reporting it is the point. Only a frame that is not a bar frame at all (no
datetime index, a missing OHLCV column, a non-numeric column) raises ``DataError``.

``data_hash(bars)`` is the identity of the data a model was fitted on; it goes
into every registered model version, so its definition is fixed (see there).

The defaults of ``QualityThresholds`` were chosen on the bundled real Binance
data: BTC/USDT 1m, 15m and 1h for 2024-01..2024-04 and ETH/USDT 1m for
2024-07-26..2024-08-25 pass; the real 2023-03-24 halt day (80 missing 1m bars,
72 flat zero-volume bars) fails on the gap, the missing share and both runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import pydantic

from toolkit.data.resample import BAR_COLUMNS, timeframe_minutes
from toolkit.data.store import parse_time
from toolkit.errors import ConfigurationError, DataError, DataQualityError, from_pydantic

__all__ = ["DataCertificate", "QualityCheck", "QualityThresholds", "certify", "data_hash"]

_MAX_EXAMPLES = 5
_NS_PER_MIN = 60 * 1_000_000_000
_CANONICAL_NAN = np.uint64(0x7FF8000000000000)
_HASH_DTYPE = np.dtype([("timestamp", "<i8")] + [(c, "<f8") for c in BAR_COLUMNS])


class QualityThresholds(pydantic.BaseModel):
    """Limits of the certificate; every check passes when its value is within its limit.

    Bar counts are in bars of the certified timeframe.
    """

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    min_bars: int = pydantic.Field(default=1, ge=0, description="fewest bars the frame must hold")
    max_missing_share: float = pydantic.Field(
        default=0.001, ge=0.0, le=1.0, description="missing bars / expected bars on the 24/7 grid"
    )
    max_gap_bars: int = pydantic.Field(default=5, ge=0, description="longest run of missing bars")
    max_duplicates: int = pydantic.Field(default=0, ge=0, description="rows repeating an earlier timestamp")
    max_non_monotonic: int = pydantic.Field(default=0, ge=0, description="rows earlier than the row before")
    max_off_grid: int = pydantic.Field(
        default=0, ge=0, description="rows whose open time is off the timeframe grid"
    )
    max_nonfinite: int = pydantic.Field(
        default=0, ge=0, description="rows with a NaN or infinite OHLCV value"
    )
    max_nonpositive: int = pydantic.Field(
        default=0, ge=0, description="rows with a price <= 0 or a volume < 0"
    )
    max_ohlc_violations: int = pydantic.Field(
        default=0, ge=0, description="rows where high < max(open, close, low) or low > min(open, close, high)"
    )
    max_zero_volume_run: int = pydantic.Field(default=10, ge=0, description="longest run of zero-volume bars")
    max_flat_run: int = pydantic.Field(
        default=10, ge=0, description="longest run of bars with open=high=low=close"
    )
    outlier_z: float = pydantic.Field(
        default=20.0, gt=0.0, description="robust z-score above which a 1-bar log return is an outlier"
    )
    max_outlier_share: float = pydantic.Field(
        default=0.001, ge=0.0, le=1.0, description="outlier returns / returns between adjacent bars"
    )

    @classmethod
    def build(cls, **overrides: Any) -> QualityThresholds:
        """Return the defaults with ``overrides`` (``None`` values ignored); raise ``ConfigurationError``."""
        given = {k: v for k, v in overrides.items() if v is not None}
        try:
            return cls(**given)
        except pydantic.ValidationError as exc:
            raise from_pydantic(exc, "quality", known=cls.model_fields) from None


@dataclass(frozen=True)
class QualityCheck:
    """One measured property: ``value`` compared with ``threshold`` by ``rule``."""

    name: str
    description: str
    count: int
    value: float
    threshold: float
    rule: Literal["<=", ">="]
    passed: bool
    examples: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return plain, JSON-safe values (non-finite numbers become ``None``)."""
        return _clean({
            "name": self.name, "description": self.description, "count": self.count,
            "value": self.value, "threshold": self.threshold, "rule": self.rule,
            "passed": self.passed, "examples": list(self.examples),
        })


@dataclass(frozen=True)
class DataCertificate:
    """The result of ``certify``: the checks, the frame's extent and its ``data_hash``."""

    symbol: str
    timeframe: str
    first_bar: str | None
    last_bar: str | None
    n_bars: int
    expected_bars: int
    checks: tuple[QualityCheck, ...]
    data_hash: str
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    requested_start: str | None = None
    requested_end: str | None = None

    @property
    def passed(self) -> bool:
        """Return True when every check passed."""
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[str]:
        """Return the names of the failed checks, in check order."""
        return [c.name for c in self.checks if not c.passed]

    def check(self, name: str) -> QualityCheck:
        """Return the check called ``name``."""
        for c in self.checks:
            if c.name == name:
                return c
        raise ConfigurationError("check", f"one of {[c.name for c in self.checks]}", name)

    def require(self) -> DataCertificate:
        """Return self when passed; otherwise raise ``DataQualityError`` naming the failed checks."""
        if not self.passed:
            parts = [f"{c.name}={_fmt(c.value)} (limit {c.rule} {_fmt(c.threshold)})"
                     for c in self.checks if not c.passed]
            raise DataQualityError(
                f"{self.symbol} {self.timeframe} {self.first_bar} to {self.last_bar}: expected data "
                f"within the quality thresholds, found {'; '.join(parts)}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the certificate as plain, JSON-safe values."""
        return _clean({
            "symbol": self.symbol, "timeframe": self.timeframe, "first_bar": self.first_bar,
            "last_bar": self.last_bar, "n_bars": self.n_bars, "expected_bars": self.expected_bars,
            "passed": self.passed, "failed": self.failed, "data_hash": self.data_hash,
            "thresholds": self.thresholds.model_dump(),
            "requested_start": self.requested_start, "requested_end": self.requested_end,
            "checks": [c.to_dict() for c in self.checks],
        })

    def to_json(self, indent: int | None = 2) -> str:
        """Return deterministic JSON: sorted keys, no NaN (``None`` instead)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=indent, allow_nan=False)

    def to_table(self) -> str:
        """Return a fixed-width table for a terminal or a notebook (``print`` it)."""
        lines = [
            f"Data quality: {self.symbol} {self.timeframe}  {'PASSED' if self.passed else 'FAILED'}",
            f"  bars      {self.n_bars} of {self.expected_bars} expected "
            f"({self.first_bar or '-'} to {self.last_bar or '-'})",
            *([f"  requested {_second(self.requested_start) or 'first bar'} to "
               f"{_second(self.requested_end) or 'last bar'} (expected bars counted over this range)"]
              if self.requested_start or self.requested_end else []),
            f"  data_hash {self.data_hash}",
            "",
            f"  {'check':<20} {'value':>12} {'limit':>14} {'count':>9}  result",
            f"  {'-' * 20} {'-' * 12} {'-' * 14} {'-' * 9}  ------",
        ]
        for c in self.checks:
            limit = f"{c.rule} {_fmt(c.threshold)}"
            lines.append(f"  {c.name:<20} {_fmt(c.value):>12} {limit:>14} {c.count:>9}  "
                         f"{'ok' if c.passed else 'FAIL':<6}")
        for c in self.checks:
            if c.passed or not c.examples:
                continue
            lines += ["", f"  {c.name}: {c.description}"]
            for ex in c.examples:
                rest = ", ".join(f"{k}={_fmt(v)}" for k, v in ex.items() if k != "timestamp")
                lines.append(f"    {ex.get('timestamp')}  {rest}")
        return "\n".join(lines)


def _second(iso: str | None) -> str | None:
    """Return an ISO time cut to the second, marked Z (``2024-03-31T23:59:59Z``)."""
    return None if iso is None else pd.Timestamp(iso).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def data_hash(bars: pd.DataFrame) -> str:
    """Return the sha256 hex digest of the canonical form of a bar frame.

    Definition (fixed; it identifies training data in the model registry):

    1. One record per row, with the row's bar open time as a signed 64-bit
       integer of nanoseconds since 1970-01-01 UTC (a tz-naive index is read as
       UTC), followed by ``open, high, low, close, volume`` as IEEE-754 float64.
       All other columns, and the order of the columns, are ignored.
    2. Values are canonicalised: ``-0.0`` becomes ``0.0`` and every NaN becomes
       the quiet NaN ``0x7FF8000000000000``.
    3. Records are sorted by (timestamp, open, high, low, close, volume),
       ascending, NaN last; for a valid frame this is simply time order.
       Duplicate rows are kept.
    4. Each record is packed little-endian without padding (8 + 5 * 8 = 48
       bytes), records are concatenated row after row, and the digest is
       ``hashlib.sha256(packed).hexdigest()``. An empty frame hashes the empty
       byte string.

    Raises
    ------
    DataError
        When the index is not a ``DatetimeIndex`` or an OHLCV column is missing
        or not numeric.
    """
    return _hash_arrays(*_canonical_arrays(bars, "data_hash"))


def _hash_arrays(ts: np.ndarray, values: np.ndarray) -> str:
    if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        # lexsort: the last key is the primary one
        order = np.lexsort((*(values[:, j] for j in range(values.shape[1] - 1, -1, -1)), ts))
        ts, values = ts[order], values[order]
    rec = np.empty(len(ts), dtype=_HASH_DTYPE)
    rec["timestamp"] = ts
    for j, col in enumerate(BAR_COLUMNS):
        rec[col] = values[:, j]
    return hashlib.sha256(rec.tobytes()).hexdigest()


def certify(bars: pd.DataFrame, symbol: str, timeframe: str,
            thresholds: QualityThresholds | None = None, start: object = None,
            end: object = None) -> DataCertificate:
    """Measure the quality of a bar frame and return its certificate.

    Duplicated or out-of-order rows are counted, then the frame is put in time
    order (the last of duplicated rows kept) for the other checks. The expected
    bars are the slots of the 24/7 grid from ``start`` (else the first bar) to
    ``end`` (else the last bar), so bars missing at either end of a requested
    range count as missing; grid slots are aligned to the epoch (UTC midnight) when the timeframe divides a
    day, else to the first bar. Outlier returns are the log close-to-close
    returns between adjacent bars (never across a gap) whose robust z-score
    ``|r - median| / (1.4826 * MAD)`` exceeds ``outlier_z``.

    Parameters
    ----------
    bars
        Frame indexed by bar open time with open, high, low, close, volume.
    symbol, timeframe
        What the frame claims to be, e.g. ``BTC/USDT`` and ``1m``.
    thresholds
        Limits; the defaults when omitted.
    start, end
        The range that was asked for (inclusive; a bare date as ``end`` is the whole
        day): the expected bars run from it, not from the bars that happen to exist.

    Raises
    ------
    DataError
        Only when ``bars`` is not a bar frame (see ``data_hash``).
    ConfigurationError
        When ``timeframe`` is malformed.
    """
    th = thresholds or QualityThresholds()
    step = timeframe_minutes(timeframe) * _NS_PER_MIN
    t0, t1 = parse_time(start, "start"), parse_time(end, "end", end=True)
    if t0 is not None and t1 is not None and t1 < t0:
        raise ConfigurationError("end", f"a time at or after start {t0}", end)
    ts_raw, vals_raw = _canonical_arrays(bars, "certify")
    digest = _hash_arrays(ts_raw, vals_raw)
    n_rows = len(ts_raw)
    checks: list[QualityCheck] = []

    def add(name: str, count: int, value: float, limit: float, examples: list[dict[str, Any]],
            rule: Literal["<=", ">="] = "<=") -> None:
        passed = value >= limit if rule == ">=" else value <= limit
        desc = QualityThresholds.model_fields[_LIMITS[name]].description or name
        checks.append(QualityCheck(name, desc, int(count), float(value), float(limit), rule,
                                   bool(passed), tuple(examples[:_MAX_EXAMPLES])))

    # order: duplicates and disorder in the rows as given
    back = np.flatnonzero(ts_raw[1:] < ts_raw[:-1]) + 1
    order = np.argsort(ts_raw, kind="stable") if len(back) else np.arange(n_rows)
    ts_sorted = ts_raw[order]
    same = ts_sorted[1:] == ts_sorted[:-1]
    dup_rows = order[1:][same]  # rows repeating an earlier timestamp
    dropped = np.zeros(n_rows, dtype=bool)
    dropped[:-1] = same  # keep the last row of each timestamp
    keep = order[~dropped]
    ts, vals = ts_raw[keep], vals_raw[keep]
    n = len(ts)

    add("bars", n, n, th.min_bars, [], rule=">=")
    add("duplicates", len(dup_rows), len(dup_rows), th.max_duplicates,
        [{"timestamp": _iso(ts_raw[i]), "row": int(i)} for i in np.sort(dup_rows)[:_MAX_EXAMPLES]])
    add("non_monotonic", len(back), len(back), th.max_non_monotonic,
        [{"timestamp": _iso(ts_raw[i]), "row": int(i), "previous": _iso(ts_raw[i - 1])}
         for i in back[:_MAX_EXAMPLES]])

    # the grid: off-grid rows, missing bars, gaps
    anchor = 0 if (1440 * _NS_PER_MIN) % step == 0 or n == 0 else int(ts[0])
    off = np.flatnonzero((ts - anchor) % step != 0)
    add("off_grid", len(off), len(off), th.max_off_grid,
        [{"timestamp": _iso(ts[i])} for i in off[:_MAX_EXAMPLES]])
    on = np.flatnonzero((ts - anchor) % step == 0)
    slots = (ts[on] - anchor) // step
    # the requested range's first and last slots (ceil / floor onto the grid), else the data's own
    lo_slot = -(-(int(t0.value) - anchor) // step) if t0 is not None else (int(slots[0]) if len(slots) else 0)
    hi_slot = (int(t1.value) - anchor) // step if t1 is not None else (int(slots[-1]) if len(slots) else -1)
    inside = slots[(slots >= lo_slot) & (slots <= hi_slot)]
    expected = max(0, hi_slot - lo_slot + 1)
    missing = expected - len(inside)
    # gaps between the range's bounds and the bars, as between bars: (first missing slot, length)
    edges = np.concatenate([[lo_slot - 1], inside, [hi_slot + 1]])
    gap_len = np.diff(edges) - 1
    gap_at = np.flatnonzero(gap_len > 0)
    gap_examples = [{"timestamp": _iso(int(edges[i] + 1) * step + anchor), "bars": int(gap_len[i]),
                     "after": _iso(int(edges[i]) * step + anchor) if i > 0 else "start of the requested range"}
                    for i in _longest(gap_len[gap_at], gap_at)]
    add("missing_bars", missing, missing / expected if expected else 0.0, th.max_missing_share,
        gap_examples)
    add("longest_gap", len(gap_at), int(gap_len.max()) if len(gap_at) else 0, th.max_gap_bars,
        gap_examples)

    # values
    o, h, lo, c, v = (vals[:, j] for j in range(5))
    finite = np.isfinite(vals)
    bad = np.flatnonzero(~finite.all(axis=1))
    add("nonfinite", len(bad), len(bad), th.max_nonfinite, [_row(ts, vals, i) for i in bad[:_MAX_EXAMPLES]])
    with np.errstate(invalid="ignore"):
        nonpos = np.flatnonzero((vals[:, :4] <= 0).any(axis=1) | (v < 0))
        add("nonpositive", len(nonpos), len(nonpos), th.max_nonpositive,
            [_row(ts, vals, i) for i in nonpos[:_MAX_EXAMPLES]])
        viol = np.flatnonzero((h < np.maximum(np.maximum(o, c), lo)) | (lo > np.minimum(np.minimum(o, c), h)))
        add("ohlc_violations", len(viol), len(viol), th.max_ohlc_violations,
            [_row(ts, vals, i) for i in viol[:_MAX_EXAMPLES]])
        zero = v == 0
        flat = (o == h) & (h == lo) & (lo == c)
    for name, mask, limit in (("zero_volume_run", zero, th.max_zero_volume_run),
                              ("flat_run", flat, th.max_flat_run)):
        starts, lengths = _runs(mask)
        add(name, int(mask.sum()), int(lengths.max()) if len(lengths) else 0, limit,
            [{"timestamp": _iso(ts[starts[k]]), "bars": int(lengths[k]),
              "last": _iso(ts[starts[k] + lengths[k] - 1]), "close": float(c[starts[k]])}
             for k in _longest(lengths, np.arange(len(lengths)))])

    # outliers among 1-bar log returns
    n_ret, out_idx, z_all, r_all = _outliers(ts, c, step, th.outlier_z)
    add("outliers", len(out_idx), len(out_idx) / n_ret if n_ret else 0.0, th.max_outlier_share,
        [{"timestamp": _iso(ts[i]), "log_return": float(r_all[i]), "z": float(z_all[i]),
          "close": float(c[i])} for i in out_idx[np.argsort(-z_all[out_idx], kind="stable")][:_MAX_EXAMPLES]])

    return DataCertificate(
        symbol=symbol, timeframe=timeframe,
        first_bar=_iso(ts[0]) if n else None, last_bar=_iso(ts[-1]) if n else None,
        n_bars=n, expected_bars=expected, checks=tuple(checks), data_hash=digest, thresholds=th,
        requested_start=t0.isoformat() if t0 is not None else None,
        requested_end=t1.isoformat() if t1 is not None else None,
    )


# check name -> the threshold it is compared with
_LIMITS = {
    "bars": "min_bars", "duplicates": "max_duplicates", "non_monotonic": "max_non_monotonic",
    "off_grid": "max_off_grid", "missing_bars": "max_missing_share", "longest_gap": "max_gap_bars",
    "nonfinite": "max_nonfinite", "nonpositive": "max_nonpositive",
    "ohlc_violations": "max_ohlc_violations", "zero_volume_run": "max_zero_volume_run",
    "flat_run": "max_flat_run", "outliers": "max_outlier_share",
}


def _canonical_arrays(bars: pd.DataFrame, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (int64 ns UTC timestamps, float64 n x 5 OHLCV) with canonical zeros and NaNs."""
    if not isinstance(bars, pd.DataFrame):
        raise DataError(f"{who}: expected a DataFrame of bars, found {type(bars).__name__}")
    if not isinstance(bars.index, pd.DatetimeIndex):
        raise DataError(
            f"{who}: expected a DatetimeIndex of bar open times, found {type(bars.index).__name__}"
        )
    missing = [col for col in BAR_COLUMNS if col not in bars.columns]
    if missing:
        raise DataError(f"{who}: expected columns {list(BAR_COLUMNS)}, missing {missing}")
    for col in BAR_COLUMNS:
        if not (pd.api.types.is_numeric_dtype(bars[col]) and not pd.api.types.is_bool_dtype(bars[col])):
            raise DataError(f"{who}: column {col!r} expected numbers, found dtype {bars[col].dtype}")
    ts = np.asarray(bars.index.as_unit("ns").asi8, dtype=np.int64)
    if bars.index.hasnans:
        raise DataError(f"{who}: expected a bar open time on every row, found NaT")
    values = np.column_stack([bars[col].to_numpy(dtype="float64", na_value=np.nan) for col in BAR_COLUMNS]) \
        if len(bars) else np.zeros((0, 5))
    values = values + 0.0  # -0.0 -> 0.0
    values.view(np.uint64)[np.isnan(values)] = _CANONICAL_NAN
    return ts, values


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (start index, length) of each run of True in ``mask``."""
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    return starts, np.flatnonzero(d == -1) - starts


def _longest(lengths: np.ndarray, where: np.ndarray) -> list[int]:
    """Return the entries of ``where`` with the longest ``lengths`` (earliest first on ties)."""
    top = np.argsort(-lengths, kind="stable")[:_MAX_EXAMPLES]
    return [int(where[k]) for k in top]


def _outliers(ts: np.ndarray, close: np.ndarray, step: int,
              z_limit: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Return (number of returns, outlier bar indices, |z| per bar, log return per bar)."""
    n = len(ts)
    r = np.full(n, np.nan)
    z = np.full(n, np.nan)
    if n < 2:
        return 0, np.zeros(0, dtype=np.int64), z, r
    with np.errstate(divide="ignore", invalid="ignore"):
        ret = np.log(close[1:] / close[:-1])
    ok = (ts[1:] - ts[:-1] == step) & np.isfinite(ret)
    idx = np.flatnonzero(ok) + 1
    r[idx] = ret[ok]
    x = r[idx]
    if len(x) == 0:
        return 0, np.zeros(0, dtype=np.int64), z, r
    med = float(np.median(x))
    dev = np.abs(x - med)
    scale = 1.4826 * float(np.median(dev))
    if scale == 0.0:  # more than half the returns equal the median: fall back to the mean deviation
        scale = 1.2533 * float(dev.mean())
    z[idx] = dev / scale if scale > 0 else 0.0
    return len(x), idx[z[idx] > z_limit], z, r


def _row(ts: np.ndarray, vals: np.ndarray, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"timestamp": _iso(ts[i])}
    out.update({col: float(vals[i, j]) for j, col in enumerate(BAR_COLUMNS)})
    return out


def _iso(ns: int | np.integer) -> str:
    """Return an ISO-8601 UTC time with a ``Z`` suffix."""
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.6g}"
    return str(value)


def _clean(obj: Any) -> Any:
    """Return ``obj`` with numpy scalars made plain and non-finite floats made ``None``."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
