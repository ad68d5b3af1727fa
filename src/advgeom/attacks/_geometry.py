"""Threat-model geometry shared by the attacks: per-sample norms, steepest-ascent
directions, projections onto the eps-ball intersected with the [0,1] box, and
random starts drawn from an explicit ``torch.Generator``.

``eps`` is always a per-sample tensor of shape (N,) here (see ``_common.as_eps``);
``bview`` reshapes such a vector to broadcast over an input batch.
"""
from __future__ import annotations

import torch
from torch import Tensor

from advgeom.errors import AdvgeomError
from advgeom.seeding import make_generator

NORMS = ("linf", "l2")
_TINY = 1e-12


def check_norm(norm: str, allowed: tuple[str, ...] = NORMS) -> str:
    """Validate ``norm`` against what the attack supports."""
    if norm not in allowed:
        raise AdvgeomError(f"unknown or unsupported norm {norm!r}; this attack accepts: "
                           f"{', '.join(allowed)}")
    return norm


def bview(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-sample vector (N,) to (N, 1, 1, ...) matching ``like``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def flat_norm(d: Tensor, norm: str) -> Tensor:
    """Per-sample ``norm`` of a batch of perturbations, shape (N,)."""
    flat = d.flatten(1)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    raise AdvgeomError(f"unknown norm {norm!r}")


def dual_norm(norm: str) -> str:
    return {"linf": "l1", "l2": "l2", "l1": "linf"}[norm]


def ascent_direction(g: Tensor, norm: str) -> Tensor:
    """Unit-norm steepest ascent direction of a gradient (in place on ``g``)."""
    if norm == "linf":
        return g.sign_()
    n = flat_norm(g, "l2")
    return g.div_(bview(n + _TINY, g))


def box_bounds(x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor]:
    """Lower/upper bounds of the linf ball of radius ``eps`` intersected with [0,1].

    Projection onto that set is then one ``clamp(lo, hi)`` per step.
    """
    e = bview(eps, x)
    return (x - e).clamp_(min=0.0), (x + e).clamp_(max=1.0)


def project_l2(x: Tensor, x_adv: Tensor, eps: Tensor) -> Tensor:
    """Project onto the l2 ball of radius ``eps`` around ``x``, then clip to [0,1].

    Clipping to the box only shrinks every coordinate of the perturbation, so the
    result stays inside the ball.
    """
    d = x_adv - x
    n = flat_norm(d, "l2")
    factor = (eps / (n + _TINY)).clamp_(max=1.0)
    return (x + d * bview(factor, d)).clamp_(0.0, 1.0)


def project(x: Tensor, x_adv: Tensor, eps: Tensor, norm: str) -> Tensor:
    """Projection onto {||x' - x|| <= eps} intersected with [0,1] (new tensor)."""
    if norm == "linf":
        lo, hi = box_bounds(x, eps)
        return torch.clamp(x_adv, lo, hi)
    if norm == "l2":
        return project_l2(x, x_adv, eps)
    raise AdvgeomError(f"unknown norm {norm!r}")


def fix_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The caller's generator, or a fresh one seeded with 0 (runs stay reproducible)."""
    if generator is None:
        return make_generator(0, device)
    if not isinstance(generator, torch.Generator):
        raise AdvgeomError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def rand(shape: tuple[int, ...], generator: torch.Generator, like: Tensor,
         normal: bool = False) -> Tensor:
    """U[0,1) (or standard normal) numbers from ``generator``, on ``like``'s device."""
    draw = torch.randn if normal else torch.rand
    out = draw(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return out if out.device == like.device else out.to(like.device)


def random_start(x: Tensor, eps: Tensor, norm: str, generator: torch.Generator,
                 l2_radius: str = "uniform", clip: bool = True) -> Tensor:
    """A random point of the eps-ball, clipped to [0,1] (``clip=False``: not clipped,
    as Wong et al.'s MNIST training code takes its FGSM gradient).

    linf: uniform in the cube. l2: a uniform direction at radius ``eps * U[0,1]``
    (``l2_radius="uniform"``, as torchattacks' PGDL2; a point uniform in the ball would
    sit on the sphere in high dimension, and its orthogonal part slows PGD down) or
    exactly ``eps`` (``"sphere"``, as AutoAttack's APGD).
    """
    if norm == "linf":
        u = rand(tuple(x.shape), generator, x).mul_(2.0).sub_(1.0)
        start = x + u * bview(eps, x)
    else:
        g = rand(tuple(x.shape), generator, x, normal=True)
        g = g / bview(flat_norm(g, "l2") + _TINY, g)
        r = eps if l2_radius == "sphere" else rand((x.shape[0],), generator, x) * eps
        start = x + g * bview(r, g)
    return start.clamp_(0.0, 1.0) if clip else start


def finalize(x: Tensor, x_adv: Tensor, eps: Tensor, norm: str) -> Tensor:
    """Last guard on every returned batch: inside the threat model and [0,1], detached.

    Entries with infinite ``eps`` (unbounded min-norm attacks) are only box-clipped.
    """
    x_adv = x_adv.detach()
    bounded = torch.isfinite(eps)
    if bool(bounded.all()):
        return project(x, x_adv, eps, norm)
    e = torch.where(bounded, eps, torch.full_like(eps, 1e30))
    return project(x, x_adv, e, norm)
