"""The version a deployment trades: resolved from the registry by alias, checked, loaded.

A version is traded only when, at the moment it is loaded:

* the model exists and the deployment's alias (``paper`` or ``champion``) is set on it;
* the version's verdict for the alias's stage (``paper`` for ``paper``, ``live`` for
  ``champion``) passed: the tag says ``passed``, the stored verdict file hashes to the
  recorded sha, it names the stage, says passed, its ``verdict_sha`` is the tag's, its
  policy is the stage's policy in force, and the version is not tagged as a holder that
  failed a re-evaluation;
* the promotion audit trail's last completed promote or rollback at that stage moved the
  alias to this version (an alias set by hand in the MLflow UI has no such row);
* the version trades the deployment's symbol.

Anything else is a ``ConfigurationError`` naming the deployment's field, raised before
any order. The runner imports the registry adapter and the audit trail, never the
backtest, the gates' evidence or vectorbt.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from toolkit.errors import ConfigurationError, RegistryError, ToolkitError
from toolkit.registry import adapter
from toolkit.registry.adapter import STAGE_ALIAS
from toolkit.registry.audit import AuditLog

__all__ = ["LoadedVersion", "load_version", "resolve_version"]


@dataclass(frozen=True)
class LoadedVersion:
    """A checked version and the code it decides with (the version's own strategies package)."""

    model: str
    version: str
    alias: str
    stage: str
    strategy: Any           # the version's Strategy (positions, last_position, required_history)
    sizing: Any             # the version's Sizing (scale, band)
    bar_minutes: float
    timeframe: str
    symbol: str
    required_history: int
    rebalance: Any          # the version's ``rebalance`` (the band rule)
    regime_map_json: str | None = None  # stored with the stage's verdict (``evidence/regime_map.json``), if any

    @property
    def bar_ms(self) -> int:
        return round(self.bar_minutes * 60_000)

    def decide(self, bars: pd.DataFrame, held: float) -> tuple[float, float, float]:
        """Return (direction, raw sized target, target after the band) at the last bar of ``bars``.

        ``bars``: at least ``required_history`` closed bars ending at the decision bar; ``held``:
        the position (fraction of the allocation) held before it. The same calls as the backtest:
        ``Strategy.positions``, ``Sizing.scale`` and the band rule.
        """
        direction = float(self.strategy.last_position(bars))
        if hasattr(self.sizing, "scale_values"):
            scale = self.sizing.scale_values(bars["close"].to_numpy(dtype="float64"), self.bar_minutes)[-1]
        else:  # a version logged before ``scale_values`` (its own sizing code): the same numbers as a Series
            scale = self.sizing.scale(bars["close"], self.bar_minutes).iloc[-1]
        raw = direction * (0.0 if pd.isna(scale) else float(scale))
        target = float(self.rebalance(raw, held, float(self.sizing.rebalance_band)))
        return direction, raw, target


def resolve_version(model: str, alias: str, field: str, audit_path: str | Path | None = None) -> str:
    """Return the version ``alias`` points at after checking its verdict and its promotion in the audit trail."""
    return _resolve(model, alias, field, audit_path)[0]


def _resolve(model: str, alias: str, field: str, audit_path: str | Path | None) -> tuple[str, str | None]:
    """Return the version ``alias`` points at and the regime map stored with its verdict (None: none stored).

    ``field`` names the deployment in errors (``deployments[0]``).

    Raises
    ------
    ConfigurationError
        Unknown model or alias unset; no passing verdict for the stage; no audited promotion.
    """
    stage = {a: s for s, a in STAGE_ALIAS.items()}[alias]
    try:
        adapter.require_model(model)
    except ConfigurationError:
        raise ConfigurationError(f"{field}.model", "a registered model", model) from None
    version = adapter.alias_version(model, alias)
    if version is None:
        raise ConfigurationError(f"{field}.alias", f"an alias set on {model!r} (promote a version first: "
                                 f"toolkit promote {model} --version N --stage {stage})",
                                 f"{alias} unset; aliases {adapter.model_aliases(model)}")
    info = adapter.version_info(model, version)
    regimes = _check_verdict(model, version, stage, dict(info.tags), field)
    _check_audit(model, version, stage, alias, field, audit_path)
    return version, regimes


def _check_verdict(model: str, version: str, stage: str, tags: dict[str, str], field: str) -> str | None:
    from toolkit.gates.policy import load_policy
    from toolkit.registry.verdicts import gate_tag, holder_failed_tag, parse_verdict

    where = f"{model} version {version}"
    outcome = tags.get(gate_tag(stage, "verdict"), "not_evaluated")
    if outcome != "passed":
        raise ConfigurationError(f"{field}.alias", f"a version with a passing {stage} verdict",
                                 f"{where}: gate.{stage}.verdict is {outcome!r}")
    if tags.get(holder_failed_tag(stage)) == "true":
        raise ConfigurationError(f"{field}.alias", f"a version whose {stage} verdict still holds",
                                 f"{where} failed a re-evaluation at {stage}")
    with tempfile.TemporaryDirectory(prefix="runner-verdict-") as tmp:
        try:
            files = adapter.download_gate_artifacts(model, version, Path(tmp), stage)
        except RegistryError as exc:
            raise ConfigurationError(f"{field}.alias", f"a version with a stored {stage} verdict", str(exc)) from None
        raw = files.verdict.read_bytes()
        map_file = files.evidence / "regime_map.json"
        map_text = map_file.read_text(encoding="utf-8") if map_file.is_file() else None
    if hashlib.sha256(raw).hexdigest() != tags.get(gate_tag(stage, "verdict_file_sha256")):
        raise ConfigurationError(f"{field}.alias", "a stored verdict whose bytes hash to the recorded sha",
                                 f"{where}: verdict.json was changed after it was recorded")
    try:
        verdict = parse_verdict(raw.decode("utf-8"), source="verdict.json")
    except (ToolkitError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{field}.alias", "a readable verdict", f"{where}: {exc}") from None
    policy_sha = str(load_policy(None, stage=stage).sha256())
    recorded = tags.get(gate_tag(stage, "verdict_sha"))
    if not (verdict.passed and verdict.stage == stage and verdict.verdict_sha == recorded
            and verdict.policy_sha == policy_sha):
        raise ConfigurationError(
            f"{field}.alias", f"a passed {stage} verdict under the {stage} policy in force ({policy_sha[:12]})",
            f"{where}: passed={verdict.passed}, stage {verdict.stage}, policy {verdict.policy_sha[:12]}")
    return map_text  # parsed by runner.alerting (toolkit.ops.regimes), only when alerts are configured


def _check_audit(model: str, version: str, stage: str, alias: str, field: str,
                 audit_path: str | Path | None) -> None:
    done = [e for e in AuditLog(audit_path).events(model)
            if e["stage"] == stage and e["outcome"] == "done" and e["action"] in ("promote", "rollback")]
    last = done[-1] if done else None
    if last is None or str(last["to_version"]) != version:
        found = ("no completed promotion at this stage" if last is None else
                 f"the last completed {last['action']} moved {alias} to version {last['to_version']}")
        raise ConfigurationError(
            f"{field}.alias", f"{alias} set by an audited `toolkit promote`/`rollback` (the audit trail's last "
            f"completed {stage} promotion names version {version})",
            f"{alias} -> version {version}, but {found}: was the alias set by hand?")


def load_version(model: str, alias: str, symbol: str, field: str,
                 audit_path: str | Path | None = None) -> LoadedVersion:
    """Resolve, check and load the version ``alias`` points at for a deployment trading ``symbol``."""
    version, regimes = _resolve(model, alias, field, audit_path)
    python_model, cfg = adapter.load_python_model(model, version)
    if cfg.get("symbol") != symbol:
        raise ConfigurationError(f"{field}.symbol", f"the symbol {model} version {version} was backtested on, "
                                 f"{cfg.get('symbol')!r}", symbol)
    import importlib

    package = importlib.import_module(str(cfg["strategies_package"]))  # loaded with the version's code paths
    strategy = python_model.strategy
    sizing = python_model.sizing
    bar_minutes = float(cfg["bar_minutes"])
    required = max(int(cfg.get("required_history") or 0), int(strategy.required_history),
                   int(sizing.required_history(bar_minutes)))
    return LoadedVersion(model=model, version=version, alias=alias, stage={a: s for s, a in STAGE_ALIAS.items()}[alias],
                         strategy=strategy, sizing=sizing, bar_minutes=bar_minutes, timeframe=str(cfg["timeframe"]),
                         symbol=symbol, required_history=required, rebalance=package.rebalance,
                         regime_map_json=regimes)
