"""The concentric-spheres data (adversarial-spheres.txt Section 2): radii, labels,
seeds, the online sampler, and uniformity on the sphere (moments, exact marginal law,
rotation invariance)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from advgeom.data import load
from advgeom.data.spheres import (OnlineSphereData, SphereData, max_margin_predict,
                                  sample_sphere, sample_spheres)
from advgeom.errors import DataError


def test_fixed_split_radii_labels_and_balance():
    ds = load("spheres", "train", d=20, R=1.3, n=1001, seed=3)
    assert isinstance(ds, SphereData) and not hasattr(ds, "sample_batch")
    assert ds.images.shape == (1001, 20) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64 and set(ds.labels.tolist()) == {0, 1}
    assert int((ds.labels == 0).sum()) == 500
    norms = ds.images.norm(dim=1)
    expected = torch.where(ds.labels == 1, 1.3, 1.0)
    torch.testing.assert_close(norms, expected, rtol=0, atol=1e-5)
    assert float(ds.images.abs().max()) <= 1.3 + 1e-6 and float(ds.images.min()) < 0
    # both labels appear in the first half (shuffled, not sorted by label)
    assert 0 < int(ds.labels[:500].sum()) < 500


def test_seeds_and_splits():
    a = load("spheres", "train", d=10, n=50, seed=1)
    b = load("spheres", "train", d=10, n=50, seed=1)
    c = load("spheres", "test", d=10, n=50, seed=1)
    e = load("spheres", "train", d=10, n=50, seed=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.allclose(a.images, c.images)
    assert not torch.allclose(a.images, e.images)


def test_online_sampler_gives_fresh_balanced_batches():
    ds = load("spheres", "train", d=30, R=1.5, n=10, online=True)
    assert isinstance(ds, OnlineSphereData)
    g = torch.Generator().manual_seed(0)
    x1, y1 = ds.sample_batch(50, g)
    x2, y2 = ds.sample_batch(50, g)
    assert x1.shape == (50, 30) and y1.dtype == torch.int64
    assert int(y1.sum()) == 25 and int(y2.sum()) == 25
    assert not torch.allclose(x1, x2)
    torch.testing.assert_close(x1.norm(dim=1), torch.where(y1 == 1, 1.5, 1.0), rtol=0, atol=1e-5)
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(ds.sample_batch(8, g1)[0], ds.sample_batch(8, g2)[0])
    empty = load("spheres", "train", d=4, n=0)  # n = 0: online only
    assert len(empty) == 0 and empty.sample_batch(6, g)[0].shape == (6, 4)
    sub = ds.subset(5)
    assert len(sub) == 5 and hasattr(sub, "sample_batch") and sub.d == 30


@pytest.mark.parametrize("kwargs", [dict(d=0), dict(R=1.0), dict(R=0.5), dict(n=-1),
                                    dict(dtype="int8")])
def test_bad_arguments_are_data_errors(kwargs):
    with pytest.raises(DataError):
        load("spheres", "train", **kwargs)
    with pytest.raises(DataError, match="split"):
        load("spheres", "validation")


def test_uniform_moments():
    """E x = 0, E x x^T = I/d, E x_1^4 = 3/(d(d+2)) on the unit sphere."""
    d, n = 8, 200_000
    g = torch.Generator().manual_seed(0)
    x = sample_sphere(n, d, 1.0, generator=g, dtype=torch.float64)
    se = math.sqrt(1.0 / d / n)
    assert float(x.mean(0).abs().max()) < 5 * se
    cov = x.T @ x / n
    torch.testing.assert_close(cov, torch.eye(d, dtype=torch.float64) / d, rtol=0, atol=6 * se * 1.5)
    m4 = float((x[:, 0] ** 4).mean())
    assert abs(m4 - 3 / (d * (d + 2))) < 0.03 * 3 / (d * (d + 2))


def test_marginal_law_and_rotation_invariance():
    """x_1^2 ~ Beta(1/2, (d-1)/2) exactly, for raw coordinates and after a random
    rotation (a non-uniform sampler, e.g. normalized uniform cube points, fails this)."""
    d, n = 6, 40_000
    g = torch.Generator().manual_seed(0)
    x = sample_sphere(n, d, 1.0, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    cdf = stats.beta(0.5, (d - 1) / 2).cdf
    for pts in (x, x @ q.T):
        for j in (0, d - 1):
            assert stats.kstest(pts[:, j].numpy() ** 2, cdf).pvalue > 1e-4
    # the same statistic detects a non-uniform sampler
    cube = torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1
    cube = cube / cube.norm(dim=1, keepdim=True)
    assert stats.kstest(cube[:, 0].numpy() ** 2, cdf).pvalue < 1e-6
    # directions: the angle between two rotated samples' first coordinates is symmetric
    signs = np.sign((x @ q.T)[:, 0].numpy())
    assert abs(signs.mean()) < 4 / math.sqrt(n)


def test_sample_spheres_and_max_margin():
    g = torch.Generator().manual_seed(2)
    x, y = sample_spheres(101, 5, 1.3, generator=g)
    assert int((y == 0).sum()) == 50
    assert torch.equal(max_margin_predict(x, 1.3), y)
    r = torch.tensor([1.149, 1.151])
    pts = sample_sphere(2, 4, r, generator=g)
    assert max_margin_predict(pts, 1.3).tolist() == [0, 1]
