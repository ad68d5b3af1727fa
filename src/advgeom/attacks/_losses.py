"""Per-sample attack losses on logits, oriented so that the attacker MAXIMIZES them.

- ``ce``: cross-entropy of the true class (targeted: minus the CE of the target).
- ``margin``: the Carlini & Wagner logit margin, ``max_{j!=y} z_j - z_y``
  (targeted: ``z_t - max_{j!=t} z_j``); positive exactly when the attack succeeds.
- ``dlr``: the Difference of Logits Ratio of Croce & Hein 2020 (AutoAttack),
  ``-(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3)``; invariant to shifting and scaling
  the logits, needs >= 3 classes. Targeted ("DLR-T"):
  ``(z_t - max_{j!=t} z_j) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, needs >= 4 classes.
  The vocabulary passes only target labels for targeted attacks, so the numerator
  uses the strongest non-target class where the paper writes the true class; the
  two coincide while the input is still classified correctly.

Models with a single logit ``s`` are lifted to two logits ``[0, s]`` by
:func:`advgeom.attacks._common.as_logits` (class 1 iff ``s > 0``), so ``ce`` and
``margin`` work for binary tasks; DLR refuses them.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from advgeom.errors import AdvgeomError

LossFn = Callable[[Tensor, Tensor], Tensor]
LOSSES = ("ce", "margin", "dlr")
_TINY = 1e-12


def _other_max(z: Tensor, y: Tensor) -> Tensor:
    """``max_{j != y} z_j`` per row."""
    return z.scatter(1, y.unsqueeze(1), float("-inf")).amax(dim=1)


def _own(z: Tensor, y: Tensor) -> Tensor:
    return z.gather(1, y.unsqueeze(1)).squeeze(1)


def ce_loss(z: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(z, y, reduction="none")


def ce_targeted(z: Tensor, t: Tensor) -> Tensor:
    return -F.cross_entropy(z, t, reduction="none")


def margin_loss(z: Tensor, y: Tensor) -> Tensor:
    return _other_max(z, y) - _own(z, y)


def margin_targeted(z: Tensor, t: Tensor) -> Tensor:
    return _own(z, t) - _other_max(z, t)


def dlr_loss(z: Tensor, y: Tensor) -> Tensor:
    top = z.topk(3, dim=1).values
    return (_other_max(z, y) - _own(z, y)) / (top[:, 0] - top[:, 2] + _TINY)


def dlr_targeted(z: Tensor, t: Tensor) -> Tensor:
    top = z.topk(4, dim=1).values
    scale = top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY
    return (_own(z, t) - _other_max(z, t)) / scale


_TABLE: dict[tuple[str, bool], LossFn] = {
    ("ce", False): ce_loss, ("ce", True): ce_targeted,
    ("margin", False): margin_loss, ("margin", True): margin_targeted,
    ("dlr", False): dlr_loss, ("dlr", True): dlr_targeted,
}


def check_loss_name(loss: str, allowed: tuple[str, ...] = LOSSES) -> None:
    """Raise AdvgeomError for an unknown or unsupported loss name."""
    if loss not in allowed:
        raise AdvgeomError(f"unknown loss {loss!r}; this attack accepts: {', '.join(allowed)}")


def get_loss(loss: str, *, targeted: bool, num_classes: int) -> LossFn:
    """The per-sample loss ``f(logits, labels) -> (N,)`` (larger = stronger attack)."""
    check_loss_name(loss)
    need = 4 if (loss == "dlr" and targeted) else 3 if loss == "dlr" else 2
    if num_classes < need:
        kind = "targeted DLR" if targeted else "DLR"
        raise AdvgeomError(
            f"the {kind} loss needs >= {need} classes, the model has {num_classes}; "
            "use loss='margin' (the logit margin) for binary or few-class tasks"
        )
    return _TABLE[(loss, bool(targeted))]


SUCCESS_MARGIN = 1e-5


def success_margin(z: Tensor) -> Tensor:
    """The logit margin a success must clear, per row: ``1e-5 * max(1, max_j |z_j|)``
    (float noise of another batch size, kernel or AMP is far below it)."""
    return SUCCESS_MARGIN * z.detach().abs().amax(dim=1).clamp_min(1.0)


def success(z: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Boolean (N,): misclassified (untargeted) or classified as the target, by a logit
    margin above :func:`success_margin`, so that an attack stopping at its first success
    returns a point past the decision boundary, not on it."""
    z = z.detach()
    m = margin_targeted(z, labels) if targeted else margin_loss(z, labels)
    return m > success_margin(z)
