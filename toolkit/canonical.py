"""Canonical JSON: the one serialisation whose sha256 is an identity (configs, policies, verdicts, audit rows).

Keys sorted, no whitespace, no NaN or infinity (they are not JSON; callers clean them
first or get a ``ValueError``), UTF-8 kept as is unless ``ascii_only`` is asked for
(the audit trail's rows were chained with ASCII escapes from the start and keep them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["canonical_json", "canonical_sha256", "sha256_hex"]


def canonical_json(value: Any, *, indent: int | None = None, ascii_only: bool = False) -> str:
    """Return ``value`` as canonical JSON (sorted keys, compact separators unless ``indent``)."""
    seps = (",", ":") if indent is None else (",", ": ")
    return json.dumps(value, sort_keys=True, separators=seps, indent=indent, allow_nan=False,
                      ensure_ascii=ascii_only)


def sha256_hex(text: str | bytes) -> str:
    """Return the sha256 hex digest of ``text`` (UTF-8 when a string)."""
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()


def canonical_sha256(value: Any, *, ascii_only: bool = False) -> str:
    """Return the sha256 of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value, ascii_only=ascii_only))
