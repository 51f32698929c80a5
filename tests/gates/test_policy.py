"""The gate policy file: the shipped default, its identity, and bad files with errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from toolkit.errors import ConfigurationError
from toolkit.gates import DEFAULT_POLICY_PATH, GatePolicy, load_policy


def _write(tmp_path: Path, data: object, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _default() -> dict:
    return yaml.safe_load(DEFAULT_POLICY_PATH.read_text())


def test_default_policy_loads_with_budgets_for_every_type(policy: GatePolicy) -> None:
    assert policy.capital.allocation_usdt > 0
    assert {t: policy.latency_budget_ms(t) for t in ("hft", "intraday", "swing")} == {
        "hft": 1.0, "intraday": 50.0, "swing": 500.0}
    assert policy.statistics.pbo_splits == 16
    assert len(policy.sha256()) == 64
    with pytest.raises(ConfigurationError, match="strategy_type"):
        policy.latency_budget_ms("scalping")


def test_identity_ignores_comments_order_and_int_vs_float(tmp_path: Path, policy: GatePolicy) -> None:
    data = _default()
    reordered = dict(reversed(list(data.items())))
    reordered["capital"] = dict(reversed(list(data["capital"].items())))
    reordered["capital"]["allocation_usdt"] = 100000  # int instead of 100000.0
    same = load_policy(_write(tmp_path, reordered))
    assert same.sha256() == policy.sha256()
    data["capital"]["max_drawdown_pct"] = 24.0
    assert load_policy(_write(tmp_path, data, "q.yaml")).sha256() != policy.sha256()


def test_policy_is_frozen(policy: GatePolicy) -> None:
    with pytest.raises(Exception, match="frozen"):
        policy.capital.allocation_usdt = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("edit", "field", "found"), [
    (lambda d: d.update(colour="red"), "colour", "red"),
    (lambda d: d["capital"].update(max_dd=5), "capital.max_dd", "5"),
    (lambda d: d["latency"]["budgets_p99_ms"].update(scalp=1.0), "latency.budgets_p99_ms.scalp", "scalp"),
    (lambda d: d["statistics"].update(min_psr="high"), "statistics.min_psr", "high"),
    (lambda d: d["statistics"].update(min_trades=10.5), "statistics.min_trades", "10.5"),
    (lambda d: d["statistics"].update(min_trades="10"), "statistics.min_trades", "10"),
    (lambda d: d["data"].update(require_hash_match="yes"), "data.require_hash_match", "yes"),
    (lambda d: d["capital"].update(max_drawdown_pct=-5.0), "capital.max_drawdown_pct", "-5.0"),
    (lambda d: d["capital"].update(risk_window="is"), "capital.risk_window", "is"),
    (lambda d: d["statistics"].update(pbo_splits=15), "statistics.pbo_splits", "15"),
    (lambda d: d["latency"].update(min_samples=999), "latency.min_samples", "999"),
    (lambda d: d["latency"]["budgets_p99_ms"].pop("swing"), "latency.budgets_p99_ms", "swing"),
    (lambda d: d["latency"]["budgets_p99_ms"].update(hft=0.0), "latency.budgets_p99_ms", "hft"),
    (lambda d: d["latency"].pop("budgets_p99_ms"), "latency.budgets_p99_ms", "required"),
    (lambda d: d.pop("cost_stress"), "cost_stress", "required"),
    (lambda d: d.update(schema_version=1), "schema_version", "1"),
    (lambda d: d.update(stage="prod"), "stage", "prod"),
    (lambda d: d["data"]["quality"].update(max_gap_bars=-1), "data.quality.max_gap_bars", "-1"),
    (lambda d: d["capital"].pop("target_vol_annual_pct"), "capital.target_vol_annual_pct", "required"),
    (lambda d: d["paper_record"].update(min_days="a month"), "paper_record.min_days", "a month"),
    (lambda d: d["paper_record"].update(execution_tolerance_bps=-1.0), "paper_record.execution_tolerance_bps",
     "-1.0"),
    (lambda d: d["paper_record"].update(execution_tolerance_bps=float("nan")), "paper_record.execution_tolerance_bps",
     "nan"),
])
def test_bad_policy_names_the_field(tmp_path: Path, edit, field: str, found: str) -> None:
    data = _default()
    edit(data)
    with pytest.raises(ConfigurationError) as info:
        load_policy(_write(tmp_path, data))
    assert info.value.field == field
    assert found in str(info.value)


def test_missing_file_bad_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"policy_path.*existing YAML file"):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("capital: [1, 2\n")
    with pytest.raises(ConfigurationError, match="valid YAML"):
        load_policy(bad)
    with pytest.raises(ConfigurationError, match="mapping"):
        load_policy(_write(tmp_path, [1, 2, 3]))


def test_policy_in_force_comes_from_the_environment_per_stage(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.gates.policy import POLICY_PATHS, policy_in_force_path

    for stage in ("paper", "live"):
        monkeypatch.delenv(f"TOOLKIT_POLICY_{stage.upper()}", raising=False)
        assert policy_in_force_path(stage) == POLICY_PATHS[stage]
        assert load_policy(stage=stage).stage == stage
    assert load_policy(None).sha256() == load_policy(DEFAULT_POLICY_PATH).sha256()  # live by default
    other = tmp_path / "p.yaml"
    other.write_text(POLICY_PATHS["paper"].read_text().replace("name: desk-paper", "name: desk-other"))
    monkeypatch.setenv("TOOLKIT_POLICY_PAPER", str(other))
    assert policy_in_force_path("paper") == other and load_policy(stage="paper").name == "desk-other"
    with pytest.raises(ConfigurationError) as wrong:  # a paper policy is not a live one
        load_policy(other, stage="live")
    assert wrong.value.field == "policy.stage" and "paper" in str(wrong.value)
    monkeypatch.setenv("TOOLKIT_POLICY_LIVE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigurationError) as e:
        load_policy(None)
    assert e.value.field == "TOOLKIT_POLICY_LIVE" and "missing.yaml" in str(e.value)
    with pytest.raises(ConfigurationError, match="stage"):
        policy_in_force_path("prod")


def test_shipped_stage_policies_differ_only_where_the_stages_do() -> None:
    from toolkit.gates.policy import POLICY_PATHS

    paper, live = (load_policy(POLICY_PATHS[s]).model_dump() for s in ("paper", "live"))
    diff = {k for k in live if paper[k] != live[k]}
    assert diff == {"name", "stage", "advisory", "statistics"}
    assert live["advisory"] == [] and "paper_record" in paper["advisory"]
    assert paper["statistics"]["min_psr"] < live["statistics"]["min_psr"]
    assert paper["capital"] == live["capital"]  # risk, capacity and sizing budgets hold on paper too


def test_every_threshold_line_carries_its_reason() -> None:
    from toolkit.gates.policy import POLICY_PATHS

    for path in POLICY_PATHS.values():
        for line in path.read_text().splitlines():
            body = line.split("#")[0].strip()
            if line.startswith(" ") and body and not body.endswith(":"):
                assert "#" in line and line.split("#", 1)[1].strip(), f"{path.name}: no reason on {line!r}"


@pytest.mark.parametrize(("section", "key", "value"), [
    ("statistics", "min_oos_sharpe", float("nan")), ("capital", "allocation_usdt", float("inf")),
    ("cost_stress", "min_sharpe", float("-inf")), ("robustness", "min_neighbour_ratio", float("nan")),
])
def test_nan_and_infinite_thresholds_are_refused(tmp_path: Path, section: str, key: str, value: float) -> None:
    data = _default()
    data[section][key] = value
    path = _write(tmp_path, data)
    assert f"{key}: {'.nan' if value != value else ('.inf' if value > 0 else '-.inf')}" in path.read_text()
    with pytest.raises(ConfigurationError) as e:
        load_policy(path)
    assert e.value.field == f"{section}.{key}"
    assert "finite" in str(e.value)
