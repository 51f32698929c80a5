"""Errors of attribution, named for the reaction (the CLI maps each to its exit code)."""

from __future__ import annotations

from typing import Any

from toolkit.errors import DataError

__all__ = ["JournalError"]


class JournalError(DataError):
    """A journal is missing, unreadable or holds a malformed value: fix or point at the right file (exit 3)."""

    def __init__(self, field: str, expected: str, found: Any) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{field}: expected {expected}, found {found!r}")
