"""Errors of the toolkit, named for the reaction they call for.

Every error carries typed fields and a message that says what was expected and
what was found. The CLI maps each class to an exit code in one place
(``toolkit.cli``); nothing else decides how an error is reported.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "DataError",
    "DataQualityError",
    "ExecutionFailed",
    "GateFailed",
    "PromotionRefused",
    "RegistryError",
    "TemporaryError",
    "ToolkitError",
    "ValidationError",
]


class ToolkitError(Exception):
    """Base class: an operator-facing error with a clear message."""

    exit_code = 1


class ConfigurationError(ToolkitError):
    """A configuration or parameter is wrong: fix the input and run again."""

    exit_code = 2

    def __init__(self, field: str, expected: str, found: Any) -> None:
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{field}: expected {expected}, found {found!r}")


class ValidationError(ConfigurationError):
    """A user-supplied value failed validation (an alias kept for readability)."""


class DataError(ToolkitError):
    """Market data is missing, unreadable or malformed: nothing was written."""

    exit_code = 3


class DataQualityError(DataError):
    """Data was read but fails the quality certificate's thresholds."""


class RegistryError(ToolkitError):
    """The MLflow registry is unreachable or in an unexpected state."""

    exit_code = 4


class GateFailed(ToolkitError):
    """A promotion gate failed: the version is not eligible."""

    exit_code = 5


class PromotionRefused(ToolkitError):
    """A promote or rollback was refused; the registry was left unchanged."""

    exit_code = 6


class TemporaryError(ToolkitError):
    """A transient failure (network, rate limit): retrying may succeed."""

    exit_code = 75


class ExecutionFailed(ToolkitError):
    """A notebook or subprocess failed; the message names the failing step."""

    exit_code = 7
