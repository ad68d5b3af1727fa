"""The Wilson interval against SciPy's (binomtest(...).proportion_ci(method="wilson")); the
interval of a paired difference against published values and its coverage; the verdict on two."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from advgeom.errors import AdvgeomError
from advgeom.stats import (closer_verdict, mean_difference_interval, paired_difference_interval,
                           percent_interval, wilson_interval)

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


# ---------------------------------------------------------------------------
# differences


def _paired(both: int, only1: int, only2: int, neither: int) -> tuple[list[bool], list[bool]]:
    first = [True] * both + [True] * only1 + [False] * only2 + [False] * neither
    second = [True] * both + [False] * only1 + [True] * only2 + [False] * neither
    return first, second


@pytest.mark.parametrize("table,published", [
    # ad - bc in [0, n/2]: phi is 0 and the paired interval is Newcombe's independent hybrid
    # score interval, whose values for 9/10 - 3/10 and 56/70 - 48/80 are published in Newcombe
    # (1998), "Interval estimation for the difference between independent proportions", Table II
    # (the second with n 70 vs 80 has no paired table: only the first is used)
    ((3, 6, 0, 1), (0.1705, 0.8090)),
])
def test_paired_interval_reduces_to_the_published_independent_one(table, published) -> None:
    d, low, high = paired_difference_interval(*_paired(*table))
    assert d == pytest.approx(0.6)
    assert (low, high) == pytest.approx(published, abs=1e-4)


def test_paired_interval_is_antisymmetric_and_holds_its_estimate() -> None:
    for table in [(14, 5, 0, 22), (500, 40, 10, 450), (0, 0, 0, 7), (7, 0, 0, 0), (880, 3, 61, 56)]:
        a, b = _paired(*table)
        d, low, high = paired_difference_interval(a, b)
        d2, low2, high2 = paired_difference_interval(b, a)
        assert d == pytest.approx(-d2) and low == pytest.approx(-high2) and high == pytest.approx(-low2)
        assert -1.0 <= low <= d <= high <= 1.0
    # no discordant pair but a small n: the interval still has width (unlike the Wald one)
    _, low, high = paired_difference_interval(*_paired(3, 0, 0, 4))
    assert low < 0.0 < high


def test_paired_interval_covers_at_its_level() -> None:
    """Monte Carlo: 1,500 paired samples of n 200 from a correlated joint distribution
    (the shape of two robust accuracies on the same points); the 95% interval must cover
    the true difference 93-97% of the time."""
    rng = np.random.default_rng(0)
    probs = np.array([0.55, 0.12, 0.05, 0.28])          # both, only first, only second, neither
    truth = (probs[0] + probs[1]) - (probs[0] + probs[2])
    covered = 0
    for _ in range(1500):
        counts = rng.multinomial(200, probs)
        _, low, high = paired_difference_interval(*_paired(*(int(c) for c in counts)))
        covered += low <= truth <= high
    assert 0.93 <= covered / 1500 <= 0.97


def test_paired_interval_refuses_unequal_or_empty_outcomes() -> None:
    with pytest.raises(AdvgeomError, match="one nonzero length"):
        paired_difference_interval([True], [True, False])
    with pytest.raises(AdvgeomError, match="one nonzero length"):
        paired_difference_interval([], [])


def test_mean_difference_interval_is_the_normal_one() -> None:
    d, low, high = mean_difference_interval(2.0, 0.3, 1.5, 0.4)
    assert d == pytest.approx(0.5)
    assert (low, high) == pytest.approx((0.5 - norm.ppf(0.975) * 0.5, 0.5 + norm.ppf(0.975) * 0.5))
    with pytest.raises(AdvgeomError):
        mean_difference_interval(1.0, -0.1, 1.0, 0.1)


@pytest.mark.parametrize("first,second,verdict", [
    ((-0.02, -0.05, 0.01), (-0.30, -0.34, -0.26), "first"),     # AT-like vs global-like gaps
    ((-0.30, -0.34, -0.26), (-0.02, -0.05, 0.01), "second"),
    ((-0.10, -0.20, 0.00), (-0.15, -0.25, -0.05), "unresolved"),  # the intervals overlap in size
    ((0.05, 0.01, 0.09), (-0.20, -0.25, -0.15), "first"),        # sizes, whatever the signs
])
def test_closer_verdict_judges_on_the_intervals(first, second, verdict) -> None:
    assert closer_verdict(first, second) == verdict
