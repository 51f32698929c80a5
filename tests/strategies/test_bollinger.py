"""Bollinger mean reversion: hand-checked scenario tables and parameter validation."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from toolkit.strategies import Bollinger, ParameterError, make_strategy

#          t:   0   1   2  3  4   5   6   7   8   9  10  11
CLOSES = [10, 10, 10, 7, 8, 10, 11, 14, 13, 11, 10, 10]
# window = 3, k = 1; z = (close - mean3) / std3 (population std). With 3 bars |z| <= sqrt(2).
# t0-t1: warm-up (window - 1 = 2 bars)                                 -> 0
#  t2: (10, 10, 10): std 0, no z                                        -> 0
#  t3: (10, 10, 7):  z = -2 / 1.414 = -1.41 < -1   -> long              -> 1
#  t4: (10, 7, 8):   z = -0.33 / 1.25 = -0.27: no exit (z < 0)          -> hold 1
#  t5: (7, 8, 10):   z = +1.34 >= 0 exits the long; > +1 opens a short  -> 0 long-only, -1 with shorts
#  t6: (8, 10, 11):  z = +1.07 > 1                                      -> 0 / -1
#  t7: (10, 11, 14): z = +1.37 > 1                                      -> 0 / -1
#  t8: (11, 14, 13): z = +0.27: no event                                -> 0 / hold -1
#  t9: (14, 13, 11): z = -1.34 <= 0 exits the short; < -1 goes long     -> 1
# t10: (13, 11, 10): z = -1.07 < -1                                     -> 1
# t11: (11, 10, 10): z = -0.33 / 0.47 = -0.71: no event                 -> hold 1
LONG_ONLY = [0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1]
WITH_SHORT = [0, 0, 0, 1, 1, -1, -1, -1, -1, 1, 1, 1]


@pytest.mark.parametrize(("allow_short", "expected"), [(False, LONG_ONLY), (True, WITH_SHORT)])
def test_scenario_table(frame: Callable[..., pd.DataFrame], allow_short: bool, expected: list[int]) -> None:
    strategy = make_strategy("bollinger", {"window": 3, "k": 1.0, "allow_short": allow_short})
    bars = frame(CLOSES)
    assert strategy.positions(bars).tolist() == expected
    assert strategy.last_position(bars) == expected[-1]


def test_wider_band_never_enters(frame: Callable[..., pd.DataFrame]) -> None:
    # with 3 bars |z| can never exceed sqrt(2): k = 1.5 means no trade at all
    assert Bollinger(window=3, k=1.5).positions(frame(CLOSES)).tolist() == [0] * 12


@pytest.mark.parametrize(("params", "field", "text"), [
    ({"K": 2.0}, "bollinger.K", "one of the parameters window, k, allow_short"),
    ({"window": 1}, "bollinger.window", "greater than or equal to 2"),
    ({"k": 0}, "bollinger.k", "greater than 0"),
    ({"k": 11}, "bollinger.k", "less than or equal to 10"),
    ({"k": "wide"}, "bollinger.k", "valid number"),
])
def test_bad_parameters_name_the_field(params: dict, field: str, text: str) -> None:
    with pytest.raises(ParameterError, match=text) as info:
        make_strategy("bollinger", params)
    assert info.value.field == field
