"""SphereCorr layers of hyperspherical-defense.txt (Section 4.1, after Liu et al. 2017,
"Deep hyperspherical learning"): convolutions and linear maps whose output is a
function g of the angle between each kernel and each input patch, not their inner
product; the classifier heads of Section 4.2 (W-Softmax, eq. 4; weight multiplier,
eq. 6; the heads the annealed loss of eq. 8 trains) and the orthogonality regularizer.

Operators ``g`` (``cos`` is the cosine of the angle theta between kernel and patch):

* ``cosine``     cos(theta)
* ``linear``     1 - 2 theta / pi
* ``sigmoid``    SphereNet's sigmoid SphereCorr, (1 + e^{-pi/2k}) / (1 - e^{-pi/2k}) *
  (1 - e^{theta/k - pi/2k}) / (1 + e^{theta/k - pi/2k}), k = 0.3 (``learn_k``: k trained)
* ``quadratic``  1 - a (1 - cos(theta))^2 (eq. 2, a = 1 by default, a > 0)
* ``truncated``  min(1, ||x||) cos(theta) (eq. 3, the input-truncated SphereCorr)

Norms carry a small ``eps`` (``sqrt(||.||^2 + eps)``), so a zero patch gives cos = 0 and
finite gradients; the cosine's value is clamped to +-(1 - 1e-6) before ``acos``, so
``linear`` and ``sigmoid`` have finite gradients at theta = 0 and pi. The clamp passes the
gradient straight through (the derivative of ``acos`` taken at the limit, about 707 in
magnitude): a plain clamp would zero the gradient of every angle under 1.4e-3 rad, so a
patch aligned with its kernel would give an attack no gradient through that unit. Patch
norms come from a convolution of x^2 with a ones kernel (same stride and padding as the
layer).

Not implemented: Section 4.4 ("generalized hyperspherical defense") names other manifolds
(simplex, hyperbola, affine) in one paragraph but gives no construction (no operator, no
projection, no training objective) precise enough to implement without inventing one.

SphereCorr layers carry ``no_weight_decay = True``: the training loop puts their
parameters in a group without weight decay (the paper replaces it by the
orthogonality regularizer, :func:`orthogonality_penalty`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.errors import ConfigError

OPERATORS = ("cosine", "linear", "sigmoid", "quadratic", "truncated")
SCALES = ("norm", "multiplier", "none")
COS_LIMIT = 1.0 - 1e-6
NORM_EPS = 1e-6

# ---------------------------------------------------------------------------
# the operators


def check_operator(operator: str, a: float = 1.0, k: float = 0.3) -> str:
    """Validate an operator name and its parameters (one clear :class:`ConfigError`)."""
    if operator not in OPERATORS:
        raise ConfigError(f"unknown SphereCorr operator {operator!r}; operators: {', '.join(OPERATORS)}")
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not a > 0 or not math.isfinite(a):
        raise ConfigError(f"quadratic SphereCorr: a must be a finite number > 0, got {a!r}")
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k > 0 or not math.isfinite(k):
        raise ConfigError(f"sigmoid SphereCorr: k must be a finite number > 0, got {k!r}")
    return operator


def angle(cos: Tensor) -> Tensor:
    """theta = acos(cos), the cosine's value clamped to +-(1 - 1e-6) first, its gradient
    passed straight through the clamp (finite, and never zero)."""
    clamped = cos.clamp(-COS_LIMIT, COS_LIMIT)
    return torch.acos(cos + (clamped - cos).detach())


def sigmoid_corr(theta: Tensor, k: Tensor | float) -> Tensor:
    """SphereNet's sigmoid SphereCorr: 1 at theta = 0, 0 at pi/2, decreasing."""
    k = torch.as_tensor(k, dtype=theta.dtype, device=theta.device)
    c = math.pi / 2 / k
    front = (1 + torch.exp(-c)) / (1 - torch.exp(-c))
    e = torch.exp(theta / k - c)
    return front * (1 - e) / (1 + e)


def sphere_corr(cos: Tensor, norm: Tensor, operator: str, *, a: float = 1.0,
                k: Tensor | float = 0.3) -> Tensor:
    """g(w, x) from the cosine between w and x and the input norm ``norm``
    (broadcastable to ``cos``; used by ``truncated`` only)."""
    if operator == "cosine":
        return cos
    if operator == "linear":
        return 1.0 - 2.0 * angle(cos) / math.pi
    if operator == "sigmoid":
        return sigmoid_corr(angle(cos), k)
    if operator == "quadratic":
        return 1.0 - a * (1.0 - cos).pow(2)
    if operator == "truncated":
        return norm.clamp(max=1.0) * cos
    raise ConfigError(f"unknown SphereCorr operator {operator!r}; operators: {', '.join(OPERATORS)}")


def safe_norm(v: Tensor, dim: int | tuple[int, ...], keepdim: bool = False) -> Tensor:
    """``sqrt(sum v^2 + eps)``: finite value and gradient at v = 0."""
    return (v.pow(2).sum(dim=dim, keepdim=keepdim) + NORM_EPS).sqrt()


class _SphereCorr(nn.Module):
    """Shared parameters of the SphereCorr layers: the operator, ``a`` and ``k``."""

    no_weight_decay = True

    def _setup(self, operator: str, a: float, k: float, learn_k: bool) -> None:
        self.operator = check_operator(operator, a, k)
        self.a = float(a)
        if learn_k and operator == "sigmoid":
            self.k = nn.Parameter(torch.tensor(float(k)))
        else:
            self.register_buffer("k", torch.tensor(float(k)), persistent=False)

    def _g(self, cos: Tensor, norm: Tensor) -> Tensor:
        k = self.k.clamp_min(1e-3) if isinstance(self.k, nn.Parameter) else self.k
        return sphere_corr(cos, norm, self.operator, a=self.a, k=k)

    def extra_repr(self) -> str:
        return f"operator={self.operator}" + (f", a={self.a}" if self.operator == "quadratic" else "")


class SphereConv2d(_SphereCorr):
    """SphereConv: ``g(w_c, patch)`` for every output channel c and every patch (no bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int] = 3,
                 stride: int = 1, padding: int = 0, *, operator: str = "cosine", a: float = 1.0,
                 k: float = 0.3, learn_k: bool = False) -> None:
        super().__init__()
        ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *ks))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's initialization
        self.register_buffer("ones", torch.ones(1, in_channels, *ks), persistent=False)
        self._setup(operator, a, k, learn_k)

    def forward(self, x: Tensor) -> Tensor:
        dot = F.conv2d(x, self.weight, None, self.stride, self.padding)
        x_norm = (F.conv2d(x * x, self.ones, None, self.stride, self.padding) + NORM_EPS).sqrt()
        w_norm = safe_norm(self.weight.flatten(1), dim=1).view(1, -1, 1, 1)
        return self._g(dot / (x_norm * w_norm), x_norm)


class SphereLinear(_SphereCorr):
    """SphereFC: ``g(w_j, x)`` for every output j (no bias)."""

    def __init__(self, in_features: int, out_features: int, *, operator: str = "cosine",
                 a: float = 1.0, k: float = 0.3, learn_k: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self._setup(operator, a, k, learn_k)

    def correlation(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(g (N, out), ||x|| (N, 1))``."""
        x_norm = safe_norm(x, dim=1, keepdim=True)
        cos = F.linear(x, self.weight) / (x_norm * safe_norm(self.weight, dim=1).unsqueeze(0))
        return self._g(cos, x_norm), x_norm

    def forward(self, x: Tensor) -> Tensor:
        return self.correlation(x)[0]


# ---------------------------------------------------------------------------
# heads


class SphereHead(SphereLinear):
    """Classifier on SphereCorr with unit-norm class weights W_j (the norm cancels in g).

    ``scale``: ``"norm"`` is W-Softmax (eq. 4), logit ``||x|| g(W_j, x)``;
    ``"multiplier"`` is the weight multiplier (eq. 6), logit ``|alpha| g(W_j, x)`` with a
    learned scalar alpha (initial ``alpha``; its penalty eta |alpha| is in the loss, see
    :meth:`penalty`); ``"none"`` is the sphere-normalized logit ``g(W_j, x)`` (eq. 7).
    ``annealed``: trained with the loss annealing of eq. 8, which mixes the ``none`` and
    ``norm`` logits (:func:`advgeom.defenses.sphere.dsphere`); it returns the W-Softmax
    logits. Every head records its training forwards' ``(g, ||x||)`` while a recording
    is open (:meth:`start_recording`).
    """

    def __init__(self, in_features: int, num_classes: int, *, operator: str = "cosine",
                 scale: str = "norm", alpha: float = 10.0, a: float = 1.0, k: float = 0.3,
                 learn_k: bool = False, annealed: bool = False) -> None:
        super().__init__(in_features, num_classes, operator=operator, a=a, k=k, learn_k=learn_k)
        if annealed and scale != "norm":
            raise ConfigError("sphere head: loss annealing (eq. 8) needs scale='norm'")
        self.annealed = bool(annealed)
        if scale not in SCALES:
            raise ConfigError(f"sphere head: scale must be one of {', '.join(SCALES)}, got {scale!r}")
        self.scale = scale
        if scale == "multiplier":
            if not float(alpha) > 0:
                raise ConfigError(f"weight multiplier: initial alpha must be > 0, got {alpha!r}")
            self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self._record: list[tuple[Tensor, Tensor]] | None = None

    def forward(self, x: Tensor) -> Tensor:
        g, x_norm = self.correlation(x)
        if self._record is not None and self.training:
            self._record.append((g, x_norm.squeeze(1)))
        if self.scale == "norm":
            return x_norm * g
        if self.scale == "multiplier":
            return self.alpha.abs() * g
        return g

    def penalty(self) -> Tensor:
        """|alpha| of the weight multiplier (0 for the other heads)."""
        if self.scale == "multiplier":
            return self.alpha.abs()
        return self.weight.new_zeros(())

    def start_recording(self) -> None:
        self._record = []

    def stop_recording(self) -> list[tuple[Tensor, Tensor]]:
        out, self._record = self._record or [], None
        return out

    def extra_repr(self) -> str:
        return super().extra_repr() + f", scale={self.scale}" + (", annealed" if self.annealed else "")


# ---------------------------------------------------------------------------
# the orthogonality regularizer


def sphere_layers(model: nn.Module) -> list[_SphereCorr]:
    """Every SphereCorr layer of ``model`` (convolutions, FC layers and heads)."""
    return [m for m in model.modules() if isinstance(m, _SphereCorr)]


def orthogonality(weight: Tensor) -> Tensor:
    """``||W^T W - I||_F^2`` with the kernels (flattened per output channel) as the
    columns of W."""
    w = weight.flatten(1)
    gram = w @ w.T
    return (gram - torch.eye(gram.shape[0], dtype=w.dtype, device=w.device)).pow(2).sum()


def orthogonality_penalty(model: nn.Module) -> Tensor:
    """The sum of :func:`orthogonality` over every SphereCorr layer of ``model``."""
    layers = sphere_layers(model)
    if not layers:
        return torch.zeros(())
    return torch.stack([orthogonality(m.weight) for m in layers]).sum()


# ---------------------------------------------------------------------------
# orthogonality as a hard constraint: the Stiefel manifold (footnote 4)


def stiefel_retract(weight: Tensor) -> Tensor:
    """The QR retraction of ``weight`` (kernels flattened per output channel, ``m x n``)
    onto the Stiefel manifold: orthonormal rows when ``m <= n`` (``W W^T = I``), else
    orthonormal columns (``W^T W = I``; e.g. 32 kernels of 9 weights), the Q factor with
    the signs of R's diagonal so that an already orthonormal W is left unchanged."""
    w = weight.detach().flatten(1).double()
    rows = w.shape[0] <= w.shape[1]
    q, r = torch.linalg.qr(w.T if rows else w)
    sign = torch.sign(torch.diagonal(r))
    q = q * torch.where(sign == 0, torch.ones_like(sign), sign)
    return (q.T if rows else q).to(weight.dtype).reshape(weight.shape)


def stiefel_deviation(weight: Tensor) -> float:
    """``max |G - I|`` of the Gram matrix on the constrained side (rows when ``m <= n``,
    columns otherwise): 0 on the Stiefel manifold."""
    w = weight.detach().flatten(1).double()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return float((gram - torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)).abs().max())


@torch.no_grad()
def retract_to_stiefel(model: nn.Module) -> int:
    """Retract the weight of every SphereCorr layer of ``model`` onto the Stiefel manifold
    in place (after each optimizer step: a projected, not a Riemannian, optimizer; the
    optimizer's moments are not transported). Returns the number of layers."""
    layers = sphere_layers(model)
    for m in layers:
        m.weight.copy_(stiefel_retract(m.weight))
    return len(layers)
