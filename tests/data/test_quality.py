"""The data-quality certificate: each check on a hand-made frame, real data, the hash, the CLI."""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from toolkit.data import load_bars, read_bars_file
from toolkit.data.quality import DataCertificate, QualityThresholds, certify, data_hash
from toolkit.data.quality_cli import check_command
from toolkit.errors import ConfigurationError, DataError, DataQualityError

# ----------------------------------------------------------------------------- each check


def _no_constant(name: str) -> None:
    raise AssertionError(f"JSON holds the non-standard constant {name}")


def test_clean_frame_passes_every_check(bars: pd.DataFrame) -> None:
    cert = certify(bars, "TEST/USDT", "1m")
    assert cert.passed, cert.to_table()
    assert cert.n_bars == cert.expected_bars == len(bars)
    assert cert.first_bar == "2024-01-01T00:00:00Z"
    assert cert.last_bar == (bars.index[-1]).strftime("%Y-%m-%dT%H:%M:%SZ")


def _perturb(bars: pd.DataFrame, how: str) -> pd.DataFrame:
    b = bars.copy()
    if how == "duplicates":  # row 5 repeated right after itself: same time, no disorder
        return pd.concat([b.iloc[:6], b.iloc[5:6], b.iloc[6:]])
    if how == "non_monotonic":  # rows 10 and 11 swapped
        return b.iloc[[*range(10), 11, 10, *range(12, len(b))]]
    if how == "off_grid":  # bar 50 opens 30 s late
        idx = b.index.tolist()
        idx[50] = idx[50] + pd.Timedelta(seconds=30)
        b.index = pd.DatetimeIndex(idx, name="timestamp")
        return b
    if how == "gap":  # bars 100..105 missing
        return b.drop(b.index[100:106])
    if how == "nonfinite":
        b.iloc[30, b.columns.get_loc("close")] = np.nan
        return b
    if how == "nonpositive_price":  # low of 0: still low <= open/close, so no OHLC violation
        b.iloc[40, b.columns.get_loc("low")] = 0.0
        return b
    if how == "negative_volume":
        b.iloc[41, b.columns.get_loc("volume")] = -1.0
        return b
    if how == "ohlc":  # high below the close
        b.iloc[60, b.columns.get_loc("high")] = b["close"].iloc[60] * 0.999
        return b
    if how == "zero_volume":  # 11 zero-volume bars in a row (limit 10)
        b.iloc[70:81, b.columns.get_loc("volume")] = 0.0
        return b
    if how == "flat":  # 11 bars with open = high = low = close (limit 10)
        price = b["close"].iloc[120]
        for col in ("open", "high", "low", "close"):
            b.iloc[120:131, b.columns.get_loc(col)] = price
        return b
    if how == "outlier":  # one bad tick: close 20 % off for one bar, back after
        b.iloc[150, b.columns.get_loc("close")] *= 1.2
        b.iloc[150, b.columns.get_loc("high")] = b["close"].iloc[150]
        return b
    raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "expected_failed"),
    [
        ("duplicates", {"duplicates"}),
        ("non_monotonic", {"non_monotonic"}),
        # the late bar leaves its own slot empty: one missing bar (1 % of 200 > 0.1 %)
        ("off_grid", {"off_grid", "missing_bars"}),
        ("gap", {"missing_bars", "longest_gap"}),
        ("nonfinite", {"nonfinite"}),
        ("nonpositive_price", {"nonpositive"}),
        ("negative_volume", {"nonpositive"}),
        ("ohlc", {"ohlc_violations"}),
        ("zero_volume", {"zero_volume_run"}),
        ("flat", {"flat_run"}),
        ("outlier", {"outliers"}),
    ],
)
def test_each_check_fires_alone(bars: pd.DataFrame, how: str, expected_failed: set[str]) -> None:
    cert = certify(_perturb(bars, how), "TEST/USDT", "1m")
    assert set(cert.failed) == expected_failed, cert.to_table()
    for name in expected_failed:
        check = cert.check(name)
        assert not check.passed and check.count > 0 and check.examples


def test_check_details_name_the_bad_bars(bars: pd.DataFrame) -> None:
    t = bars.index
    iso = lambda i: t[i].strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    gap = certify(_perturb(bars, "gap"), "T/U", "1m")
    assert gap.check("longest_gap").value == 6
    assert gap.check("missing_bars").count == 6
    assert gap.check("missing_bars").value == pytest.approx(6 / 200)
    assert gap.check("longest_gap").examples[0] == {"timestamp": iso(100), "bars": 6, "after": iso(99)}
    assert gap.expected_bars == 200 and gap.n_bars == 194

    zero = certify(_perturb(bars, "zero_volume"), "T/U", "1m").check("zero_volume_run")
    assert (zero.value, zero.count) == (11, 11)
    assert zero.examples[0]["timestamp"] == iso(70) and zero.examples[0]["last"] == iso(80)

    dup = certify(_perturb(bars, "duplicates"), "T/U", "1m")
    assert dup.check("duplicates").examples == ({"timestamp": iso(5), "row": 6},)
    assert dup.n_bars == 200  # the duplicate is dropped before the value checks

    out = certify(_perturb(bars, "outlier"), "T/U", "1m").check("outliers")
    assert out.count == 2  # the jump up at bar 150 and the way back at bar 151
    assert {e["timestamp"] for e in out.examples} == {iso(150), iso(151)}
    assert out.examples[0]["z"] > 20

    nan = certify(_perturb(bars, "nonfinite"), "T/U", "1m").check("nonfinite")
    assert nan.examples[0]["timestamp"] == iso(30) and math.isnan(nan.examples[0]["close"])


def test_limits_are_inclusive(bars: pd.DataFrame) -> None:
    b = bars.copy()
    b.iloc[70:80, b.columns.get_loc("volume")] = 0.0  # exactly 10 in a row: allowed
    assert certify(b, "T/U", "1m").passed
    strict = QualityThresholds(max_zero_volume_run=9)
    assert certify(b, "T/U", "1m", strict).failed == ["zero_volume_run"]


def test_empty_frame_fails_on_bars_without_raising(bars: pd.DataFrame) -> None:
    cert = certify(bars.iloc[:0], "T/U", "1m")
    assert cert.failed == ["bars"]
    assert (cert.n_bars, cert.expected_bars, cert.first_bar) == (0, 0, None)
    json.loads(cert.to_json())


def test_disorder_is_counted_then_sorted(bars: pd.DataFrame) -> None:
    shuffled = bars.sample(frac=1.0, random_state=3)
    cert = certify(shuffled, "T/U", "1m")
    assert cert.failed == ["non_monotonic"]
    assert cert.n_bars == cert.expected_bars == 200
    assert cert.data_hash == data_hash(bars)


def test_mad_zero_falls_back_without_dividing_by_zero(bars: pd.DataFrame) -> None:
    b = bars.copy()
    b["close"] = 100.0  # most returns are exactly 0: MAD = 0
    b.iloc[100, b.columns.get_loc("close")] = 101.0
    b["open"], b["high"], b["low"] = 100.0, 101.5, 99.5
    out = certify(b, "T/U", "1m").check("outliers")
    assert out.count == 2 and math.isfinite(out.examples[0]["z"])


def test_grid_of_coarse_timeframes(make_bars) -> None:
    hourly = make_bars(50, start="2024-01-01 00:00", freq="1h")
    assert certify(hourly, "T/U", "1h").passed
    shifted = hourly.set_axis(hourly.index + pd.Timedelta(minutes=15))
    assert certify(shifted, "T/U", "1h").check("off_grid").count == 50
    weekly = make_bars(20, start="2024-01-01", freq="7D")  # Monday opens, as Binance 1w
    assert certify(weekly, "T/U", "1w").passed


def test_not_a_bar_frame_raises_data_error(bars: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="missing \\['volume'\\]"):
        certify(bars.drop(columns="volume"), "T/U", "1m")
    with pytest.raises(DataError, match="DatetimeIndex"):
        certify(bars.reset_index(), "T/U", "1m")
    with pytest.raises(DataError, match="'close' expected numbers"):
        certify(bars.assign(close="x"), "T/U", "1m")
    with pytest.raises(ConfigurationError, match="timeframe"):
        certify(bars, "T/U", "one minute")


def test_thresholds_are_frozen_and_strict() -> None:
    th = QualityThresholds()
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        th.max_gap_bars = 100  # type: ignore[misc]
    with pytest.raises(ConfigurationError, match="max_gap"):
        QualityThresholds.build(max_gap=3)
    with pytest.raises(ConfigurationError, match="max_missing_share"):
        QualityThresholds.build(max_missing_share=1.5)
    assert QualityThresholds.build(max_gap_bars=None) == th


def test_require_raises_data_quality_error_naming_checks(bars: pd.DataFrame) -> None:
    good = certify(bars, "T/U", "1m")
    assert good.require() is good
    bad = certify(_perturb(bars, "gap"), "T/U", "1m")
    with pytest.raises(DataQualityError, match="longest_gap=6 \\(limit <= 5\\)"):
        bad.require()


@settings(max_examples=40, deadline=None)
@given(
    times=st.lists(st.integers(0, 300), min_size=0, max_size=40),
    values=st.lists(st.sampled_from([1.0, 2.0, 0.0, -1.0, np.nan, np.inf, 1e9, -0.0]), min_size=200,
                    max_size=200),
)
def test_certify_never_raises_on_bad_values(times: list[int], values: list[float]) -> None:
    n = len(times)
    idx = pd.DatetimeIndex(pd.to_datetime(np.array(times) * 60_000_000_000 // 7, utc=True), name="timestamp")
    cols = {c: values[k * 40: k * 40 + n] for k, c in enumerate(("open", "high", "low", "close", "volume"))}
    cert = certify(pd.DataFrame(cols, index=idx), "T/U", "1m")
    doc = json.loads(cert.to_json(), parse_constant=_no_constant)
    assert doc["passed"] == cert.passed
    assert cert.passed == all(c.passed for c in cert.checks)


# ----------------------------------------------------------------------------- real data

@pytest.mark.parametrize(("symbol", "timeframe"), [
    ("BTC/USDT", "1m"), ("BTC/USDT", "15m"), ("BTC/USDT", "1h"), ("ETH/USDT", "1m"),
])
def test_bundled_real_data_passes(symbol: str, timeframe: str) -> None:
    if symbol == "BTC/USDT":
        bars = load_bars(symbol, timeframe, "2024-01-01", "2024-04-30")
    else:
        bars = load_bars(symbol, timeframe)
    cert = certify(bars, symbol, timeframe)
    assert cert.passed, cert.to_table()
    assert cert.n_bars == cert.expected_bars == len(bars)


def test_halt_day_fails_for_the_right_reasons(halt_file: Path) -> None:
    cert = certify(read_bars_file(halt_file), "BTC/USDT", "1m")
    assert set(cert.failed) == {"missing_bars", "longest_gap", "zero_volume_run", "flat_run"}
    assert (cert.n_bars, cert.expected_bars) == (1360, 1440)
    gap = cert.check("longest_gap")
    assert gap.value == 80
    assert gap.examples[0]["timestamp"] == "2023-03-24T12:40:00Z"
    for name in ("zero_volume_run", "flat_run"):
        run = cert.check(name)
        assert run.value == 72
        assert run.examples[0]["timestamp"] == "2023-03-24T11:28:00Z"
        assert run.examples[0]["last"] == "2023-03-24T12:39:00Z"
    table = cert.to_table()
    assert "FAILED" in table and "2023-03-24T12:40:00Z" in table and "longest_gap" in table


def test_a_requested_range_beyond_the_data_counts_the_missing_bars() -> None:
    """15m 2024-04-01..06-30 holds 30 days of bundled bars: 2,880 of 8,736 expected, the rest missing."""
    bars = load_bars("BTC/USDT", "15m", "2024-04-01", "2024-06-30")
    whole = certify(bars, "BTC/USDT", "15m")
    assert whole.passed and whole.expected_bars == len(bars) == 2880  # judged on itself it looks complete
    asked = certify(bars, "BTC/USDT", "15m", start="2024-04-01", end="2024-06-30")
    assert not asked.passed and asked.expected_bars == 91 * 96
    assert asked.check("missing_bars").count == 91 * 96 - 2880
    assert asked.check("longest_gap").value == 91 * 96 - 2880
    gap = asked.check("missing_bars").examples[0]
    assert gap["timestamp"] == "2024-05-01T00:00:00Z" and gap["after"] == "2024-04-30T23:45:00Z"
    assert asked.to_dict()["requested_end"].startswith("2024-06-30T23:59:59")


def test_bars_missing_before_the_data_starts_count_too() -> None:
    bars = load_bars("BTC/USDT", "1h", "2024-01-02", "2024-01-31")
    cert = certify(bars, "BTC/USDT", "1h", start="2024-01-01", end="2024-01-31")
    assert cert.expected_bars == 31 * 24 and cert.check("missing_bars").count == 24
    assert cert.check("missing_bars").examples[0]["after"] == "start of the requested range"


def test_epoch_times_are_read_by_their_magnitude(tmp_path: Path) -> None:
    from toolkit.data.store import parse_time, read_bars_file

    want = pd.Timestamp("2024-01-01", tz="UTC")
    assert {parse_time(v, "start") for v in (1704067200, "1704067200000", 1704067200000000)} == {want}
    bars = load_bars("BTC/USDT", "1h", "2024-01-01", "2024-01-02").reset_index()
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        frame = bars.assign(timestamp=bars["timestamp"].astype("int64") // scale)
        frame.to_csv(tmp_path / f"{unit}.csv", index=False)
        assert read_bars_file(tmp_path / f"{unit}.csv").index[0] == want, unit


# ----------------------------------------------------------------------------- serialisation

def test_to_json_is_deterministic_and_nan_free(bars: pd.DataFrame) -> None:
    cert = certify(_perturb(bars, "nonfinite"), "T/U", "1m")
    again = certify(_perturb(bars, "nonfinite"), "T/U", "1m")
    assert cert.to_json() == again.to_json()
    text = cert.to_json()
    doc = json.loads(text, parse_constant=_no_constant)
    assert list(doc) == sorted(doc)
    nan_example = next(c for c in doc["checks"] if c["name"] == "nonfinite")["examples"][0]
    assert nan_example["close"] is None
    assert doc["data_hash"] == cert.data_hash and doc["failed"] == ["nonfinite"]
    assert isinstance(cert, DataCertificate) and cert.to_dict() == doc


def test_to_table_lists_every_check(bars: pd.DataFrame) -> None:
    cert = certify(bars, "T/U", "1m")
    table = cert.to_table()
    assert "PASSED" in table and cert.data_hash in table
    for c in cert.checks:
        assert c.name in table
    assert len({len(line) for line in table.splitlines()[4:]}) == 1  # fixed-width rows


# ----------------------------------------------------------------------------- the hash

def _reference_hash(bars: pd.DataFrame) -> str:
    """The documented definition, written out row by row with struct."""
    rows = []
    for ts, row in zip(bars.index, bars[["open", "high", "low", "close", "volume"]].itertuples(index=False),
                       strict=True):
        ns = int(pd.Timestamp(ts).tz_convert("UTC").value)
        rows.append((ns, *(float(v) for v in row)))
    rows.sort()
    return hashlib.sha256(b"".join(struct.pack("<q5d", *r) for r in rows)).hexdigest()


def test_hash_matches_independent_implementation(halt_file: Path) -> None:
    known = pd.DataFrame(
        {"open": [100.0, 101.5, 99.25], "high": [102.0, 101.75, 100.0], "low": [99.5, 100.0, 98.0],
         "close": [101.5, 99.25, 99.75], "volume": [1.5, 0.0, 12]},
        index=pd.DatetimeIndex(["2024-01-01T00:02Z", "2024-01-01T00:00Z", "2024-01-01T00:01Z"],
                               name="timestamp"),
    )
    assert data_hash(known) == _reference_hash(known)
    real = read_bars_file(halt_file).iloc[:300]
    assert data_hash(real) == _reference_hash(real)


def test_hash_of_halt_day_is_pinned(halt_file: Path) -> None:
    # Golden value: the hash goes into every registered model version and must not
    # drift with pandas/numpy versions. Change it only with a documented new definition.
    assert data_hash(read_bars_file(halt_file)) == (
        "c54e511ba2286c0ae4389dbb70619ac253490ba281e42ab2c9878eeccbb2e0aa"
    )


def test_hash_is_stable_and_sensitive(bars: pd.DataFrame) -> None:
    base = data_hash(bars)
    assert data_hash(bars.copy()) == base
    assert data_hash(bars[["volume", "close", "low", "open", "high"]]) == base
    assert data_hash(bars.assign(trades=7, quote_volume=1.0)) == base
    assert data_hash(bars.sample(frac=1.0, random_state=1)) == base
    assert data_hash(bars.set_axis(bars.index.as_unit("ms"))) == base
    assert data_hash(bars.set_axis(bars.index.tz_convert("Asia/Tokyo"))) == base
    assert data_hash(bars.set_axis(bars.index.tz_localize(None))) == base
    for col in ("open", "high", "low", "close", "volume"):
        changed = bars.copy()
        changed.iloc[123, changed.columns.get_loc(col)] += 1e-9
        assert data_hash(changed) != base, col
    moved = bars.copy()
    moved.index = moved.index.where(np.arange(len(moved)) != 199, moved.index[199] + pd.Timedelta(1, "ns"))
    assert data_hash(moved) != base
    assert data_hash(bars.iloc[:-1]) != base
    assert data_hash(pd.concat([bars, bars.iloc[:1]])) != base  # duplicates are kept


def test_hash_canonicalises_zero_and_nan(bars: pd.DataFrame) -> None:
    a, b = bars.copy(), bars.copy()
    a.iloc[0, a.columns.get_loc("volume")] = 0.0
    b.iloc[0, b.columns.get_loc("volume")] = -0.0
    assert data_hash(a) == data_hash(b)
    weird_nan = np.frombuffer(struct.pack("<Q", 0x7FF8000000000123), dtype="<f8")[0]
    a.iloc[1, a.columns.get_loc("close")] = np.nan
    b.iloc[1, b.columns.get_loc("close")] = weird_nan
    assert data_hash(a) == data_hash(b)
    assert data_hash(bars.iloc[:0]) == hashlib.sha256(b"").hexdigest()


# ----------------------------------------------------------------------------- the CLI

@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(check_command)
    return app


def test_cli_passes_on_bundled_data(cli: typer.Typer) -> None:
    res = CliRunner().invoke(cli, ["--symbol", "BTC/USDT", "--timeframe", "1h", "--start", "2024-01-01",
                                   "--end", "2024-01-31"])
    assert res.exit_code == 0, res.output
    assert "PASSED" in res.output and "744 of 744" in res.output


def test_cli_fails_on_halt_file_and_prints_json(cli: typer.Typer, halt_file: Path) -> None:
    res = CliRunner().invoke(cli, ["--bars-file", str(halt_file), "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.output)
    assert set(doc["failed"]) == {"missing_bars", "longest_gap", "zero_volume_run", "flat_run"}
    # thresholds from options: a tolerant certificate passes the same day
    res = CliRunner().invoke(cli, ["--bars-file", str(halt_file), "--max-missing-share", "0.1",
                                   "--max-gap-bars", "80", "--max-zero-volume-run", "72",
                                   "--max-flat-run", "72"])
    assert res.exit_code == 0, res.output


def test_cli_reports_duplicates_in_a_user_csv(cli: typer.Typer, bars: pd.DataFrame, tmp_path) -> None:
    frame = pd.concat([bars, bars.iloc[:3]]).reset_index()
    frame["timestamp"] = frame["timestamp"].map(lambda t: int(t.timestamp() * 1000))
    path = tmp_path / "mine.csv"
    frame.to_csv(path, index=False)
    res = CliRunner().invoke(cli, ["--symbol", "X/USDT", "--bars-file", str(path), "--start", "2024-01-01"])
    assert res.exit_code == 1
    assert "duplicates" in res.output and "FAIL" in res.output


@pytest.mark.parametrize(("args", "error", "text"), [
    (["--timeframe", "1x"], ConfigurationError, "timeframe"),
    (["--symbol", "NOPE/USDT"], DataError, "NOPE/USDT"),
    (["--start", "2024-02-01", "--end", "2024-01-01"], ConfigurationError, "end"),
    (["--bars-file", "/nonexistent/bars.csv"], DataError, "expected an existing file"),
    (["--max-missing-share", "2"], ConfigurationError, "max_missing_share"),
])
def test_cli_bad_input_propagates_toolkit_errors(cli: typer.Typer, args: list[str], error: type,
                                                 text: str) -> None:
    res = CliRunner().invoke(cli, args)
    assert isinstance(res.exception, error), res.output
    assert text in str(res.exception)
