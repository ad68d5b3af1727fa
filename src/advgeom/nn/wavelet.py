"""Sparsifying wavelet front end (sparsification-robustness.txt, Sections 2-3 and 5).

The front end maps an image in [0,1] to a 2-D discrete wavelet basis, keeps the K
coefficients of largest magnitude per channel image (rho = K/N, N = H*W), reconstructs
and clips to [0,1]:

    H_K(x) = clip(S (m(x) * (A x)),  0, 1),     m(x) = top-K mask of |A x|.

``A`` (analysis) and ``S`` (synthesis) are EXACT linear maps built once per
(wavelet, level, size) from PyWavelets by transforming the identity basis with
``pywt.dwt`` / ``pywt.idwt`` in ``'periodization'`` mode, applied separably along rows
and columns, level by level on the approximation block: the coefficient layout equals
``pywt.coeffs_to_array(pywt.wavedec2(x, wavelet, 'periodization', level))``.

Wavelets: the paper's Cohen-Daubechies-Feauveau 9/7 is PyWavelets ``'bior4.4'``. It is
biorthogonal, not orthogonal: ``S A = I`` exactly, but ``S != A^T``, so
``P_K = S diag(m) A`` is an *oblique* projection (idempotent, not symmetric) and its
adjoint ``P_K^T`` differs from ``P_K``. With orthonormal wavelets (``'haar'``,
``'dbN'``, ``'coifN'``, ``'symN'``) ``S = A^T`` and ``P_K`` is the exact orthogonal
projection of the theory. The paper's code uses one decomposition level (28x28 MNIST
images with periodization allow levels 1 and 2 only: 28 = 4*7), which is our default.

Gradient: the mask is treated as a constant, so autograd gives the exact derivative of
``H_K`` almost everywhere (``P_K^T`` restricted to unclipped pixels). ``bpda=True``
keeps the same forward pass and uses the identity in the backward pass (BPDA,
Athalye et al. 2018), as the paper does for its C&W experiment.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import pywt
import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError, ConfigError

__all__ = ["dwt_matrices", "WaveletTransform2d", "SparsifyingFrontEnd", "num_kept"]


# --------------------------------------------------------------------------- operators
@lru_cache(maxsize=64)
def dwt_matrices(wavelet: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One-level 1-D periodized DWT of length ``n`` as matrices ``(A, S)`` (float64).

    ``A @ v == concat(pywt.dwt(v, wavelet, 'periodization'))`` (approximation first) and
    ``S @ c`` inverts it (``pywt.idwt``); built by transforming the identity basis.
    """
    if n < 2 or n % 2:
        raise ConfigError(f"wavelet front end: signal length {n} must be even and >= 2 "
                          "(periodization halves it at every level)")
    try:
        wav = pywt.Wavelet(wavelet)
    except ValueError:
        raise ConfigError(f"unknown wavelet {wavelet!r}; see pywt.wavelist(kind='discrete')") from None
    eye = np.eye(n)
    analysis = np.empty((n, n))
    for j in range(n):
        lo, hi = pywt.dwt(eye[j], wav, mode="periodization")
        analysis[:, j] = np.concatenate([lo, hi])
    half = n // 2
    synthesis = np.empty((n, n))
    for j in range(n):  # unit coefficient j, split into (approximation, detail) halves
        synthesis[:, j] = pywt.idwt(eye[j, :half], eye[j, half:], wav, mode="periodization")
    return analysis, synthesis


def _check_levels(size: int, level: int, what: str) -> None:
    if level < 1:
        raise ConfigError(f"wavelet front end: level must be >= 1, got {level}")
    if size % (2 ** level):
        ok = [lv for lv in range(1, 8) if size % (2 ** lv) == 0]
        raise ConfigError(f"wavelet front end: {what} {size} is not divisible by 2**{level}; "
                          f"levels that work: {ok or 'none'}")


class WaveletTransform2d(nn.Module):
    """Exact separable multi-level 2-D periodized DWT as a differentiable linear map.

    ``analysis(x)`` returns a tensor shaped like ``x`` (..., H, W) in PyWavelets'
    ``coeffs_to_array`` layout; ``synthesis`` inverts it. Matrices are non-persistent
    buffers (rebuilt from PyWavelets, never stored in checkpoints).
    """

    def __init__(self, wavelet: str = "bior4.4", level: int = 1, size: tuple[int, int] = (28, 28)):
        super().__init__()
        h, w = int(size[0]), int(size[1])
        _check_levels(h, level, "height")
        _check_levels(w, level, "width")
        self.wavelet, self.level, self.size = wavelet, int(level), (h, w)
        for lv in range(self.level):
            for axis, n in (("h", h >> lv), ("w", w >> lv)):
                a, s = dwt_matrices(wavelet, n)
                self.register_buffer(f"a{axis}{lv}", torch.from_numpy(a), persistent=False)
                self.register_buffer(f"s{axis}{lv}", torch.from_numpy(s), persistent=False)
        self.orthogonal = bool(pywt.Wavelet(wavelet).orthogonal)

    def _mats(self, kind: str, lv: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return (getattr(self, f"{kind}h{lv}").to(dtype), getattr(self, f"{kind}w{lv}").to(dtype))

    def _check(self, x: Tensor) -> None:
        if x.dim() < 2 or tuple(x.shape[-2:]) != self.size:
            raise AdvgeomError(f"wavelet transform built for {self.size} images, "
                               f"got shape {tuple(x.shape)}")

    def analysis(self, x: Tensor) -> Tensor:
        """Wavelet coefficients of ``x`` (..., H, W), same shape."""
        self._check(x)
        out = x
        for lv in range(self.level):
            ah, aw = self._mats("a", lv, x.dtype)
            m, n = ah.shape[0], aw.shape[0]
            block = ah @ out[..., :m, :n] @ aw.T
            out = _paste(out, block)
        return out

    def synthesis(self, c: Tensor) -> Tensor:
        """Image from coefficients (inverse of :meth:`analysis`)."""
        self._check(c)
        out = c
        for lv in reversed(range(self.level)):
            sh, sw = self._mats("s", lv, c.dtype)
            m, n = sh.shape[0], sw.shape[0]
            block = sh @ out[..., :m, :n] @ sw.T
            out = _paste(out, block)
        return out


def _paste(full: Tensor, block: Tensor) -> Tensor:
    """``full`` with its top-left corner replaced by ``block`` (out of place, differentiable)."""
    m, n = block.shape[-2:]
    if (m, n) == tuple(full.shape[-2:]):
        return block
    top = torch.cat([block, full[..., :m, n:]], dim=-1)
    return torch.cat([top, full[..., m:, :]], dim=-2)


# --------------------------------------------------------------------------- front end
def num_kept(rho: float, n: int) -> int:
    """K = floor(rho * N), as in the paper's code (rho = 3% of 784 keeps 23)."""
    return int(math.floor(rho * n + 1e-9))


class _IdentityBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor) -> Tensor:  # type: ignore[override]
        return y.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class SparsifyingFrontEnd(nn.Module):
    """Keep the K largest wavelet coefficients per channel image; reconstruct; clip.

    Args: ``wavelet`` ('bior4.4' = CDF 9/7), ``level`` (1 as in the paper),
    ``rho`` (K = floor(rho*H*W)) or ``k`` (explicit K), ``size`` (H, W), ``bpda``
    (identity backward pass), ``clip`` (clip the reconstruction to [0,1]).
    """

    def __init__(self, wavelet: str = "bior4.4", level: int = 1, rho: float = 0.03,
                 size: tuple[int, int] = (28, 28), *, k: int | None = None,
                 bpda: bool = False, clip: bool = True) -> None:
        super().__init__()
        self.transform = WaveletTransform2d(wavelet, level, size)
        n = self.transform.size[0] * self.transform.size[1]
        if k is None:
            if not (0.0 < float(rho) <= 1.0):
                raise ConfigError(f"front end: rho must be in (0, 1], got {rho}")
            k = num_kept(float(rho), n)
        if not (1 <= int(k) <= n):
            raise ConfigError(f"front end: K must be in [1, {n}], got {k} (rho={rho})")
        self.k, self.n, self.rho = int(k), n, int(k) / n
        self.bpda, self.clip = bool(bpda), bool(clip)

    def extra_repr(self) -> str:
        t = self.transform
        return (f"wavelet={t.wavelet!r}, level={t.level}, size={t.size}, k={self.k} "
                f"(rho={self.rho:.4f}), bpda={self.bpda}, clip={self.clip}")

    def mask(self, x: Tensor) -> Tensor:
        """0/1 mask of the K largest-magnitude coefficients per (sample, channel) image
        (selected in float64 so that float32 inputs pick the same support as PyWavelets)."""
        coeffs = self.transform.analysis(x.detach().to(torch.float64))
        flat = coeffs.abs().flatten(-2)
        idx = flat.topk(self.k, dim=-1).indices
        m = torch.zeros_like(flat).scatter_(-1, idx, 1.0)
        return m.view_as(coeffs).to(x.dtype)

    def project(self, v: Tensor, x: Tensor, *, adjoint: bool = False) -> Tensor:
        """``P_K(v, x) = S diag(m(x)) A v`` (or its adjoint ``A^T diag(m) S^T v``).

        This is the paper's projection of ``v`` onto the K-dimensional subspace that
        ``x`` lies in; ``adjoint=True`` is what the chain rule applies to a gradient.
        """
        m = self.mask(x)
        t = self.transform
        if not adjoint:
            return t.synthesis(m * t.analysis(v))
        return _adjoint(t, m, v)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise AdvgeomError(f"front end expects NCHW images, got shape {tuple(x.shape)}")
        m = self.mask(x)
        y = self.transform.synthesis(m * self.transform.analysis(x))
        if self.clip:
            y = y.clamp(0.0, 1.0)
        if self.bpda:
            return _IdentityBackward.apply(x, y.detach())
        return y


def _adjoint(t: WaveletTransform2d, m: Tensor, v: Tensor) -> Tensor:
    """``A^T diag(m) S^T v`` via autograd of the (linear) forward map."""
    with torch.enable_grad():
        probe = torch.zeros_like(v, requires_grad=True)
        out = t.synthesis(m * t.analysis(probe))
        (g,) = torch.autograd.grad(out, probe, grad_outputs=v)
    return g
