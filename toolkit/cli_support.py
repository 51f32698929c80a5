"""What every command-line wrapper shares: printing a result (text or JSON) and remembering that it did.

``toolkit.cli.main`` prints a JSON error object on stdout when a ``--json`` command fails,
unless the command already printed its JSON document (e.g. a failed verdict).
"""

from __future__ import annotations

import json
from typing import Any

import typer

__all__ = ["emit", "json_emitted", "reset", "short"]

_state = {"json_emitted": False}


def emit(payload: Any, as_json: bool, human: str) -> None:
    """Print ``payload`` as JSON when ``as_json``, else the ``human`` text."""
    if as_json:
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
        _state["json_emitted"] = True
    else:
        typer.echo(human)


def json_emitted() -> bool:
    """Return True when a command already printed its JSON document in this invocation."""
    return _state["json_emitted"]


def reset() -> None:
    """Forget what was printed (one invocation of ``main`` starts clean)."""
    _state["json_emitted"] = False


def short(sha: str | None) -> str:
    """Return the first 12 characters of a hash, or ``-``."""
    return sha[:12] if sha else "-"
