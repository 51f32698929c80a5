"""Benchmark the loopback emulator through real ccxt: orders per second and klines bars per second.

The emulator runs in its own process (as in paper trading), the client in this
one, so the two share the machine's cores but not a GIL. Run::

    .venv/bin/python bench/bench_emulator.py [--orders 2000] [--json bench/results/emulator.json]

The emulator runs with its rate limits off (``--no-rate-limits``) and the client-side
rate limiter is off (``enableRateLimit=False``): this measures the emulator and the HTTP
path, not Binance's limits or ccxt's sleep. The client signs with a FollowerClock of the
stepped replay clock. Durations are measured and reported here, never asserted in tests
(e.g. the added latency of a ``latency`` fault).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import ccxt

from toolkit.emulator import DEFAULT_API_KEY, DEFAULT_API_SECRET
from toolkit.emulator.testing import FollowerClock, admin, free_port, step_clock
from toolkit.exchange import exchange_client

RESULTS = Path(__file__).resolve().parent / "results" / "emulator.json"


def _spawn(port: int, state: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", "from toolkit.emulator.cli import app; app()", "serve", "--port", str(port),
           "--speed", "0", "--start", "2024-04-30", "--state", str(state), "--balance", "USDT=100000000",
           "--balance", "BTC=1000", "--symbols", "BTC/USDT", "--no-rate-limits"]
    env = {**os.environ, "TOOLKIT_DATA_DIR": str(state.parent / "cache")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(900):  # up to 90 s on a loaded machine
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/ping", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("emulator did not start")


def bench_sync_orders(url: str, n: int) -> dict[str, float]:
    ex = exchange_client(url=url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, clock=FollowerClock(url),
                         enableRateLimit=False)
    ex.load_markets()
    for _ in range(20):  # warm up the connection pool
        ex.create_order("BTC/USDT", "market", "buy", 0.001)
    t0 = time.perf_counter()
    statuses = [ex.create_order("BTC/USDT", "market", "buy" if i % 2 else "sell", 0.001)["status"]
                for i in range(n)]
    market = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n // 2):
        order = ex.create_order("BTC/USDT", "limit", "buy", 0.001, 50_000)
        ex.cancel_order(order["id"], "BTC/USDT")
    limit_cancel = time.perf_counter() - t0
    return {"market_orders_per_s": n / market, "limit_plus_cancel_requests_per_s": n / limit_cancel,
            "market_orders_filled_share": statuses.count("closed") / n}


def bench_async_orders(url: str, n: int, concurrency: int) -> float:
    async def run() -> float:
        ex = exchange_client(url=url, api_key=DEFAULT_API_KEY, secret=DEFAULT_API_SECRET, async_=True,
                             clock=FollowerClock(url), enableRateLimit=False)
        try:
            await ex.load_markets()
            await ex.create_order("BTC/USDT", "market", "buy", 0.001)

            async def worker(k: int) -> None:
                for i in range(n // concurrency):
                    await ex.create_order("BTC/USDT", "market", "buy" if (i + k) % 2 else "sell", 0.001)

            t0 = time.perf_counter()
            await asyncio.gather(*(worker(k) for k in range(concurrency)))
            return (n // concurrency) * concurrency / (time.perf_counter() - t0)
        finally:
            await ex.close()

    return asyncio.run(run())


def bench_latency_fault(url: str, n: int = 5, ms: int = 300) -> dict[str, float]:
    """Median time of a klines request with and without a ``latency`` fault of ``ms`` (was a test assertion)."""
    ex = exchange_client(url=url, enableRateLimit=False, timeout=60_000)
    ex.load_markets()

    def timed() -> float:
        t0 = time.perf_counter()
        ex.fetch_ohlcv("BTC/USDT", "1m", limit=1)
        return time.perf_counter() - t0

    plain = sorted(timed() for _ in range(n))[n // 2]
    admin(url, "POST", "/admin/faults", {"faults": [{"kind": "latency", "ms": ms, "path": "/api/v3/klines"}],
                                         "replace": True})
    delayed = sorted(timed() for _ in range(n))[n // 2]
    admin(url, "DELETE", "/admin/faults")
    return {"plain_ms": plain * 1000, "with_fault_ms": delayed * 1000, "fault_ms": ms}


def bench_klines(url: str) -> dict[str, float]:
    ex = exchange_client(url=url, enableRateLimit=False)
    ex.load_markets()
    since = ex.parse8601("2024-01-01T00:00:00Z")
    t0 = time.perf_counter()
    bars, pages, cursor = 0, 0, since
    while True:
        page = ex.fetch_ohlcv("BTC/USDT", "1m", since=cursor, limit=1000)
        if not page:
            break
        bars, pages, cursor = bars + len(page), pages + 1, page[-1][0] + 60_000
    took = time.perf_counter() - t0
    return {"bars": bars, "pages": pages, "bars_per_s": bars / took, "seconds": took}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = _spawn(port, Path(tmp) / "state.sqlite")
        url = f"http://127.0.0.1:{port}"
        try:
            sync = bench_sync_orders(url, args.orders)
            # all fills of a bar share one participation budget (25 % of the reference volume, ~2.6 BTC in
            # the first bar): give the async phase a fresh bar so its 0.001 BTC orders fill at once
            step_clock(url, 1)
            async_rate = bench_async_orders(url, args.orders, concurrency=8)
            klines = bench_klines(url)
            latency = bench_latency_fault(url)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    week = 7 * 24 * 60
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "ccxt": ccxt.__version__},
        "orders": args.orders,
        "sync_market_orders_per_s": round(sync["market_orders_per_s"], 1),
        "sync_market_orders_filled_share": round(sync["market_orders_filled_share"], 3),
        "sync_limit_plus_cancel_requests_per_s": round(sync["limit_plus_cancel_requests_per_s"], 1),
        "async_8_concurrent_market_orders_per_s": round(async_rate, 1),
        "klines_bars": int(klines["bars"]), "klines_pages": int(klines["pages"]),
        "klines_bars_per_s": round(klines["bars_per_s"], 0),
        "week_of_1m_bars_one_order_per_bar_s": round(week / sync["market_orders_per_s"], 1),
        "klines_request_ms": round(latency["plain_ms"], 1),
        "klines_request_with_300ms_latency_fault_ms": round(latency["with_fault_ms"], 1),
        "rate_limits": "off",
        "goal_orders_per_s": 500,
    }
    rows = [
        ("sync ccxt market orders / s", result["sync_market_orders_per_s"]),
        ("sync ccxt limit+cancel requests / s", result["sync_limit_plus_cancel_requests_per_s"]),
        ("async ccxt (8 concurrent) orders / s", result["async_8_concurrent_market_orders_per_s"]),
        (f"klines 1m bars / s ({result['klines_bars']} bars)", result["klines_bars_per_s"]),
        ("a week of 1m bars, 1 order per bar (s)", result["week_of_1m_bars_one_order_per_bar_s"]),
        ("klines request (ms, median of 5)", result["klines_request_ms"]),
        ("klines request, 300 ms latency fault (ms)", result["klines_request_with_300ms_latency_fault_ms"]),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value:>10,.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
