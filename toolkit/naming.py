"""Names that become identifiers and file names: checked once, before any work starts.

A registered model name ends up in MLflow, in report file names and in the runner's
deployment config, so it is held to the strictest of those: letters, digits, ``.``,
``_`` and ``-``, starting with a letter or digit, at most 120 characters, no ``..``.
A path is never built from a name that did not pass :func:`validate_model_name`;
:func:`safe_filename` is the second line of defence for names from elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from toolkit.errors import ConfigurationError

__all__ = ["MAX_NAME_LENGTH", "child_path", "safe_filename", "validate_model_name"]

MAX_NAME_LENGTH = 120
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def validate_model_name(name: object, field: str = "model_name") -> str:
    """Return ``name`` when it is a valid registered model name; raise ``ConfigurationError`` naming ``field``."""
    expected = (f"1-{MAX_NAME_LENGTH} characters of letters, digits, '.', '_' or '-', starting with a letter "
                "or digit, without '..' (e.g. ma_cross.BTC-USDT.15m)")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(field, expected, name)
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name) or ".." in name:
        raise ConfigurationError(field, expected, name if len(name) <= 200 else name[:200] + "…")
    return name


def safe_filename(name: str) -> str:
    """Return ``name`` with every character but letters, digits, ``-``, ``_`` and ``.`` replaced by ``_``."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".")
    return out[:MAX_NAME_LENGTH] or "_"


def child_path(root: Path, *parts: str) -> Path:
    """Return ``root/parts…``, refusing a result that would leave ``root`` (``..``, absolute parts)."""
    base = root.resolve()
    target = base.joinpath(*parts).resolve()
    if not target.is_relative_to(base):
        raise ConfigurationError("path", f"a location inside {base}", str(target))
    return target
