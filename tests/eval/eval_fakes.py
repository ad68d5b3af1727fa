"""Hand-built models and fake attacks with known outcomes for the evaluation tests.

``ThresholdModel``: class 1 iff x[:, 0] > 0.5 (two logits). Feature x[:, 1] is a
marker ``(i + 0.5) / n`` identifying sample ``i``; fake attacks read it to decide
which samples they break, so their effect is known exactly.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor, nn

from advgeom.eval import AttackSpec

N = 8


class ThresholdModel(nn.Module):
    """Logits ``[0, k (x0 - 0.5)]``; a dummy parameter gives it a device and a hash."""

    def __init__(self, k: float = 20.0) -> None:
        super().__init__()
        self.k = nn.Parameter(torch.tensor(float(k)))

    def forward(self, x: Tensor) -> Tensor:
        z = self.k * (x[:, 0] - 0.5)
        return torch.stack([torch.zeros_like(z), z], dim=1)


class RejectingThresholdModel(ThresholdModel):
    """Also abstains: accepts iff x[:, 2] > 0.5 (the rejection protocol)."""

    def predict_with_rejection(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self(x), x[:, 2] > 0.5


def marker_index(x: Tensor, n: int = N) -> list[int]:
    return [int(v) for v in (x[:, 1] * n - 0.5).round().long()]


def threshold_data(n: int = N, *, wrong: Iterable[int] = (), rejected: Iterable[int] = ()
                   ) -> tuple[Tensor, Tensor]:
    """Labels alternate 0/1; x0 sits 0.04 on the correct side (wrong side for ``wrong``),
    x2 = 0.55 (accepted) or 0.45 (``rejected``), x3 = 0.5."""
    wrong, rejected = set(wrong), set(rejected)
    y = torch.tensor([i % 2 for i in range(n)])
    x = torch.full((n, 4), 0.5)
    for i in range(n):
        side = 1.0 if y[i] == 1 else -1.0
        x[i, 0] = 0.5 + 0.04 * side * (-1.0 if i in wrong else 1.0)
        x[i, 1] = (i + 0.5) / n
        x[i, 2] = 0.45 if i in rejected else 0.55
    return x, y


def fake_attack(flip: Iterable[int] = (), toggle_accept: Iterable[int] = (), *, kind: str = "iterative",
                overstep: float = 1.0, n: int = N, calls: list | None = None) -> Callable:
    """An attack with the shared signature that moves x0 across the threshold for the
    samples in ``flip`` and x2 across 0.5 for those in ``toggle_accept``, each by
    ``overstep * eps`` (inside the linf ball when ``overstep <= 1``)."""
    flip, toggle = set(flip), set(toggle_accept)

    def attack(model, inputs, labels, *, eps, norm="linf", steps=10, step_size=None, restarts=1,
               targeted=False, loss="ce", generator=None):
        if calls is not None:
            calls.append(marker_index(inputs, n))
        adv = inputs.clone()
        for row, i in enumerate(marker_index(inputs, n)):
            if i in flip:
                adv[row, 0] += overstep * eps * (-1.0 if inputs[row, 0] > 0.5 else 1.0)
            if i in toggle:
                adv[row, 2] += overstep * eps * (-1.0 if inputs[row, 2] > 0.5 else 1.0)
        return adv

    attack.attack_kind = kind
    return attack


def spec(name: str, fn: Callable, **kwargs) -> AttackSpec:
    return AttackSpec(name, kwargs, attack=fn)
