"""Synthetic hourly markets for Monte-Carlo benchmarks of the promotion gates.

Two designs, each a function of a ``MarketParams`` and a seeded ``numpy.random.Generator``:

- ``noise`` (no edge): simple returns ``R_t = σ·ε_t`` with ``ε`` iid standard Gaussian or
  unit-variance Student-t (heavy tails). ``E[R_t] = 0`` makes the price a martingale, so
  *any* position decided on past prices earns zero in expectation before costs: a long/flat
  strategy cannot harvest a drift because there is none. (Zero drift of the *log* price
  would leave ``E[R] = σ²/2 > 0``, a drift a long-only strategy earns.)
- ``trend`` (genuine edge): ``R_t = μ·s_t + σ·ε_t`` with ``s_t`` a symmetric two-state
  Markov regime (+1/−1) whose mean duration is ``persistence_h`` hours. The regime is
  symmetric, so the asset itself has zero expected return (buy and hold has no edge);
  only timing pays. ``μ = snr·σ`` is calibrated (``calibrate``) so that the reference
  member of the MA-cross grid (``reference_pair``) has a true annualised Sharpe of
  ``TARGET_SHARPE`` net of the taker fee on both sides.

Bars: ``open`` = previous close (crypto trades continuously), ``high``/``low`` the extremes of a
Brownian bridge from the bar's log open to its log close sampled once a minute (one path gives
both, so they are jointly consistent; ``high >= max(open, close)``, ``low <= min(open, close)``
by construction; on these bars the engine's Corwin–Schultz spread estimate is about 0.27 σ per
bar, on the bundled BTC/USDT 1h bars of 2023–2025 about 0.24 σ), and
``volume`` = quote volume / close with a lognormal quote volume around a BTC-like level
(about 1–3 bn USDT a day) with the real intraday profile, slow swings and more volume on big
moves. Columns and dtypes match the bar store (float64 OHLCV, tz-aware UTC ns index named
``timestamp``); ``toolkit.data.store.quote_volume`` then derives volume × close.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "CALIBRATION_FILE",
    "DESIGNS",
    "HOURS_PER_YEAR",
    "TARGET_SHARPE",
    "Calibration",
    "MarketParams",
    "calibrate",
    "draw_params",
    "load_calibration",
    "long_flat_returns",
    "make_bars",
    "reference_pair",
    "simulate_returns",
    "true_sharpe",
]

HOURS_PER_YEAR = 8760  # 365-day years, as the toolkit annualises
DESIGNS = ("noise", "trend")
TARGET_SHARPE = 1.5
TAKER_FEE = 0.001
CALIBRATION_FILE = Path(__file__).resolve().parent / "results" / "synthetic_calibration.json"

#: ranges the designs draw from (annual volatility of the simple returns, regime duration in hours)
VOL_RANGE = (0.40, 0.90)
PERSISTENCE_RANGE = (100.0, 1000.0)
#: Student-t degrees of freedom drawn for heavy tails (None = Gaussian, drawn half of the time)
TAIL_DFS = (3.0, 4.0, 5.0, 8.0)
#: symmetric clip of a simple return (keeps E[R] = 0 and the price positive)
RETURN_CLIP = 0.3
#: trade prints per bar the high and low are taken from (one a minute)
BRIDGE_STEPS = 60
#: real BTC/USDT 1h quote volume by UTC hour (2024, relative to the day's mean; bundled bars)
HOURLY_PROFILE = np.array([0.88, 0.90, 0.87, 0.78, 0.70, 0.67, 0.73, 0.89, 0.89, 0.83, 0.80, 0.83,
                           1.07, 1.32, 1.79, 1.67, 1.42, 1.19, 1.13, 1.14, 1.12, 0.83, 0.78, 0.77])

#: the reference trial: slow SMA = SLOW_PER_PERSISTENCE · D, fast = slow / FAST_DIVISOR
SLOW_PER_PERSISTENCE = 0.75
FAST_DIVISOR = 10


@dataclass(frozen=True)
class MarketParams:
    """Everything that determines a synthetic market (with the seed of the generator)."""

    design: str                     # "noise" or "trend"
    annual_vol: float               # annualised volatility of the innovations σ·ε
    tail_df: float | None           # Student-t degrees of freedom; None = Gaussian
    persistence_h: float | None     # trend: mean regime duration in hours; noise: None
    snr: float                      # μ/σ per bar (0 for noise)
    n_bars: int = 3 * HOURS_PER_YEAR
    start: str = "2022-01-01"
    price0: float = 40_000.0
    daily_quote_volume: float = 2.0e9  # USDT per day, mean level

    @property
    def sigma(self) -> float:
        """Return the per-bar volatility of the innovations."""
        return self.annual_vol / math.sqrt(HOURS_PER_YEAR)

    @property
    def mu(self) -> float:
        """Return the per-bar drift in a regime (``snr · σ``)."""
        return self.snr * self.sigma


def reference_pair(persistence_h: float) -> tuple[int, int]:
    """Return the (fast, slow) SMA lengths the design's persistence favours: the calibrated trial.

    On long simulations the net Sharpe of the long/flat crossover is flat near its optimum
    around slow ≈ 0.5–1 × D and fast ≈ slow/20–slow/4; the reference takes slow = 0.75·D and
    fast = slow/10.
    """
    slow = max(4, round(SLOW_PER_PERSISTENCE * persistence_h))
    fast = max(2, round(slow / FAST_DIVISOR))
    return fast, slow


# --------------------------------------------------------------------------- returns and bars


def _innovations(rng: np.random.Generator, n: int, tail_df: float | None) -> np.ndarray:
    if tail_df is None:
        return rng.standard_normal(n)
    return rng.standard_t(tail_df, n) * math.sqrt((tail_df - 2.0) / tail_df)


def _regime(rng: np.random.Generator, n: int, persistence_h: float) -> np.ndarray:
    flips = rng.random(n) < 1.0 / persistence_h
    first = 1.0 if rng.random() < 0.5 else -1.0
    return np.where(np.cumsum(flips) % 2 == 0, first, -first)


def simulate_returns(params: MarketParams, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return the simple per-bar returns and the latent regime (zeros for ``noise``)."""
    n = params.n_bars
    eps = _innovations(rng, n, params.tail_df)
    if params.design == "noise":
        regime = np.zeros(n)
    elif params.design == "trend":
        if params.persistence_h is None:
            raise ValueError("trend design: expected persistence_h, found None")
        regime = _regime(rng, n, params.persistence_h)
    else:
        raise ValueError(f"design: expected one of {DESIGNS}, found {params.design!r}")
    r = params.mu * regime + params.sigma * eps
    return np.clip(r, -RETURN_CLIP, RETURN_CLIP), regime


def _bridge_extremes(rng: np.random.Generator, x: np.ndarray, sigma: float,
                     steps: int = BRIDGE_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Return the max and min (≥ 0, ≤ 0) of a Brownian bridge from 0 to ``x`` sampled at ``steps`` points.

    ``sigma`` is the bridge's standard deviation over the whole bar; the path is pinned to the
    bar's log return, so its extremes are jointly consistent (one path gives both).
    """
    w = np.cumsum(rng.standard_normal((x.size, steps)), axis=1) * (sigma / math.sqrt(steps))
    frac = np.arange(1, steps + 1) / steps
    path = w - frac * w[:, -1:] + frac * x[:, None]
    return np.maximum(path.max(axis=1), 0.0), np.minimum(path.min(axis=1), 0.0)


def _quote_volume(rng: np.random.Generator, params: MarketParams, index: pd.DatetimeIndex,
                  r: np.ndarray) -> np.ndarray:
    n = len(index)
    # slow swings of activity: AR(1) with a half-life of about two weeks, stationary sd 0.35
    phi = 0.5 ** (1.0 / 336.0)
    shocks = rng.standard_normal(n) * 0.35 * math.sqrt(1.0 - phi * phi)
    slow = np.empty(n)
    level = rng.standard_normal() * 0.35
    for i in range(n):  # 26k steps: fast enough in Python, simple to read
        level = phi * level + shocks[i]
        slow[i] = level
    z = np.abs(r) / params.sigma
    log_qv = (slow + np.log(HOURLY_PROFILE[index.hour.to_numpy()]) + 0.35 * (np.minimum(z, 8.0) - 0.8)
              + 0.30 * rng.standard_normal(n))
    log_qv -= np.log(np.mean(np.exp(log_qv)))  # mean multiplier 1
    return params.daily_quote_volume / 24.0 * np.exp(log_qv)


def make_bars(params: MarketParams, rng: np.random.Generator) -> pd.DataFrame:
    """Return hourly OHLCV bars of the design (tz-aware UTC index, float64 columns)."""
    r, _ = simulate_returns(params, rng)
    index = pd.date_range(params.start, periods=params.n_bars, freq="1h", tz="UTC", name="timestamp").as_unit("ns")
    close = params.price0 * np.cumprod(1.0 + r)
    open_ = np.concatenate([[params.price0], close[:-1]])
    x = np.log1p(r)
    hi, lo = _bridge_extremes(rng, x, params.sigma)
    qv = _quote_volume(rng, params, index, r)
    return pd.DataFrame({
        "open": open_,
        "high": np.maximum(open_ * np.exp(hi), np.maximum(open_, close)),  # guard the last ulp
        "low": np.minimum(open_ * np.exp(lo), np.minimum(open_, close)),
        "close": close,
        "volume": qv / close,
    }, index=index)


def draw_params(design: str, rng: np.random.Generator, calibration: Calibration | None = None,
                n_bars: int = 3 * HOURS_PER_YEAR) -> MarketParams:
    """Draw one market of ``design``: volatility, tails, persistence (trend) and volume level.

    ``trend`` needs the calibration (its ``snr`` is interpolated at the drawn σ and D).
    """
    vol = float(rng.uniform(*VOL_RANGE))
    tail = None if rng.random() < 0.5 else float(rng.choice(TAIL_DFS))
    daily_qv = float(np.exp(rng.uniform(math.log(1.0e9), math.log(3.0e9))))
    price0 = float(np.exp(rng.uniform(math.log(15_000.0), math.log(90_000.0))))
    if design == "noise":
        return MarketParams("noise", vol, tail, None, 0.0, n_bars, price0=price0, daily_quote_volume=daily_qv)
    if design != "trend":
        raise ValueError(f"design: expected one of {DESIGNS}, found {design!r}")
    if calibration is None:
        raise ValueError("trend design: expected a Calibration (load_calibration()), found None")
    lo, hi = PERSISTENCE_RANGE
    d = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    return MarketParams("trend", vol, tail, d, calibration.snr(vol, d), n_bars, price0=price0,
                        daily_quote_volume=daily_qv)


# --------------------------------------------------------------------------- the true Sharpe


def _sma(x: np.ndarray, w: int) -> np.ndarray:
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(x.size, np.nan)
    out[w - 1:] = (c[w:] - c[:-w]) / w
    return out


def long_flat_returns(r: np.ndarray, fast: int, slow: int, fee: float = TAKER_FEE) -> np.ndarray:
    """Return the per-bar net returns of the long/flat SMA crossover on simple returns ``r``.

    The position decided on the close of bar t (long while SMA(fast) > SMA(slow) of the
    closes, as ``ma_cross`` with ``allow_short=False``) is held over bar t+1 (the next open
    equals this close), paying ``fee`` on every change of position. Prices start at 1.
    """
    close = np.cumprod(1.0 + r)
    f, s = _sma(close, fast), _sma(close, slow)
    pos = np.where(np.isfinite(s) & (f > s), 1.0, 0.0)
    held = np.concatenate([[0.0], pos[:-1]])
    return held * r - fee * np.abs(np.diff(held, prepend=0.0))


def _sharpe(x: np.ndarray) -> float:
    return float(np.mean(x) / np.std(x, ddof=1) * math.sqrt(HOURS_PER_YEAR))


#: length of the independent segments a long simulation is cut into (prices restart at 1:
#: keeps the moving averages accurate over centuries of drift-free but volatile prices)
SEGMENT_YEARS = 10


def true_sharpe(params: MarketParams, rng: np.random.Generator, years: int,
                pair: tuple[int, int] | None = None) -> tuple[float, float]:
    """Return the annualised net Sharpe of the long/flat crossover over ``years`` simulated years and its SE.

    The SE is the dispersion of the Sharpe across ``SEGMENT_YEARS``-year segments / √segments.
    ``pair`` defaults to ``reference_pair(params.persistence_h)`` (a noise market needs one).
    """
    if pair is None:
        if params.persistence_h is None:
            raise ValueError("true_sharpe: a noise market needs an explicit (fast, slow) pair")
        pair = reference_pair(params.persistence_h)
    seg = SEGMENT_YEARS * HOURS_PER_YEAR
    n_seg = max(1, years // SEGMENT_YEARS)
    one = MarketParams(params.design, params.annual_vol, params.tail_df, params.persistence_h, params.snr, seg)
    parts = [long_flat_returns(simulate_returns(one, rng)[0], *pair) for _ in range(n_seg)]
    per_segment = np.array([_sharpe(p) for p in parts])
    se = float(np.std(per_segment, ddof=1) / math.sqrt(n_seg)) if n_seg > 1 else math.nan
    return _sharpe(np.concatenate(parts)), se


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationSettings:
    """What a calibration depends on; its sha256 keys the cached file."""

    vols: tuple[float, ...] = (0.40, 0.50, 0.60, 0.70, 0.80, 0.90)
    persistences: tuple[float, ...] = (100.0, 160.0, 250.0, 400.0, 630.0, 1000.0)
    target_sharpe: float = TARGET_SHARPE
    fee: float = TAKER_FEE
    years: int = 500                # calibration path per cell (common random numbers across μ)
    verify_years: int = 300         # a fresh path per cell at the calibrated μ
    seed: int = 20261201
    slow_per_persistence: float = SLOW_PER_PERSISTENCE
    fast_divisor: int = FAST_DIVISOR
    return_clip: float = RETURN_CLIP

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Calibration:
    """The calibrated signal-to-noise ratio μ/σ on a (volatility, persistence) grid."""

    settings: CalibrationSettings
    snr_grid: np.ndarray  # len(vols) × len(persistences)
    rows: list[dict[str, float]]

    def snr(self, annual_vol: float, persistence_h: float) -> float:
        """Return μ/σ at (σ, D): bilinear in (σ, log D), clamped to the calibrated ranges."""
        v = np.asarray(self.settings.vols)
        d = np.log(np.asarray(self.settings.persistences))
        x = float(np.clip(annual_vol, v[0], v[-1]))
        y = float(np.clip(math.log(persistence_h), d[0], d[-1]))
        i = min(int(np.searchsorted(v, x, side="right")) - 1, len(v) - 2)
        j = min(int(np.searchsorted(d, y, side="right")) - 1, len(d) - 2)
        tx = (x - v[i]) / (v[i + 1] - v[i])
        ty = (y - d[j]) / (d[j + 1] - d[j])
        g = self.snr_grid
        return float((1 - tx) * (1 - ty) * g[i, j] + tx * (1 - ty) * g[i + 1, j]
                     + (1 - tx) * ty * g[i, j + 1] + tx * ty * g[i + 1, j + 1])


def _calibrate_cell(vol: float, persistence: float, st: CalibrationSettings,
                    rng: np.random.Generator) -> dict[str, float]:
    seg = SEGMENT_YEARS * HOURS_PER_YEAR
    n_seg = st.years // SEGMENT_YEARS
    sigma = vol / math.sqrt(HOURS_PER_YEAR)
    pair = reference_pair(persistence)
    # common random numbers: the same innovations and regime for every μ tried
    paths = [(_regime(rng, seg, persistence), rng.standard_normal(seg)) for _ in range(n_seg)]

    def sharpe_at(snr: float) -> float:
        parts = [long_flat_returns(np.clip(snr * sigma * s + sigma * e, -st.return_clip, st.return_clip),
                                   *pair, fee=st.fee) for s, e in paths]
        return _sharpe(np.concatenate(parts))

    lo, hi = 0.0, 0.05
    while sharpe_at(hi) < st.target_sharpe:
        lo, hi = hi, hi * 2.0
        if hi > 2.0:
            raise RuntimeError(f"calibration: expected a μ/σ up to 2 reaching Sharpe {st.target_sharpe} "
                               f"at σ={vol}, D={persistence}, found none")
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if sharpe_at(mid) < st.target_sharpe else (lo, mid)
    snr = 0.5 * (lo + hi)
    params = MarketParams("trend", vol, None, persistence, snr)
    verify, verify_se = true_sharpe(params, rng, st.verify_years, pair)
    heavy, heavy_se = true_sharpe(MarketParams("trend", vol, 4.0, persistence, snr), rng, st.verify_years, pair)
    return {
        "annual_vol": vol, "persistence_h": persistence, "fast": pair[0], "slow": pair[1],
        "snr": snr, "mu_per_hour": snr * sigma, "mu_annualised": snr * sigma * HOURS_PER_YEAR,
        "sharpe_calibration_path": sharpe_at(snr),
        "sharpe_fresh_path": verify, "sharpe_fresh_path_se": verify_se,
        "sharpe_fresh_path_t4": heavy, "sharpe_fresh_path_t4_se": heavy_se,
    }


def calibrate(settings: CalibrationSettings | None = None, path: Path | None = CALIBRATION_FILE,
              verbose: bool = True) -> Calibration:
    """Find μ/σ per (σ, D) by bisection so the reference trial's true net Sharpe is the target; cache it.

    Each cell simulates ``years`` of Gaussian innovations and regimes once and bisects μ on
    those paths (the Sharpe is then a smooth, increasing function of μ), then measures the
    Sharpe at the result on fresh paths (Gaussian, and Student-t with 4 degrees of freedom).
    """
    st = settings or CalibrationSettings()
    t0 = time.perf_counter()
    rows = []
    grid = np.empty((len(st.vols), len(st.persistences)))
    for i, vol in enumerate(st.vols):
        for j, d in enumerate(st.persistences):
            rng = np.random.default_rng([st.seed, i, j])
            row = _calibrate_cell(vol, d, st, rng)
            grid[i, j] = row["snr"]
            rows.append(row)
            if verbose:
                print(f"calibrated σ={vol:.2f} D={d:>6.0f}h: μ/σ={row['snr']:.4f} fresh Sharpe "
                      f"{row['sharpe_fresh_path']:.2f}±{row['sharpe_fresh_path_se']:.2f}", flush=True)
    cal = Calibration(st, grid, rows)
    if path is not None:
        doc = {"settings": asdict(st), "settings_sha256": st.sha256(), "rows": rows,
               "snr_grid": grid.tolist(), "seconds": time.perf_counter() - t0,
               "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1) + "\n")
    return cal


def load_calibration(path: Path = CALIBRATION_FILE, settings: CalibrationSettings | None = None) -> Calibration:
    """Return the cached calibration when it was made under ``settings``, else calibrate (and cache) now."""
    st = settings or CalibrationSettings()
    if path.is_file():
        doc = json.loads(path.read_text())
        if doc.get("settings_sha256") == st.sha256():
            return Calibration(st, np.asarray(doc["snr_grid"], dtype="float64"), doc["rows"])
    return calibrate(st, path)


if __name__ == "__main__":
    calibrate()
