"""2-D slices of a spheres classifier's decision boundary (adversarial-spheres.txt
Figure 1; Figure 2 right for d = 2) and accuracy as a function of ||x|| (Figure 2 left).

A slice is the plane spanned by two orthonormal directions u, v through the origin;
every sphere meets it in circles of radius 1 and R, and the max-margin boundary in
the circle of radius (1+R)/2. Plotting functions draw on a given matplotlib Axes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from advgeom.attacks.manifold import manifold_attack, predict
from advgeom.data.spheres import sample_sphere
from advgeom.errors import AdvgeomError

# ---------------------------------------------------------------------------
# planes and grids


def orthonormal_pair(u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Gram-Schmidt: unit e1 along u and unit e2 along the part of v orthogonal to u."""
    e1 = u / u.norm()
    w = v - (v @ e1) * e1
    if float(w.norm()) < 1e-5 * float(v.norm()):
        raise AdvgeomError("slice directions are parallel")
    return e1, w / w.norm()


@dataclass
class Slice:
    """Model logits on a res x res grid of the plane a*e1 + b*e2, |a|, |b| <= extent."""

    coords: np.ndarray   # (res,)
    logits: np.ndarray   # (res, res), [i, j] at (a=coords[j], b=coords[i])
    e1: Tensor
    e2: Tensor


@torch.no_grad()
def slice_logits(model: nn.Module, e1: Tensor, e2: Tensor, *, extent: float = 2.5,
                 resolution: int = 201, batch: int = 8192) -> Slice:
    """Evaluate a single-logit (or two-logit: logit_1 - logit_0) model on a plane grid."""
    c = torch.linspace(-extent, extent, resolution, dtype=e1.dtype, device=e1.device)
    bb, aa = torch.meshgrid(c, c, indexing="ij")
    pts = aa.reshape(-1, 1) * e1 + bb.reshape(-1, 1) * e2
    outs = []
    for chunk in pts.split(batch):
        o = model(chunk)
        outs.append(o.reshape(-1) if o.shape[-1] == 1 else o[:, 1] - o[:, 0])
    logits = torch.cat(outs).reshape(resolution, resolution)
    return Slice(c.cpu().numpy(), logits.cpu().double().numpy(), e1, e2)


def plot_slice(ax, sl: Slice, R: float = 1.3, *, title: str = "",
               xlabel: str = "", ylabel: str = "") -> None:
    """Green where the model says "inner sphere", black circles for the data, red for
    the max-margin boundary (Figure 1 legend)."""
    c = sl.coords
    ax.contourf(c, c, (sl.logits <= 0).astype(float), levels=[0.5, 1.5], colors=["#7fd17f"])
    th = np.linspace(0, 2 * np.pi, 400)
    for r, col in ((1.0, "k"), (R, "k"), ((1 + R) / 2, "r")):
        ax.plot(r * np.cos(th), r * np.sin(th), col, lw=1.2 if col == "k" else 1.0)
    ax.set_aspect("equal")
    ax.set_xlim(c[0], c[-1])
    ax.set_ylim(c[0], c[-1])
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)


def circle_errors(model: nn.Module, R: float = 1.3, points: int = 10000,
                  device: str | torch.device = "cpu") -> tuple[int, int]:
    """Errors on dense circles of radius 1 (label 0) and R (label 1) for a d = 2 model
    (Figure 2 right)."""
    th = torch.linspace(0, 2 * np.pi, points + 1, device=device)[:-1]
    circ = torch.stack([th.cos(), th.sin()], dim=1)
    with torch.no_grad():
        e_in = int((predict(model, circ) != 0).sum())
        e_out = int((predict(model, R * circ) != 1).sum())
    return e_in, e_out


# ---------------------------------------------------------------------------
# accuracy as a function of the norm (Figure 2 left)


@torch.no_grad()
def accuracy_vs_norm(model: nn.Module, d: int, norms: list[float], *, R: float = 1.3,
                     n: int = 10000, generator: torch.Generator | None = None) -> list[float]:
    """Accuracy of the model on ``n`` uniform points of each norm, labelled by the
    theoretical boundary ||x|| > (1+R)/2 (Figure 2 left)."""
    acc = []
    for r in norms:
        x = sample_sphere(n, d, r, generator=generator)
        y = 1 if r > (1 + R) / 2 else 0
        acc.append(float((predict(model, x) == y).double().mean()))
    return acc


def adversarial_errors_vs_norm(model: nn.Module, d: int, norms: list[float], *, R: float = 1.3,
                               n: int = 20, steps: int = 300, step_size: float = 0.05,
                               generator: torch.Generator | None = None) -> list[bool]:
    """Whether the worst-case manifold attack finds an error on the sphere of each norm
    (label from the theoretical boundary), from ``n`` random starts (Figure 2 left)."""
    found = []
    for r in norms:
        x = sample_sphere(n, d, r, generator=generator)
        y = torch.full((n,), 1 if r > (1 + R) / 2 else 0, dtype=torch.int64, device=x.device)
        res = manifold_attack(model, x, y, steps=steps, step_size=step_size * r, mode="worst")
        found.append(bool(res.success.any()))
    return found
