"""Helpers for tests that run against the emulator (this project's and other areas')."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from toolkit.data.store import BarStore

__all__ = ["admin", "free_port", "make_store", "step_clock"]


def make_store(root: Path, slices: dict[str, tuple[str, str]]) -> Path:
    """Copy slices of the bundled 1m bars into a small store under ``root`` and return ``root``.

    ``slices`` maps a ccxt symbol to inclusive ``(start, end)`` dates, e.g.
    ``{"BTC/USDT": ("2024-02-28", "2024-03-05")}``. A small store keeps the
    emulator's start-up fast.
    """
    bundled = BarStore(roots=[BarStore().roots[0]])
    target = BarStore(roots=[root])
    for symbol, (start, end) in slices.items():
        target.write(symbol, "1m", bundled.load(symbol, "1m", start, end))
    return root


def admin(url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call an admin endpoint of the emulator at ``url`` and return its JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"admin {method} {path}: {exc.code} {exc.read()!r}") from exc


def free_port() -> int:
    """Return a TCP port that was free on loopback a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def step_clock(url: str, minutes: int) -> dict[str, Any]:
    """Advance the emulator's replay clock by ``minutes`` through the admin endpoint; return its status."""
    return admin(url, "POST", "/admin/clock", {"advance_minutes": minutes})  # type: ignore[no-any-return]
