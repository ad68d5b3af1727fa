"""2-D slices and accuracy-vs-norm (adversarial-spheres.txt Figures 1 and 2) on
models whose decision regions are known exactly."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from advgeom.analysis.slices import (accuracy_vs_norm, adversarial_errors_vs_norm,  # noqa: E402
                                     circle_errors, orthonormal_pair, plot_slice, slice_logits)
from advgeom.errors import AdvgeomError  # noqa: E402
from advgeom.models.spheres import MaxMarginSphere, QuadraticNet  # noqa: E402


def test_orthonormal_pair():
    g = torch.Generator().manual_seed(0)
    u, v = torch.randn(9, generator=g), torch.randn(9, generator=g)
    e1, e2 = orthonormal_pair(u, v)
    assert abs(float(e1 @ e2)) < 1e-6 and abs(float(e1.norm()) - 1) < 1e-6 and abs(float(e2.norm()) - 1) < 1e-6
    with pytest.raises(AdvgeomError, match="parallel"):
        orthonormal_pair(u, 2 * u)


def test_slice_of_max_margin_is_a_disk(tmp_path):
    e1, e2 = orthonormal_pair(torch.eye(6)[0] + 0.3 * torch.eye(6)[2], torch.eye(6)[4])
    sl = slice_logits(MaxMarginSphere(1.3), e1, e2, extent=2.0, resolution=81)
    aa, bb = np.meshgrid(sl.coords, sl.coords)
    inside = np.hypot(aa, bb) <= 1.15
    assert ((sl.logits <= 0) == inside).mean() > 0.995
    fig, ax = plt.subplots()
    plot_slice(ax, sl, 1.3, title="max margin")
    fig.savefig(tmp_path / "s.png")
    plt.close(fig)
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_slice_of_quadratic_follows_the_ellipse():
    m = QuadraticNet(3, 3, w=1.0, b=-1.0)
    with torch.no_grad():
        m.W1.copy_(torch.diag(torch.tensor([0.5, 2.0, 1.0]).sqrt()))
    e1, e2 = torch.eye(3)[0], torch.eye(3)[1]
    sl = slice_logits(m.eval(), e1, e2, extent=2.0, resolution=101)
    aa, bb = np.meshgrid(sl.coords, sl.coords)
    exact = 0.5 * aa ** 2 + 2.0 * bb ** 2 - 1
    agree = (sl.logits > 0) == (exact > 0)
    assert agree.mean() > 0.99


def test_accuracy_vs_norm_and_adversarial_errors():
    mm = MaxMarginSphere(1.3)
    norms = [0.6, 1.0, 1.3, 2.0]
    acc = accuracy_vs_norm(mm, 12, norms, n=500, generator=torch.Generator().manual_seed(0))
    assert acc == [1.0, 1.0, 1.0, 1.0]
    assert adversarial_errors_vs_norm(mm, 12, norms, n=4, steps=20) == [False] * 4
    # an ellipsoid with alpha_1 = 1.5 errs on spheres of norm in (1/sqrt(1.5), 1.15]
    d = 12
    m = QuadraticNet(d, d, w=1.0, b=-1.0)
    diag = torch.full((d,), 0.7)
    diag[0] = 1.5
    with torch.no_grad():
        m.W1.copy_(torch.diag(diag.sqrt()))
    found = adversarial_errors_vs_norm(m.eval(), d, [0.7, 0.9, 1.1, 1.4], n=4, steps=200,
                                       generator=torch.Generator().manual_seed(1))
    # 0.7 < 1/sqrt(1.5) = 0.816: no error; 0.9, 1.1: inner errors; 1.4 > 1/sqrt(0.7)=1.195: none
    assert found == [False, True, True, False]


def test_circle_errors_d2():
    assert circle_errors(MaxMarginSphere(1.3), 1.3, points=1000) == (0, 0)
    m = QuadraticNet(2, 2, w=1.0, b=-1.0)
    with torch.no_grad():
        m.W1.copy_(torch.diag(torch.tensor([1.2, 0.8]).sqrt()))
    e_in, e_out = circle_errors(m.eval(), 1.3, points=1000)
    assert 0 < e_in < 1000 and e_out == 0
