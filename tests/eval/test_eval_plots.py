"""advgeom.results.plots: PNGs from rows and arrays."""
import math

import pytest

from advgeom.errors import AdvgeomError
from advgeom.results import Row
from advgeom.results.plots import (accuracy_curves, min_norm_curve, plot_accuracy_vs_eps, plot_curves,
                                   plot_min_norm_histogram)


def _rows():
    mk = lambda attack, eps, v, metric="robust_accuracy": Row("e", "m", "none", attack, eps, 0, metric, v,  # noqa: E731
                                                              norm="linf")
    return [mk("none", 0.0, 95.0, "clean_accuracy"), mk("pgd", 0.1, 60.0), mk("pgd", 0.2, 30.0),
            mk("fgsm", 0.1, 70.0), mk("fgsm", 0.2, 50.0), mk("worst_case", 0.1, 55.0),
            mk("worst_case", 0.2, 25.0)]


def _is_png(p):
    return p.exists() and p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG"


def test_accuracy_curves_include_clean_point():
    curves = accuracy_curves(_rows())
    assert curves["pgd"] == ([0.0, 0.1, 0.2], [95.0, 60.0, 30.0])
    assert set(curves) == {"pgd", "fgsm", "worst_case"}


def test_plot_accuracy_vs_eps(tmp_path):
    assert _is_png(plot_accuracy_vs_eps(_rows(), tmp_path / "sub" / "acc.png"))
    with pytest.raises(AdvgeomError, match="png"):
        plot_accuracy_vs_eps(_rows(), tmp_path / "acc.pdf")
    with pytest.raises(AdvgeomError, match="no 'robust_accuracy' rows"):
        plot_accuracy_vs_eps(_rows()[:1], tmp_path / "x.png")


def test_histogram_and_curves(tmp_path):
    d = [0.0, 0.1, 0.2, 0.3, math.inf]
    assert _is_png(plot_min_norm_histogram({"l2": d, "linf": [0.0, 0.01, 0.02, 0.03, math.inf]},
                                           tmp_path / "h.png"))
    assert min_norm_curve(d, [0.0, 0.15, 0.5]) == [80.0, 60.0, 20.0]
    assert _is_png(plot_curves([0.0, 0.15, 0.5], {"deepfool": [80.0, 60.0, 20.0]}, tmp_path / "c.png"))
    with pytest.raises(AdvgeomError, match="points"):
        plot_curves([0.0, 0.1], {"a": [1.0]}, tmp_path / "c.png")
