"""Geometry of the classification layer (weight-penalization-classification-layer.txt,
Section 3.1): the target Gram matrix Sigma of eq. 3.7, the gap ``||W W^T - Sigma||``
of eq. 3.8, the angles between class weight vectors against the optimum of Theorem 1,
and the feature angles theta_ij^f of eqs. 3.3-3.4.

Notation: ``W`` is the (K, P) weight of the linear classifier ``c(x) = W f(x) + b``
(K classes, P feature dimensions), ``w_i`` its rows. Theorem 1 (for 1 < K <= P + 1 and
rows of equal length s): the smallest pairwise angle ``min_{i!=j} angle(w_i, w_j)`` is
largest, ``arccos(1 / (1 - K))``, exactly when ``w_i . w_j = s^2 / (1 - K)`` for all
``i != j``, i.e. ``W W^T = Sigma``. For K > P + 1 no such W exists (Sigma has rank
K - 1 > P): the penalty can no longer reach 0 and the theorem says nothing.

theta_ij^f (eq. 3.3) is the angle between a feature ``f(x)`` and ``w_i - w_j``, with i
the class whose region A_i (eq. 3.2) holds ``f(x)``; an attacker must rotate ``f(x)`` by
at least ``pi/2 - theta_ij^f`` to reach A_j, so the smaller ``max_j theta_ij^f``
(eq. 3.4) the more robust. The bias b is left out, as in the paper's analysis.
"""
from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from advgeom.errors import ConfigError

MATRIX_NORMS = ("fro", "spectral")


def check_theorem(classes: int, dim: int, *, stacklevel: int = 2) -> bool:
    """Whether Theorem 1 applies (1 < K <= P + 1); a :class:`UserWarning` when K > P + 1."""
    if classes < 2:
        raise ConfigError(f"the weight penalty needs >= 2 classes, got K = {classes}")
    if classes > dim + 1:
        warnings.warn(f"K = {classes} classes in P = {dim} feature dimensions: K > P + 1, so "
                      "W W^T = Sigma has no solution and Theorem 1 (the arccos(1/(1-K)) optimum) "
                      "does not apply; the penalty cannot reach 0", UserWarning, stacklevel=stacklevel + 1)
        return False
    return True


def target_gram(classes: int, s: float, *, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> Tensor:
    """Sigma of eq. 3.7: ``s^2`` on the diagonal, ``s^2 / (1 - K)`` (negative) off it."""
    if classes < 2:
        raise ConfigError(f"Sigma needs >= 2 classes, got K = {classes}")
    if not s > 0 or not math.isfinite(s):
        raise ConfigError(f"s must be finite and > 0, got {s!r}")
    off = s * s / (1.0 - classes)
    sigma = torch.full((classes, classes), off, dtype=dtype, device=device)
    sigma.fill_diagonal_(s * s)
    return sigma


def gram_gap(weight: Tensor, s: float, matrix_norm: str = "fro") -> Tensor:
    """``||W W^T - Sigma||`` (eq. 3.8): Frobenius (``"fro"``) or spectral (``"spectral"``,
    the largest singular value), differentiable in ``weight``."""
    if matrix_norm not in MATRIX_NORMS:
        raise ConfigError(f"matrix_norm must be one of {', '.join(MATRIX_NORMS)}, got {matrix_norm!r}")
    if weight.dim() != 2:
        raise ConfigError(f"the classifier weight must be a (K, P) matrix, got shape {tuple(weight.shape)}")
    diff = weight @ weight.T - target_gram(weight.shape[0], s, dtype=weight.dtype, device=weight.device)
    if matrix_norm == "fro":
        return torch.linalg.matrix_norm(diff, ord="fro")
    return torch.linalg.matrix_norm(diff, ord=2)


def theorem1_angle(classes: int) -> float:
    """The optimum of Theorem 1, ``arccos(1 / (1 - K))``, in degrees (120 for K = 3,
    about 96.38 for K = 10)."""
    if classes < 2:
        raise ConfigError(f"the Theorem 1 angle needs >= 2 classes, got K = {classes}")
    return math.degrees(math.acos(1.0 / (1.0 - classes)))


def pairwise_angles(weight: Tensor) -> Tensor:
    """(K, K) angles in degrees between the rows of ``weight`` (diagonal: 0)."""
    w = weight.detach().double()
    u = w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return torch.rad2deg(torch.arccos((u @ u.T).clamp(-1.0, 1.0))).fill_diagonal_(0.0)


def min_pairwise_angle(weight: Tensor) -> float:
    """The smallest angle (degrees) between two class weight vectors (twice eq. 3.5)."""
    a = pairwise_angles(weight)
    k = a.shape[0]
    return float(a[~torch.eye(k, dtype=torch.bool, device=a.device)].min())


def feature_angles(features: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(theta, region)``: theta (N, K) in degrees is the angle between ``f(x)`` and
    ``w_i - w_j`` (eq. 3.3), i = ``region`` the class of the region A_i holding f(x)
    (the argmax of ``W f``, no bias); theta[:, i] is NaN."""
    f, w = features.detach().double().flatten(1), weight.detach().double()
    if f.shape[1] != w.shape[1]:
        raise ConfigError(f"features have {f.shape[1]} dimensions, the weight {w.shape[1]}")
    region = (f @ w.T).argmax(dim=1)
    d = w[region].unsqueeze(1) - w.unsqueeze(0)                      # (N, K, P): w_i - w_j
    cos = (d * f.unsqueeze(1)).sum(-1) / (d.norm(dim=-1) * f.norm(dim=1, keepdim=True)).clamp_min(1e-300)
    theta = torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
    theta[torch.arange(f.shape[0]), region] = math.nan
    return theta, region


def max_feature_angle(features: Tensor, weight: Tensor) -> Tensor:
    """Per sample ``max_{j != i} theta_ij^f`` (eq. 3.4), degrees: below 90 inside A_i; the
    smaller, the larger the rotation an attack needs."""
    theta, _ = feature_angles(features, weight)
    return torch.nan_to_num(theta, nan=-math.inf).max(dim=1).values


def classifier_weight(model: nn.Module) -> Tensor:
    """The (K, P) weight of the model's linear classification layer (``model.head``)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        kind = "none" if head is None else type(head).__name__
        raise ConfigError(f"the weight penalty needs a model whose classification layer `head` is "
                          f"nn.Linear (a Classifier such as cw_mnist_cnn or wrn), got head {kind}")
    return head.weight


def geometry_summary(weight: Tensor, s: float | None = None, features: Tensor | None = None,
                     matrix_norm: str = "fro") -> dict[str, float]:
    """The numbers a report states: ``min_angle`` and ``theorem1_angle`` (degrees), the
    row norms' mean and spread, ``gram_gap`` (with ``s``) and, with test ``features``, the
    mean and 90th percentile of ``max_j theta_ij^f`` and its centred approximation
    ``90 - min_angle / 2`` (Section 3.1)."""
    w = weight.detach()
    norms = w.double().norm(dim=1)
    out = {"min_angle": min_pairwise_angle(w), "theorem1_angle": theorem1_angle(w.shape[0]),
           "row_norm_mean": float(norms.mean()), "row_norm_std": float(norms.std(unbiased=False))}
    if s is not None:
        out["gram_gap"] = float(gram_gap(w.double(), s, matrix_norm))
    if features is not None:
        m = max_feature_angle(features, w)
        out["max_theta_f_mean"] = float(m.mean())
        out["max_theta_f_p90"] = float(m.quantile(0.9))
        out["max_theta_f_centred"] = 90.0 - out["min_angle"] / 2.0
    return out
