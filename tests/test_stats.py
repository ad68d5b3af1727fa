"""The Wilson interval against SciPy's (binomtest(...).proportion_ci(method="wilson"))."""
from __future__ import annotations

import pytest
from scipy.stats import binomtest

from advgeom.errors import AdvgeomError
from advgeom.stats import percent_interval, wilson_interval

CASES = [(0, 1), (1, 1), (0, 10), (10, 10), (3, 10), (880, 1000), (924, 1000), (1, 200),
         (199, 200), (500, 1000), (9990, 10000), (17, 50)]


@pytest.mark.parametrize("k,n", CASES)
@pytest.mark.parametrize("confidence", [0.95, 0.99, 0.8])
def test_wilson_matches_scipy(k: int, n: int, confidence: float) -> None:
    ref = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_percent_interval_recovers_the_count() -> None:
    low, high = percent_interval(88.0, 1000)
    ref = binomtest(880, 1000).proportion_ci(method="wilson")
    assert (low, high) == pytest.approx((100 * ref.low, 100 * ref.high), abs=1e-10)
    assert percent_interval(100.0 * 2 / 3, 3)[1] == pytest.approx(100 * binomtest(2, 3).proportion_ci(
        method="wilson").high)


@pytest.mark.parametrize("args", [(5, 4), (-1, 4), (1, 0), (1.5, 4), (True, 4)])
def test_bad_counts_are_refused(args) -> None:
    with pytest.raises(AdvgeomError):
        wilson_interval(*args)


def test_a_percent_that_is_no_count_is_refused() -> None:
    with pytest.raises(AdvgeomError, match="whole number"):
        percent_interval(50.5, 3)
