"""The classifier weight penalty of Xu, Li & Yang, "Improve adversarial robustness via
weight penalization on classification layer" (weight-penalization-classification-layer.txt,
eqs. 3.7-3.8): ``L = CE + alpha * ||W W^T - Sigma||`` over the (K, P) weight W of the
model's linear classification layer, ``Sigma_ii = s^2``, ``Sigma_ij = s^2 / (1 - K)``.
Its minimizers spread the class weight vectors to the Theorem 1 optimum, pairwise angle
``arccos(1 / (1 - K))`` (:mod:`advgeom.analysis.class_angles`).

Defaults are the paper's (alpha 100, s 0.1). The paper writes ``||.||_2``; the matrix
norm is ``matrix_norm``: ``"fro"`` (Frobenius, the default: advgeom's reading, as the
penalty targets every entry of the Gram matrix) or ``"spectral"`` (the largest singular
value, the other reading of the paper's notation). Reports state which.

The paper's tanh features (f(x) = tanh(h(x))) are a model option, not part of the loss:
``feature_activation = "tanh"`` on ``cw_mnist_cnn``, ``wrn`` and ``resnet32``.

Options beyond the paper: ``adversarial=True`` puts the cross-entropy on examples that
``attack`` crafts (PGD-AT plus the penalty; threat model ``eps``/``norm``/``warmup``/
``craft_mode`` as in :mod:`advgeom.defenses.adversarial`); ``augment="crop_flip"`` draws
the standard CIFAR augmentation (4-pixel zero padding, random 32x32 crop, horizontal flip)
from the step's generator, since advgeom's training loop has none (Section 4.1).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.analysis.class_angles import (MATRIX_NORMS, check_theorem, classifier_weight,
                                           gram_gap, min_pairwise_angle)
from advgeom.attacks._geometry import fix_generator
from advgeom.defenses.adversarial import AdversarialSetup
from advgeom.defenses.base import Loss, StepContext, check_nonneg, logits_of
from advgeom.errors import ConfigError
from advgeom.registry import register

AUGMENTS = ("", "crop_flip")


def crop_flip(x: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random ``pad``-pixel shifted crops (zero padding) and horizontal flips of a NCHW batch."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])          # (n, h)
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])          # (n, w)
    flip = torch.rand(n, generator=generator, device=x.device) < 0.5
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx = torch.arange(n, device=x.device)[:, None, None, None]
    ch = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[idx, ch, rows[:, None, :, None], cols[:, None, None, :]]


def _checked(alpha: float, s: float, matrix_norm: str, augment: str) -> tuple[float, float]:
    alpha = check_nonneg("weight_penalty", "alpha", alpha)
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise ConfigError(f"defense 'weight_penalty': s must be a number, got {s!r}") from None
    if not s > 0.0 or not math.isfinite(s):
        raise ConfigError(f"defense 'weight_penalty': s (the class weight length) must be finite "
                          f"and > 0, got {s!r}")
    if matrix_norm not in MATRIX_NORMS:
        raise ConfigError(f"defense 'weight_penalty': matrix_norm must be one of "
                          f"{', '.join(map(repr, MATRIX_NORMS))}, got {matrix_norm!r}")
    if augment not in AUGMENTS:
        raise ConfigError(f"defense 'weight_penalty': augment must be '' or 'crop_flip', got {augment!r}")
    return alpha, s


@register("defense", "weight_penalty")
def weight_penalty(alpha: float = 100.0, s: float = 0.1, matrix_norm: str = "fro",
                   adversarial: bool = False, eps: float = 0.3, norm: str = "linf",
                   attack: str = "pgd:steps=40,step_size=0.01,early_stop=false",
                   warmup: float = 0.0, craft_mode: str = "eval",
                   augment: str = "") -> Callable[..., Loss]:
    """``CE + alpha * ||W W^T - Sigma||`` (Xu et al., eq. 3.8) on the model's ``head``;
    the history gets ``ce``, ``gram_gap`` (the norm, unweighted) and ``min_angle``
    (degrees). A model with K > P + 1 warns once (Theorem 1 does not apply)."""
    alpha, s = _checked(alpha, s, matrix_norm, augment)
    if not isinstance(adversarial, bool):
        raise ConfigError(f"defense 'weight_penalty': adversarial must be true or false, got {adversarial!r}")
    setup = AdversarialSetup("weight_penalty", eps, norm, warmup, craft_mode, attack) if adversarial else None
    checked: set[tuple[int, int]] = set()

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        weight = classifier_weight(model)
        if tuple(weight.shape) not in checked:
            checked.add(tuple(weight.shape))
            check_theorem(*weight.shape, stacklevel=2)
        x = inputs
        if augment:
            x = crop_flip(x, fix_generator(generator, x.device))
        if setup is not None:
            x = setup.craft(model, x, labels, generator, context)
        ce = F.cross_entropy(logits_of(model, x), labels)
        gap = gram_gap(weight, s, matrix_norm)
        return Loss(ce + alpha * gap, {"ce": ce.detach(), "gram_gap": gap.detach(),
                                       "min_angle": torch.tensor(min_pairwise_angle(weight))})

    return objective
