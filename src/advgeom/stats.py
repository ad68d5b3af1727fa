"""Confidence intervals for accuracies measured on n points (DESIGN.md "Profiles and
provenance": every accuracy is shown with its n and a 95% Wilson interval).

Wilson (1927), "Probable inference, the law of succession, and statistical inference":
the interval of a binomial proportion that stays inside [0, 1] and keeps close to its
nominal coverage at small n and at proportions near 0 or 1, where robust accuracies live.
"""
from __future__ import annotations

import math
from statistics import NormalDist

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
