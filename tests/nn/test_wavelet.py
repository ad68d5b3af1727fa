"""Sparsifying wavelet front end (sparsification-robustness.txt): exact operators, top-K,
identity on K-sparse inputs, exact and BPDA gradients."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt
import torch

from advgeom.errors import AdvgeomError, ConfigError
from advgeom.nn.wavelet import SparsifyingFrontEnd, WaveletTransform2d, dwt_matrices, num_kept

WAVELETS = ["bior4.4", "db4", "haar", "coif1"]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("wavelet", WAVELETS)
@pytest.mark.parametrize("level", [1, 2])
def test_analysis_matches_pywt_and_synthesis_inverts(wavelet: str, level: int) -> None:
    t = WaveletTransform2d(wavelet, level, (28, 28))
    x = torch.rand(2, 1, 28, 28, generator=_gen(), dtype=torch.float64)
    c = t.analysis(x)
    with warnings.catch_warnings():  # pywt warns that level 2 exceeds its max level for 28
        warnings.simplefilter("ignore")
        coeffs = pywt.wavedec2(x[1, 0].numpy(), wavelet, mode="periodization", level=level)
        ref, slices = pywt.coeffs_to_array(coeffs)
        rec = pywt.waverec2(pywt.array_to_coeffs(c[1, 0].numpy(), slices, output_format="wavedec2"),
                            wavelet, mode="periodization")
    np.testing.assert_allclose(c[1, 0].numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(t.synthesis(c)[1, 0].numpy(), rec, atol=1e-10)
    torch.testing.assert_close(t.synthesis(c), x, atol=1e-10, rtol=0)
    torch.testing.assert_close(t.analysis(t.synthesis(x)), x, atol=1e-10, rtol=0)


def test_orthonormal_vs_biorthogonal_operators() -> None:
    a, s = dwt_matrices("db4", 28)
    np.testing.assert_allclose(s, a.T, atol=1e-12)           # orthonormal: S = A^T
    a, s = dwt_matrices("bior4.4", 28)
    np.testing.assert_allclose(s @ a, np.eye(28), atol=1e-10)  # still an exact inverse
    assert np.abs(s - a.T).max() > 1e-2                        # but oblique: S != A^T


def test_bad_sizes_and_params_raise() -> None:
    with pytest.raises(ConfigError, match="levels that work: \\[1, 2\\]"):
        WaveletTransform2d("bior4.4", 3, (28, 28))
    with pytest.raises(ConfigError, match="unknown wavelet"):
        WaveletTransform2d("nope", 1, (28, 28))
    with pytest.raises(ConfigError, match="rho"):
        SparsifyingFrontEnd(rho=0.0)
    with pytest.raises(AdvgeomError, match="NCHW"):
        SparsifyingFrontEnd()(torch.rand(2, 784))


@pytest.mark.parametrize("wavelet", ["bior4.4", "db4"])
def test_keeps_exactly_k_largest_coefficients(wavelet: str) -> None:
    fe = SparsifyingFrontEnd(wavelet, 1, 0.03, (28, 28), clip=False)
    assert fe.k == num_kept(0.03, 784) == 23
    x = torch.rand(4, 3, 28, 28, generator=_gen(1), dtype=torch.float64)
    c = fe.transform.analysis(x)
    out = fe.transform.analysis(fe(x))
    nz = (out.abs() > 1e-9).flatten(-2).sum(-1)
    assert (nz == 23).all()
    # independent top-K with numpy/pywt per channel image
    for b in range(4):
        for ch in range(3):
            flat = c[b, ch].flatten().numpy()
            keep = np.argsort(-np.abs(flat))[:23]
            ref = np.zeros_like(flat)
            ref[keep] = flat[keep]
            np.testing.assert_allclose(out[b, ch].flatten().numpy(), ref, atol=1e-10)


def test_identity_on_k_sparse_inputs() -> None:
    gen = _gen(2)
    fe = SparsifyingFrontEnd("bior4.4", 1, size=(28, 28), k=20, clip=False)
    c = torch.zeros(3, 1, 28, 28, dtype=torch.float64)
    for b in range(3):
        idx = torch.randperm(784, generator=gen)[:20]
        c[b, 0].view(-1)[idx] = torch.randn(20, generator=gen, dtype=torch.float64).sign() * (
            1 + torch.rand(20, generator=gen, dtype=torch.float64))
    x = fe.transform.synthesis(c)
    torch.testing.assert_close(fe(x), x, atol=1e-10, rtol=0)
    # with clipping: a constant image (approximation band only) plus small details, in [0,1]
    fe = SparsifyingFrontEnd("bior4.4", 1, size=(28, 28), k=196 + 30)
    d = torch.zeros(2, 1, 28, 28, dtype=torch.float64)
    detail = torch.ones(28, 28, dtype=torch.bool)
    detail[:14, :14] = False
    pos = detail.flatten().nonzero()[:, 0]
    for b in range(2):
        idx = pos[torch.randperm(len(pos), generator=gen)[:30]]
        d[b, 0].view(-1)[idx] = 0.05 * (1 + torch.rand(30, generator=gen, dtype=torch.float64))
    x = 0.5 + fe.transform.synthesis(d)
    assert 0 < float(x.min()) and float(x.max()) < 1
    assert int((fe.transform.analysis(x).abs() > 1e-9).sum()) == 2 * fe.k  # exactly K-sparse
    torch.testing.assert_close(fe(x), x, atol=1e-10, rtol=0)


@pytest.mark.parametrize("wavelet", ["bior4.4", "db4"])
def test_gradient_is_projection_on_kept_support(wavelet: str) -> None:
    fe = SparsifyingFrontEnd(wavelet, 1, 0.35, (28, 28))  # keeps the whole approximation band
    gen = _gen(3)
    x = 0.4 + 0.2 * torch.rand(2, 1, 28, 28, generator=gen, dtype=torch.float64)
    y = fe(x)
    assert 0 < float(y.min()) and float(y.max()) < 1  # no clipping active
    m = fe.mask(x)
    t = fe.transform
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    h = 1e-6
    fd = (fe(x + h * v) - fe(x - h * v)) / (2 * h)
    torch.testing.assert_close(fd, t.synthesis(m * t.analysis(v)), atol=1e-6, rtol=0)
    torch.testing.assert_close(fd, fe.project(v, x), atol=1e-6, rtol=0)
    # autograd (vector-Jacobian product) is the adjoint projection P^T
    g = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(fe(xr), xr, grad_outputs=g)
    torch.testing.assert_close(vjp, fe.project(g, x, adjoint=True), atol=1e-10, rtol=0)
    # <g, P v> == <P^T g, v>
    assert abs(float((g * fe.project(v, x)).sum() - (vjp * v).sum())) < 1e-8
    if wavelet == "db4":  # orthonormal: the projection is symmetric
        torch.testing.assert_close(vjp, fe.project(g, x), atol=1e-10, rtol=0)
    # idempotent (oblique or orthogonal)
    pv = fe.project(v, x)
    torch.testing.assert_close(fe.project(pv, x), pv, atol=1e-10, rtol=0)


def test_bpda_identity_backward_same_forward() -> None:
    x = torch.rand(2, 1, 28, 28, generator=_gen(4))
    fe, fb = SparsifyingFrontEnd(), SparsifyingFrontEnd(bpda=True)
    torch.testing.assert_close(fe(x), fb(x))
    xr = x.clone().requires_grad_(True)
    g = torch.randn(x.shape, generator=_gen(5))
    (grad,) = torch.autograd.grad(fb(xr), xr, grad_outputs=g)
    torch.testing.assert_close(grad, g)


def test_checkpoint_state_has_no_matrices() -> None:
    assert SparsifyingFrontEnd().state_dict() == {}


def test_float32_front_end_matches_independent_pywt_top_k() -> None:
    fe = SparsifyingFrontEnd()  # CDF 9/7, one level, rho = 3%
    x = torch.rand(5, 1, 28, 28, generator=_gen(6)) ** 3
    out = fe(x)
    for b in range(5):
        arr, slices = pywt.coeffs_to_array(pywt.wavedec2(x[b, 0].double().numpy(), "bior4.4",
                                                         mode="periodization", level=1))
        flat = arr.ravel().copy()
        flat[np.argsort(-np.abs(flat))[23:]] = 0.0
        ref = pywt.waverec2(pywt.array_to_coeffs(flat.reshape(arr.shape), slices,
                                                 output_format="wavedec2"), "bior4.4", mode="periodization")
        np.testing.assert_allclose(out[b, 0].numpy(), np.clip(ref, 0, 1), atol=2e-6)
