"""MA cross: a hand-checked scenario table and parameter validation."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from toolkit.strategies import MACross, ParameterError, make_strategy

#           t:  0   1   2   3   4   5   6   7   8   9  10  11
CLOSES = [10, 11, 12, 13, 12, 11, 10, 11, 12, 13, 13, 13]
# fast = SMA2, slow = SMA3 (warm-up: the first slow - 1 = 2 bars are flat)
#  t2: fast 11.5 > slow 11.0       -> long
#  t3: 12.5 > 12.0                 -> long
#  t4: 12.5 > 12.33                -> long
#  t5: 11.5 < 12.0                 -> flat (short when allowed)
#  t6: 10.5 < 11.0                 -> flat/short
#  t7: 10.5 < 10.67                -> flat/short
#  t8: 11.5 > 11.0                 -> long
#  t9: 12.5 > 12.0                 -> long
# t10: 13.0 > 12.67                -> long
# t11: 13.0 = 13.0, not above      -> flat/short
LONG_ONLY = [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
WITH_SHORT = [0, 0, 1, 1, 1, -1, -1, -1, 1, 1, 1, -1]


@pytest.mark.parametrize(("allow_short", "expected"), [(False, LONG_ONLY), (True, WITH_SHORT)])
def test_scenario_table(frame: Callable[..., pd.DataFrame], allow_short: bool, expected: list[int]) -> None:
    strategy = make_strategy("ma_cross", {"fast": 2, "slow": 3, "allow_short": allow_short})
    bars = frame(CLOSES)
    assert strategy.positions(bars).tolist() == expected
    assert strategy.last_position(bars) == expected[-1]


def test_defaults_and_metadata() -> None:
    s = MACross()
    assert (s.params.fast, s.params.slow, s.params.allow_short) == (10, 50, False)
    assert s.warmup == 49 and s.strategy_type == "intraday"
    assert s.param_names() == ["fast", "slow", "allow_short"]


@pytest.mark.parametrize(("params", "field", "text"), [
    ({"fsat": 5}, "ma_cross.fsat", "one of the parameters fast, slow, allow_short"),
    ({"fast": 1}, "ma_cross.fast", "greater than or equal to 2"),
    ({"slow": 6000}, "ma_cross.slow", "less than or equal to 5000"),
    ({"fast": "ten"}, "ma_cross.fast", "valid integer"),
    ({"fast": 2.5}, "ma_cross.fast", "valid integer"),
    ({"allow_short": "maybe"}, "ma_cross.allow_short", "valid boolean"),
])
def test_bad_parameters_name_the_field(params: dict, field: str, text: str) -> None:
    with pytest.raises(ParameterError, match=text) as info:
        make_strategy("ma_cross", params)
    assert info.value.field == field
    assert str(info.value).startswith(field)


@pytest.mark.parametrize(("fast", "slow"), [(20, 20), (30, 20)])
def test_fast_must_be_below_slow(fast: int, slow: int) -> None:
    text = f"fast \\({fast}\\) must be less than slow \\({slow}\\)"
    with pytest.raises(ParameterError, match=text) as info:
        MACross(fast=fast, slow=slow)
    assert info.value.field.startswith("ma_cross")


def test_unknown_strategy_name() -> None:
    text = "strategy: expected one of \\['bollinger', 'donchian', 'ma_cross'\\]"
    with pytest.raises(ParameterError, match=text):
        make_strategy("macd")
