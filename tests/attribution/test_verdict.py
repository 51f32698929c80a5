"""The edge-vs-execution verdict on synthetic records: decay found, intact left alone, execution judged apart."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from toolkit.attribution.synthetic import synthetic_inputs
from toolkit.attribution.verdict import (
    EDGE_DECAYING,
    EDGE_INTACT,
    EXECUTION_WORSE,
    NOT_ENOUGH,
    RecordInputs,
    evaluate_record,
)

REPS = 20


def _labels(seed: int, **kw: object) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(REPS):
        inputs = dataclasses.replace(synthetic_inputs(rng, **kw), bootstrap_samples=200)  # type: ignore[arg-type]
        out.append(evaluate_record(inputs).verdict)
    return out


def test_an_edge_removed_mid_period_is_called_decaying() -> None:
    decayed = _labels(1, live_days=400, decay_at=0.5)
    intact = _labels(2, live_days=400)
    assert decayed.count(EDGE_DECAYING) >= REPS // 2
    assert intact.count(EDGE_DECAYING) <= REPS // 5 and intact.count(EDGE_INTACT) >= REPS // 2


def test_a_short_record_is_not_enough_and_says_how_many_more_days() -> None:
    v = evaluate_record(synthetic_inputs(np.random.default_rng(3), live_days=20))
    assert v.verdict == NOT_ENOUGH
    assert v.more_days == pytest.approx(v.required_days - 20) and v.required_days >= 30
    assert v.mintrl_days is not None and v.required_days > v.mintrl_days  # powered length is longer than MinTRL


@pytest.mark.parametrize("excess, expected", [(6.0, EXECUTION_WORSE), (0.5, NOT_ENOUGH)])
def test_execution_is_judged_against_the_fill_model_with_a_tolerance(excess: float, expected: str) -> None:
    v = evaluate_record(synthetic_inputs(np.random.default_rng(4), live_days=60, excess_bps=excess,
                                         orders_per_day=1.0))
    assert v.verdict == expected
    assert v.mean_excess_cost_bps == pytest.approx(excess, abs=1.5)


def test_the_verdict_is_a_pure_function_of_its_inputs() -> None:
    inputs = synthetic_inputs(np.random.default_rng(5), live_days=90)
    again = RecordInputs.from_dict(inputs.to_dict())
    assert evaluate_record(inputs).to_dict() == evaluate_record(again).to_dict()


def test_the_execution_tolerance_decides_the_execution_verdict_and_is_kept_with_it() -> None:
    from toolkit.attribution.record import paper_record_block, rederive_paper_record

    inputs = synthetic_inputs(np.random.default_rng(4), live_days=60, excess_bps=6.0, orders_per_day=1.0)
    assert evaluate_record(inputs).verdict == EXECUTION_WORSE  # 6 bps over the model against the default 2
    loose = dataclasses.replace(inputs, tolerance_bps=10.0)
    v = evaluate_record(loose)
    assert v.verdict != EXECUTION_WORSE and v.tolerance_bps == 10.0 and v.execution_p is not None
    assert v.execution_p > 0.5  # 6 bps is well inside a 10 bps tolerance
    block = paper_record_block(loose, model="m", version="1", journal_sha256="j", bundle_sha256="b",
                               period=("2024-01-01", "2024-03-01"))
    assert block["inputs"]["tolerance_bps"] == 10.0 and rederive_paper_record(block) == block  # re-derivable


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), 1_000.5, "2", True, None])
def test_a_bad_tolerance_is_named(value: object) -> None:
    from toolkit.attribution.verdict import validate_tolerance_bps
    from toolkit.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as err:
        validate_tolerance_bps(value)
    assert err.value.field == "execution_tolerance_bps" and "[0, 1000]" in err.value.expected
    assert err.value.found is value


def test_the_policy_holds_the_tolerance_and_the_gate_accepts_only_its_own() -> None:
    from types import SimpleNamespace

    from toolkit.attribution.record import paper_record_block
    from toolkit.attribution.verdict import EXECUTION_TOLERANCE_BPS, MAX_TOLERANCE_BPS
    from toolkit.gates import load_policy
    from toolkit.gates.checks import paper_record
    from toolkit.gates.policy import PaperRecordPolicy

    field = PaperRecordPolicy.model_fields["execution_tolerance_bps"]
    assert field.default == EXECUTION_TOLERANCE_BPS
    assert [m.le for m in field.metadata if hasattr(m, "le")] == [MAX_TOLERANCE_BPS]
    policy = load_policy(stage="live")
    assert policy.paper_record.execution_tolerance_bps == 2.0  # written in the YAML, not only defaulted
    base = synthetic_inputs(np.random.default_rng(7), live_days=60)
    base = dataclasses.replace(base, alpha=policy.paper_record.min_consistency_p,
                               min_days=float(policy.paper_record.min_days))
    for tolerance, flagged in ((2.0, False), (10.0, True)):
        block = paper_record_block(dataclasses.replace(base, tolerance_bps=tolerance), model="m", version="1",
                                   journal_sha256="j", bundle_sha256="b", period=("a", "b"))
        g = paper_record(SimpleNamespace(extras={"paper_record": block}, bundle_sha="b"), policy)  # type: ignore[arg-type]
        assert ("execution tolerance 10.0 bps" in g.explanation) is flagged
        assert g.threshold["execution_tolerance_bps"] == 2.0
        if flagged:
            assert not g.passed
