"""Donchian breakout: hand-checked scenario tables and parameter validation."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from toolkit.strategies import Donchian, ParameterError, make_strategy

#          t:   0   1   2   3   4   5   6   7   8   9  10  11
CLOSES = [10, 10, 10, 12, 13, 12, 11, 9, 10, 10, 13, 12]
# high = close + 1, low = close - 1; window = 3, exit_window = 2.
# upper(t) = max high of t-3..t-1; exit_low(t) = min low of t-2..t-1 (previous bars only).
# t0-t2: warm-up (window = 3 bars)                              -> 0
#  t3: close 12 > upper 11                      -> enter long    -> 1
#  t4: close 13 > upper 13? no; 13 < exit_low 9? no              -> hold 1
#  t5: 12 vs upper 14, exit_low 11                               -> hold 1
#  t6: 11 < exit_low 11? no (not strictly below)                 -> hold 1
#  t7: 9 < exit_low 10                          -> exit          -> 0
#  t8: 10 vs upper 13                                            -> 0
#  t9: 10 vs upper 12                                            -> 0
# t10: 13 > upper 11                            -> enter long    -> 1
# t11: 12 vs upper 14, exit_low 9                               -> hold 1
LONG_ONLY = [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 1, 1]
# With shorts: lower(t) = min low of t-3..t-1; exit_high(t) = max high of t-2..t-1.
#  t7: 9 < lower 10                             -> short (also closes the long) -> -1
#  t8: 10 > exit_high 12? no; 10 < lower 8? no                   -> hold -1
#  t9: 10 > exit_high 11? no                                     -> hold -1
# t10: 13 > exit_high 11 closes the short, 13 > upper 11 opens a long -> 1
WITH_SHORT = [0, 0, 0, 1, 1, 1, 1, -1, -1, -1, 1, 1]


@pytest.mark.parametrize(("allow_short", "expected"), [(False, LONG_ONLY), (True, WITH_SHORT)])
def test_scenario_table(frame: Callable[..., pd.DataFrame], allow_short: bool, expected: list[int]) -> None:
    strategy = make_strategy("donchian", {"window": 3, "exit_window": 2, "allow_short": allow_short})
    bars = frame(CLOSES)
    assert strategy.positions(bars).tolist() == expected
    assert strategy.last_position(bars) == expected[-1]


def test_channel_uses_highs_and_lows_not_closes(frame: Callable[..., pd.DataFrame]) -> None:
    # closes rise 10 -> 11 but a wick at t1 (high 20) keeps the channel above them: no breakout
    bars = frame([10, 10, 10, 10, 11], high=[10.5, 20, 10.5, 10.5, 11.5])
    assert Donchian(window=3, exit_window=1).positions(bars).tolist() == [0, 0, 0, 0, 0]
    bars = frame([10, 10, 10, 10, 11], high=[10.5, 10.5, 10.5, 10.5, 11.5])
    assert Donchian(window=3, exit_window=1).positions(bars).tolist() == [0, 0, 0, 0, 1]


@pytest.mark.parametrize(("params", "field", "text"), [
    ({"windw": 5}, "donchian.windw", "one of the parameters window, exit_window, allow_short"),
    ({"window": 1}, "donchian.window", "greater than or equal to 2"),
    ({"exit_window": 0}, "donchian.exit_window", "greater than or equal to 1"),
    ({"window": "x"}, "donchian.window", "valid integer"),
])
def test_bad_parameters_name_the_field(params: dict, field: str, text: str) -> None:
    with pytest.raises(ParameterError, match=text) as info:
        make_strategy("donchian", params)
    assert info.value.field == field


def test_exit_window_may_not_exceed_window() -> None:
    with pytest.raises(ParameterError, match="exit_window \\(30\\) must not exceed window \\(20\\)") as info:
        Donchian(window=20, exit_window=30)
    assert info.value.field.startswith("donchian")
    assert Donchian(window=20, exit_window=20).warmup == 20
