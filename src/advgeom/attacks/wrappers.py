"""Model wrappers for adaptive attacks (Athalye, Carlini & Wagner 2018; Tramer et al.
2020): BPDA for non-differentiable front ends (e.g. the wavelet top-K front end of
sparsification-robustness.txt) and EOT for randomized models. Both return an
``nn.Module`` that every attack accepts as its model.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError

Fn = Callable[[Tensor], Tensor]


class _Wrapper(nn.Module):
    """Starts in the wrapped model's mode (an attack warns if that is training)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not callable(model):
            raise AdvgeomError("the wrapped model must be callable (an nn.Module)")
        self.model = model
        self.training = bool(getattr(model, "training", False))


class BPDA(_Wrapper):
    """``forward(x) = model(front_end(x))``; the backward pass goes through
    ``approx(x)`` instead of ``front_end`` (identity by default): the straight-through
    value ``a + (front_end(x) - a).detach()`` with ``a = approx(x)``."""

    def __init__(self, model: nn.Module, front_end: Fn, approx: Fn | None = None) -> None:
        super().__init__(model)
        if not callable(front_end) or (approx is not None and not callable(approx)):
            raise AdvgeomError("front_end and approx must be callables on input batches")
        self.front_end = front_end
        self.approx = approx

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            exact = self.front_end(x)
        a = x if self.approx is None else self.approx(x)
        if exact.shape != a.shape:
            raise AdvgeomError(f"BPDA: front_end output {tuple(exact.shape)} and approx output "
                               f"{tuple(a.shape)} differ in shape")
        return self.model(a + (exact - a).detach())


class EOT(_Wrapper):
    """Expectation over transformation: the mean of ``samples`` forward passes of a
    randomized model (``average="logits"``) or the log of the mean softmax
    (``average="probs"``); gradients are the averages over those draws."""

    def __init__(self, model: nn.Module, samples: int = 10, average: str = "logits") -> None:
        super().__init__(model)
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise AdvgeomError(f"EOT samples must be an integer >= 1, got {samples!r}")
        if average not in ("logits", "probs"):
            raise AdvgeomError(f"EOT average must be 'logits' or 'probs', got {average!r}")
        self.samples = samples
        self.average = average

    def forward(self, x: Tensor) -> Tensor:
        if self.average == "logits":
            return torch.stack([self.model(x) for _ in range(self.samples)]).mean(0)
        probs = torch.stack([self.model(x).softmax(-1) for _ in range(self.samples)]).mean(0)
        return probs.clamp_min(1e-30).log()


def bpda(model: nn.Module, front_end: Fn, approx: Fn | None = None) -> nn.Module:
    """BPDA wrapper (Athalye et al. 2018): exact forward, ``approx`` (default identity)
    in the backward pass."""
    return BPDA(model, front_end, approx)


def eot(model: nn.Module, samples: int = 10, average: str = "logits") -> nn.Module:
    """EOT wrapper (Athalye et al. 2018): average over ``samples`` draws of a randomized
    model."""
    return EOT(model, samples, average)
