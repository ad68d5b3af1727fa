"""Appendix A of hyperspherical-defense.txt: the error after projecting a shifted point of
S^1 back onto S^1, sampled against its closed form."""
import math

import numpy as np
import pytest

from advgeom.analysis import sphere_projection as SP
from advgeom.errors import AdvgeomError


def test_projection_errors_by_hand():
    pts = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    e = SP.projection_errors(pts, np.array([0.0, 0.05]))
    # radial shifts project straight back: no error; a tangent shift of 0.05 at (1, 0)
    assert e[1] == pytest.approx(0.0, abs=1e-15) and e[2] == pytest.approx(0.0, abs=1e-15)
    phi = math.atan(0.05)
    assert e[0] == pytest.approx(2 * math.sin(phi / 2), rel=1e-12)
    with pytest.raises(AdvgeomError):
        SP.projection_errors(np.array([[0.0, -1.0]]), np.array([0.0, 1.0]))   # lands on the origin


@pytest.mark.parametrize("d", [0.05, 0.3, 0.9])
def test_closed_form_error_matches_the_geometry(d):
    t = np.linspace(0, 2 * math.pi, 1001)
    pts = np.stack([np.cos(t), np.sin(t)], 1)
    assert np.allclose(SP.circle_error(t, d), SP.projection_errors(pts, np.array([0.0, d])), atol=1e-7)
    # the error equals d exactly at the band's two ends
    for s in SP.error_increase_band(d):
        assert SP.circle_error(np.array([math.asin(s)]), d)[0] == pytest.approx(d, rel=1e-9)
    lo, hi = SP.error_increase_band(d)
    inside = (np.sin(t) > lo) & (np.sin(t) < hi)
    e = SP.circle_error(t, d)
    assert np.all(e[inside] > d) and np.all(e[~inside] <= d + 1e-12)


def test_keep_probability_closed_form_and_sampling():
    d = 0.05
    p = SP.keep_probability(d)
    assert p == pytest.approx(1 - (math.asin(0.0749375) - math.asin(0.025)) / math.pi, rel=1e-12)
    assert round(p, 2) == 0.98 and p == pytest.approx(0.98408, abs=1e-5)   # the paper's 0.98
    n = 1_000_000
    e = SP.projection_errors(SP.sample_circle(n, np.random.default_rng(0)), np.array([0.0, d]))
    sd = math.sqrt(p * (1 - p) / n)
    assert abs((e <= d).mean() - p) < 4 * sd
    assert e.mean() == pytest.approx(SP.mean_error(d), abs=4 * e.std() / math.sqrt(n))
    # rotating the shift changes nothing (only its size matters)
    e_rot = SP.projection_errors(SP.sample_circle(n, np.random.default_rng(0)), np.array([d, 0.0]))
    assert abs((e_rot <= d).mean() - p) < 4 * sd
    assert SP.keep_probability(0.0) == 1.0
    with pytest.raises(AdvgeomError):
        SP.keep_probability(1.0)
