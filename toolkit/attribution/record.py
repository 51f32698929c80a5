"""The paper record the ``live`` stage's ``paper_record`` gate reads, and its re-derivation.

The block (``paper_record.json`` of an attribution run, ``extras["paper_record"]`` of the
gate evidence) holds the verdict's **inputs** (``toolkit.attribution.verdict.RecordInputs``:
live and backtest returns at decision prices, per-order excess costs, lengths, the
thresholds) and what :func:`~toolkit.attribution.verdict.evaluate_record` derives from them.
:func:`rederive_paper_record` recomputes the derived part from the stored inputs, so an
edited figure (days, a p-value, the verdict) does not survive ``toolkit promote``'s
re-derivation; the block also names the journal's and the bundle's sha256.

This module imports only the verdict's statistics: the gates import it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from toolkit.attribution.verdict import RecordInputs, evaluate_record

__all__ = ["PAPER_RECORD_FILE", "PAPER_RECORD_SCHEMA", "paper_record_block", "rederive_paper_record"]

PAPER_RECORD_FILE = "paper_record.json"
PAPER_RECORD_SCHEMA = 1


def _json_safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def paper_record_block(inputs: RecordInputs, model: str, version: str, journal_sha256: str, bundle_sha256: str,
                       period: tuple[str, str]) -> dict[str, Any]:
    """Return the paper-record block: identity, the inputs, and the verdict derived from them."""
    v = evaluate_record(inputs)
    block = {
        "schema": PAPER_RECORD_SCHEMA, "model": model, "version": str(version), "journal_sha256": journal_sha256,
        "bundle_sha256": bundle_sha256, "period": list(period), "inputs": inputs.to_dict(),
        "verdict": v.verdict, "sentence": v.sentence, "days": v.days, "required_days": v.required_days,
        "consistency_p": v.consistency_p, "execution_p": v.execution_p,
        "mean_excess_cost_bps": v.mean_excess_cost_bps, "live_sharpe": v.live_sharpe,
        "backtest_sharpe": v.backtest_sharpe, "psr_vs_backtest": v.psr_vs_backtest, "bootstrap_p": v.bootstrap_p,
        "mintrl_days": v.mintrl_days,
    }
    return json.loads(json.dumps(_json_safe(block)))  # type: ignore[no-any-return]


def rederive_paper_record(block: dict[str, Any]) -> dict[str, Any]:
    """Return the block recomputed from its own stored inputs (equal to ``block`` unless it was edited)."""
    inputs = RecordInputs.from_dict(dict(block.get("inputs") or {}))
    period = block.get("period") or ["", ""]
    return paper_record_block(inputs, model=str(block.get("model")), version=str(block.get("version")),
                              journal_sha256=str(block.get("journal_sha256")),
                              bundle_sha256=str(block.get("bundle_sha256")), period=(str(period[0]), str(period[1])))
