"""Measured evidence cannot be forged: re-derive it from the backtest bundle and compare.

The verdict is a pure function of (evidence, policy), so re-evaluating a stored verdict
only proves that the verdict follows from the stored ``gate_evidence.json``; it does not
prove that the figures in that file were measured. ``rederive`` re-runs the
measurements of ``toolkit.gates.evidence.collect_evidence`` on the bundle and compares
every field of the stored extras with its re-derivation, exactly (the canonical JSON of
the values: the same 12 significant digits the file holds):

- deterministic fields, compared for equality: ``schema``, ``settings`` (the policy in
  force's measurement settings), ``bundle_sha256``, ``bundle_files``, ``strategy``,
  ``lookahead``, ``warmup``, ``cost_stress``, ``robustness``, ``registry_trials`` (the
  caller passes the registry's count recomputed now), ``paper_record`` (recomputed from its own
  stored inputs: an edited day count, p-value or verdict differs) and any field a later version of
  ``collect_evidence`` adds (the comparison runs over the union of the keys);
- ``latency``: the raw samples are wall-clock times of this host and cannot be
  re-derived exactly, so they are checked for plausibility instead: at least the
  policy's ``min_samples``, as many as the replay plan times, every one a positive
  integer, and a ``host`` block (python, machine, system) naming where they were
  measured. The replay plan itself (``window_bars``, ``warmup_calls``, ``distinct_bars``,
  ``first_bar``, ``last_bar``, ``timer``) is deterministic and compared exactly. A
  forger can still claim fast samples that look plausible; what cannot pass is a
  block that was not produced by the replay of this bundle under these settings.

Re-derivation uses the same code and the same pinned libraries as the measurement; a
figure measured by another toolkit version may differ, and the answer then is to run
the gates again (``toolkit gates``), which re-measures it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.gates.evidence import EXTRAS_FILE, canonical_json, collect_evidence, measurement_settings
from toolkit.gates.policy import GatePolicy

__all__ = ["LATENCY_PLAN_FIELDS", "Mismatch", "read_extras", "rederive", "reusable_latency"]

#: latency fields fixed by the bundle and the settings (compared exactly); the samples and the host are not
LATENCY_PLAN_FIELDS = ("window_bars", "warmup_calls", "distinct_bars", "first_bar", "last_bar", "timer")
_ABSENT = "<absent>"


@dataclass(frozen=True)
class Mismatch:
    """One stored figure that does not match its re-derivation (``field`` is a dotted path)."""

    field: str
    recorded: Any
    rederived: Any
    note: str = ""

    def describe(self) -> str:
        """Return one line naming the field, what was recorded and what the bundle gives."""
        def short(v: Any) -> str:
            text = canonical_json(v) if v is not _ABSENT else _ABSENT
            return text if len(text) <= 80 else text[:77] + "..."

        why = f" ({self.note})" if self.note else ""
        return (f"gate_evidence.json field {self.field}: recorded {short(self.recorded)}, "
                f"re-derived from the bundle {short(self.rederived)}{why}")


def _same(a: Any, b: Any) -> bool:
    return bool(canonical_json(a) == canonical_json(b))


def _first_difference(path: str, a: Any, b: Any) -> tuple[str, Any, Any] | None:
    """Return the first (dotted path, recorded, re-derived) where ``a`` and ``b`` differ, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return f"{path}.{k}", a.get(k, _ABSENT), b.get(k, _ABSENT)
            found = _first_difference(f"{path}.{k}", a[k], b[k])
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(f"{path}[{i}]", x, y)
            if found:
                return found
        return None
    return None if _same(a, b) else (path, a, b)


def _latency(stored: Any, again: dict[str, Any], policy: GatePolicy) -> list[Mismatch]:
    """Check a stored latency block for plausibility against the replay plan of this bundle."""
    if not isinstance(stored, dict):
        return [Mismatch("latency", stored, "a latency block", "no latency measurement recorded")]
    out: list[Mismatch] = []
    for key in LATENCY_PLAN_FIELDS:
        if not _same(stored.get(key, _ABSENT), again.get(key)):
            out.append(Mismatch(f"latency.{key}", stored.get(key, _ABSENT), again.get(key),
                                "the replay plan follows from the bundle and the settings"))
    samples = stored.get("samples_ns")
    need = len(again["samples_ns"])
    if not isinstance(samples, list):
        out.append(Mismatch("latency.samples_ns", samples, f"a list of {need} samples", "no samples"))
    else:
        if len(samples) < policy.latency.min_samples or len(samples) != need:
            out.append(Mismatch("latency.samples_ns", f"{len(samples)} samples", f"{need} samples",
                                f"the replay times {need} decisions (policy min_samples "
                                f"{policy.latency.min_samples})"))
        bad = [s for s in samples if isinstance(s, bool) or not isinstance(s, int) or s <= 0]
        if bad:
            out.append(Mismatch("latency.samples_ns", f"{len(bad)} samples not positive integers (e.g. {bad[0]!r})",
                                "positive nanosecond counts", "a decision cannot take zero or negative time"))
    host = stored.get("host")
    if not (isinstance(host, dict)
            and all(isinstance(host.get(k), str) and host[k].strip() for k in ("python", "machine", "system"))):
        out.append(Mismatch("latency.host", host if host is not None else _ABSENT,
                            "python, machine and system of the measuring host",
                            "host-dependent samples must say where they were measured"))
    return out


def rederive(bundle_dir: str | Path, extras: dict[str, Any], policy: GatePolicy,
             registry_trials: int | None) -> list[Mismatch]:
    """Re-derive every deterministic measurement of ``extras`` from the bundle; return what differs.

    Parameters
    ----------
    bundle_dir
        The version's backtest bundle (already checked against its ``evidence.sha256``).
    extras
        The stored extra evidence (``gate_evidence.json``, parsed).
    policy
        The policy in force: its measurement settings are the ones the evidence must have
        been measured under.
    registry_trials
        The registry's trial count for the version, recomputed by the caller now.

    Returns
    -------
    list[Mismatch]
        Empty when every deterministic field equals its re-derivation and the latency block
        is plausible; otherwise one entry per differing top-level field (the first differing
        leaf named), then the latency findings.
    """
    stored_record = extras.get("paper_record")
    again = collect_evidence(bundle_dir, policy, registry_trials,
                             paper_record=stored_record if isinstance(stored_record, dict) else None).extras
    out: list[Mismatch] = []
    for key in sorted(set(extras) | set(again)):
        if key == "latency":
            continue
        found = _first_difference(key, extras.get(key, _ABSENT), again.get(key, _ABSENT))
        if found:
            out.append(Mismatch(*found))
    out += _latency(extras.get("latency"), again["latency"], policy)
    return out


def read_extras(extras_dir: str | Path) -> dict[str, Any]:
    """Return the parsed ``gate_evidence.json`` of ``extras_dir``."""
    return json.loads((Path(extras_dir) / EXTRAS_FILE).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def reusable_latency(extras: dict[str, Any] | None, policy: GatePolicy, bundle_sha: str) -> dict[str, Any] | None:
    """Return the latency block of earlier extras when it was measured on this bundle under these settings.

    A version's latency is measured once and reused by later gate evaluations (so two
    evaluations give byte-identical verdicts); it is measured again only when the latency
    settings of the policy changed, or the earlier block is missing or has no samples.
    """
    if not isinstance(extras, dict) or extras.get("bundle_sha256") != bundle_sha:
        return None
    block = extras.get("latency")
    settings = (extras.get("settings") or {}).get("latency")
    if not isinstance(block, dict) or not isinstance(block.get("samples_ns"), list) or not block["samples_ns"]:
        return None
    if not _same(settings, measurement_settings(policy)["latency"]):
        return None
    return block
