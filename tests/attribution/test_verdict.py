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
