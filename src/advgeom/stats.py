"""Confidence intervals for accuracies measured on n points (docs/design.md "Profiles and
provenance": every accuracy is shown with its n and a 95% Wilson interval).

Wilson (1927), "Probable inference, the law of succession, and statistical inference":
the interval of a binomial proportion that stays inside [0, 1] and keeps close to its
nominal coverage at small n and at proportions near 0 or 1, where robust accuracies live.
Differences: of two accuracies on the same points, Newcombe's paired interval built from
the two Wilson intervals; of two means with standard errors, the normal interval; and the
verdict "which of two differences is the closer to zero" judged on their intervals.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

from advgeom.errors import AdvgeomError


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of ``successes / n``, as fractions."""
    if isinstance(successes, bool) or isinstance(n, bool) or int(successes) != successes or int(n) != n:
        raise AdvgeomError(f"wilson_interval needs integer counts, got {successes!r} of {n!r}")
    if n <= 0 or not 0 <= successes <= n:
        raise AdvgeomError(f"wilson_interval needs 0 <= successes <= n and n > 0, got {successes} of {n}")
    if not 0 < confidence < 1:
        raise AdvgeomError(f"confidence must be in (0, 1), got {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p, z2 = successes / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low, high = max(0.0, centre - half), min(1.0, centre + half)
    if successes == 0:
        low = 0.0
    if successes == n:
        high = 1.0
    return low, high


def interval_text(percent: float | None, n: int, sep: str = ", ") -> str:
    """``"[86.1, 90.0]"``: the 95% Wilson interval of an accuracy in percent on ``n`` points,
    or ``""`` when there is none to give (no value, no n, or not a count of points)."""
    if percent is None or not n or n <= 0:
        return ""
    try:
        low, high = percent_interval(float(percent), int(n))
    except AdvgeomError:
        return ""
    return f"[{low:.1f}{sep}{high:.1f}]"


def percent_interval(percent: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson interval, in percent, of an accuracy given in percent on ``n`` points. The
    count is recovered by rounding ``percent * n / 100``: exact for a stored accuracy, and
    for one printed with two decimals (within 0.005 points of a count) as reports print it."""
    if n <= 0:
        raise AdvgeomError(f"an interval needs n > 0 points, got {n}")
    count = round(percent * n / 100.0)
    if abs(count - percent * n / 100.0) > 0.005 * n / 100.0 + 1e-9:
        raise AdvgeomError(f"{percent}% of {n} points is not a whole number of points")
    low, high = wilson_interval(int(count), int(n), confidence)
    return 100.0 * low, 100.0 * high


# ---------------------------------------------------------------------------
# differences


def paired_difference_interval(first: Sequence[bool], second: Sequence[bool],
                               confidence: float = 0.95) -> tuple[float, float, float]:
    """``(d, low, high)``: the difference ``d = p1 - p2`` of two accuracies measured on the
    same points (``first[i]`` and ``second[i]`` are the outcomes of point i) and its interval,
    as fractions. Newcombe (1998), "Improved confidence intervals for the difference between
    binomial proportions based on paired data", Statistics in Medicine 17:2635-2650, method
    10: the two Wilson intervals combined through the correlation of the paired outcomes
    (its phi, set to 0 where the table's cross-product difference lies in [0, n/2])."""
    a_, b_ = [bool(v) for v in first], [bool(v) for v in second]
    if len(a_) != len(b_) or not a_:
        raise AdvgeomError(f"a paired interval needs two outcome lists of one nonzero length, got "
                           f"{len(a_)} and {len(b_)}")
    n = len(a_)
    both = sum(1 for u, v in zip(a_, b_) if u and v)
    only1 = sum(1 for u, v in zip(a_, b_) if u and not v)
    only2 = sum(1 for u, v in zip(a_, b_) if v and not u)
    neither = n - both - only1 - only2
    p1, p2 = (both + only1) / n, (both + only2) / n
    l1, u1 = wilson_interval(both + only1, n, confidence)
    l2, u2 = wilson_interval(both + only2, n, confidence)
    margins = (both + only1) * (only2 + neither) * (both + only2) * (only1 + neither)
    cross = both * neither - only1 * only2
    adjusted = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = adjusted / math.sqrt(margins) if margins > 0 else 0.0
    d = p1 - p2
    low = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    high = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return d, max(-1.0, low), min(1.0, high)


def mean_difference_interval(mean1: float, se1: float, mean2: float, se2: float,
                             confidence: float = 0.95) -> tuple[float, float, float]:
    """``(d, low, high)``: ``d = mean1 - mean2`` of two means given with their standard
    errors, and the normal interval ``d -+ z sqrt(se1^2 + se2^2)``. It ignores any pairing of
    the samples: wider than a paired interval when the two are positively correlated."""
    if se1 < 0 or se2 < 0 or not 0 < confidence < 1:
        raise AdvgeomError(f"standard errors must be >= 0 and confidence in (0, 1), got {se1}, {se2}, "
                           f"{confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    d, half = mean1 - mean2, z * math.sqrt(se1 * se1 + se2 * se2)
    return d, d - half, d + half


def closer_verdict(first: tuple[float, float, float], second: tuple[float, float, float]) -> str:
    """Whether the first of two differences from one reference (``(d, low, high)`` each, as
    the functions above give them) is the closer to zero, judged on the intervals: "first"
    when every value of the first interval is nearer zero than every value of the second,
    "second" the other way round, otherwise "unresolved"."""
    def far(t: tuple[float, float, float]) -> float:
        return max(abs(t[1]), abs(t[2]))

    def near(t: tuple[float, float, float]) -> float:
        return 0.0 if t[1] <= 0.0 <= t[2] else min(abs(t[1]), abs(t[2]))

    if far(first) < near(second):
        return "first"
    if far(second) < near(first):
        return "second"
    return "unresolved"
