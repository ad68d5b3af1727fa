"""Appendix A of hyperspherical-defense.txt ("illustration of why projection works"):
points x on the unit circle S^1, an adversarial shift delta, the shifted point projected
back onto the circle; the Euclidean error is ``||(x + delta) / ||x + delta|| - x||``
and the question is how often it stays at most ``||delta||`` (the error without the
projection).

Closed form (derived here, not in the paper): by rotation symmetry only ``d = ||delta||``
matters; with ``delta = (0, d)`` and ``x = (cos t, sin t)``, ``s = sin t``,

    error(t)^2 = 2 - 2 (1 + d s) / sqrt(1 + 2 d s + d^2),

and for ``0 <= d < 1`` the error exceeds ``d`` exactly when
``-d (3 - d^2) / 2 < s < -d / 2`` (squaring ``cos(angle) >= 1 - d^2 / 2`` gives a
quadratic in ``s`` with these roots), so for ``t`` uniform

    P(error <= d) = 1 - (asin(d (3 - d^2) / 2) - asin(d / 2)) / pi.

For d = 0.05 this is 0.98408; the paper reports 0.98 from one million sampled points.
"""
from __future__ import annotations

import math

import numpy as np

from advgeom.errors import AdvgeomError


def _check_d(d: float) -> float:
    d = float(d)
    if not 0.0 <= d < 1.0:
        raise AdvgeomError(f"the closed form needs a perturbation size 0 <= d < 1, got {d}")
    return d


def projection_errors(points: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``||(x + delta) / ||x + delta|| - x||`` per row ``x`` of ``points`` (N, p), the
    Euclidean error of projecting the shifted point back onto the unit sphere (Appendix A)."""
    x = np.asarray(points, dtype=np.float64)
    shift = np.asarray(delta, dtype=np.float64)
    if x.ndim != 2 or shift.shape != (x.shape[1],):
        raise AdvgeomError(f"points must be (N, p) and delta (p,), got {x.shape} and {shift.shape}")
    y = x + shift
    norm = np.linalg.norm(y, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise AdvgeomError("a shifted point lands on the origin: its projection is undefined")
    return np.linalg.norm(y / norm - x, axis=1)


def circle_error(t: np.ndarray, d: float) -> np.ndarray:
    """The closed-form error at angle ``t`` of ``x = (cos t, sin t)`` for ``delta = (0, d)``."""
    d = _check_d(d)
    s = np.sin(np.asarray(t, dtype=np.float64))
    inner = 2.0 - 2.0 * (1.0 + d * s) / np.sqrt(1.0 + 2.0 * d * s + d * d)
    return np.sqrt(np.clip(inner, 0.0, None))


def error_increase_band(d: float) -> tuple[float, float]:
    """The interval of ``sin t`` on which projection makes the error larger than ``d``:
    ``(-d (3 - d^2) / 2, -d / 2)``."""
    d = _check_d(d)
    return -d * (3.0 - d * d) / 2.0, -d / 2.0


def keep_probability(d: float) -> float:
    """P(error <= d) for ``x`` uniform on S^1 and a shift of size ``d`` (closed form)."""
    lo, hi = error_increase_band(d)
    return 1.0 - (math.asin(-lo) - math.asin(-hi)) / math.pi


def mean_error(d: float, nodes: int = 1 << 16) -> float:
    """E[error] for ``x`` uniform on S^1 (the periodic trapezoid rule on ``nodes`` angles,
    spectrally accurate for this smooth periodic integrand)."""
    t = 2.0 * math.pi * np.arange(nodes) / nodes
    return float(circle_error(t, d).mean())


def sample_circle(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points drawn uniformly on the unit circle (N, 2)."""
    if n < 1:
        raise AdvgeomError(f"need at least one point, got {n}")
    t = rng.uniform(0.0, 2.0 * math.pi, size=n)
    return np.stack([np.cos(t), np.sin(t)], axis=1)
