"""The Max-Mahalanobis center (MMC) architecture (Pang et al. 2020, "Rethinking softmax
cross-entropy loss for adversarial robustness"); the loss is the defense ``mmc``
(:mod:`advgeom.defenses.mmc`).

- ``mmc_centers(D, L, C)``: L points on the sphere of radius C in R^D with pairwise
  inner products ``-C^2 / (L - 1)`` (the Max-Mahalanobis centers of Pang et al. 2018,
  built coordinate by coordinate as in their construction); when ``D < L - 1`` no such
  set exists and the centers come from minimizing the largest pairwise inner product
  on the sphere (their fallback), deterministically.
- model ``mmc``: a base network's features, a linear layer to ``dim`` (256 in the
  paper), and the MMC head with logits ``-||z - mu_k||^2``; prediction is the
  nearest center (the largest logit).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.errors import ConfigError
from advgeom.models._layers import register_model
from advgeom.models.base import Classifier, create_model

# ---------------------------------------------------------------------------
# centers


def _simplex_centers(dim: int, classes: int) -> Tensor:
    """Unit vectors mu_1..mu_L with mu_i . mu_j = -1/(L-1), mu_i in span(e_1..e_i)."""
    mu = torch.zeros(classes, max(dim, classes), dtype=torch.float64)
    mu[0, 0] = 1.0
    for k in range(1, classes):
        for j in range(k):
            mu[k, j] = -(1.0 / (classes - 1) + mu[k] @ mu[j]) / mu[j, j]
        mu[k, k] = math.sqrt(abs(1.0 - float(mu[k].pow(2).sum())))
    return mu[:, :dim]


def _packed_centers(dim: int, classes: int, steps: int = 1000) -> Tensor:
    """Unit vectors minimizing the largest pairwise inner product (D < L - 1), by Adam
    on a smooth maximum (log-sum-exp with a growing sharpness), from a fixed seed."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(classes, dim, generator=g, dtype=torch.float64).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.01)
    mask = ~torch.eye(classes, dtype=torch.bool)
    for t in range(steps):
        u = z / z.norm(dim=1, keepdim=True)
        gram = (u @ u.T)[mask]
        sharp = 10.0 + 490.0 * t / steps
        loss = torch.logsumexp(sharp * gram, dim=0) / sharp
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return z / z.norm(dim=1, keepdim=True)


def mmc_centers(dim: int, classes: int, scale: float = 10.0) -> Tensor:
    """The (classes, dim) Max-Mahalanobis centers of norm ``scale`` (float32)."""
    if classes < 2 or dim < 1:
        raise ConfigError(f"mmc centers need >= 2 classes and dim >= 1, got ({dim}, {classes})")
    if not scale > 0:
        raise ConfigError(f"mmc: scale must be > 0, got {scale}")
    mu = _simplex_centers(dim, classes) if dim >= classes - 1 else _packed_centers(dim, classes)
    return (scale * mu).to(torch.float32)


# ---------------------------------------------------------------------------
# model


class MMCHead(nn.Module):
    """Logits ``-||z - mu_k||^2`` against fixed centers (a buffer, not trained)."""

    def __init__(self, centers: Tensor) -> None:
        super().__init__()
        self.register_buffer("centers", centers.clone())

    def forward(self, z: Tensor) -> Tensor:
        return -(z.unsqueeze(1) - self.centers.unsqueeze(0)).pow(2).sum(-1)


@register_model("mmc")
def mmc_model(*, base: str = "small_cnn", base_kwargs: dict[str, Any] | None = None,
              dim: int = 256, scale: float = 10.0) -> Classifier:
    """Network ``base`` with its classifier replaced by a linear layer to ``dim``
    features and the MMC head (Pang et al. 2020: dim 256, C_MM = 10)."""
    if base == "mmc":
        raise ConfigError("mmc: base must be another model")
    net = create_model(base, **(base_kwargs or {}))
    if not isinstance(net, Classifier):
        raise ConfigError(f"mmc: base {base!r} does not expose features/head")
    dim = int(dim)
    body = nn.Sequential(net.body, nn.Linear(net.feature_dim, dim))
    return Classifier(body, MMCHead(mmc_centers(dim, net.num_classes, float(scale))),
                      num_classes=net.num_classes, input_shape=net.input_shape,
                      feature_dim=dim, normalize=net.normalize)
