"""Where this install's warm server lives; imported by every ``toolkit`` process, so it imports almost nothing.

The state dir is ``$TOOLKIT_WARM_DIR`` if set, else ``$XDG_RUNTIME_DIR/desk-toolkit``, else
``~/.cache/desk-toolkit/warm`` (``toolkit warm start`` creates it with mode 0700). A server's socket,
pid file (held under an exclusive ``flock`` while the server lives) and log are named by a hash of
``sys.prefix`` and the ``toolkit`` package directory, so two checkouts or two environments never share
a server. (A CRC, not hashlib: importing OpenSSL would cost every command without a server milliseconds.)
"""

from __future__ import annotations

import binascii
import os
import sys
from pathlib import Path

__all__ = ["ENV_DIR", "ENV_SWITCH", "install_key", "state_dir", "state_files"]

#: the state dir's variable; ``TOOLKIT_WARM=0`` turns the client off
ENV_DIR, ENV_SWITCH = "TOOLKIT_WARM_DIR", "TOOLKIT_WARM"


def state_dir(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    """Return the state dir for ``env`` (default: this process's environment), without creating it."""
    env = os.environ if env is None else env
    if env.get(ENV_DIR):
        return Path(env[ENV_DIR])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "desk-toolkit"
    return Path(env.get("HOME") or Path.home()) / ".cache" / "desk-toolkit" / "warm"


def install_key(prefix: str | None = None) -> str:
    """Return the hash naming this install's server: ``sys.prefix`` and the toolkit package directory."""
    package = str(Path(__file__).resolve().parents[1])
    key = f"{prefix or sys.prefix}\0{package}".encode()
    return f"{binascii.crc32(key):08x}{binascii.crc32(key[::-1]):08x}"


def state_files(directory: Path, key: str | None = None) -> dict[str, Path]:
    """Return this install's ``socket``, ``pid`` and ``log`` paths under ``directory``."""
    key = key or install_key()
    return {kind: directory / f"toolkit-{key}.{kind}" for kind in ("socket", "pid", "log")}
