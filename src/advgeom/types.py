"""Shared types and the input contract of docs/design.md: images are float tensors in
[0,1] (NCHW or N x d), labels are int64 class indices, models return logits."""
from __future__ import annotations

from typing import Protocol, Union

import torch
from torch import Tensor

from advgeom.errors import AdvgeomError

Eps = Union[float, Tensor]


class Attack(Protocol):
    """The shared attack vocabulary (adv-lib style); see docs/design.md "Contracts"."""

    def __call__(
        self,
        model: torch.nn.Module,
        inputs: Tensor,
        labels: Tensor,
        *,
        eps: Eps,
        norm: str = "linf",
        steps: int = 10,
        step_size: float | None = None,
        restarts: int = 1,
        targeted: bool = False,
        loss: str = "ce",
        generator: torch.Generator | None = None,
    ) -> Tensor: ...


def check_inputs(inputs: Tensor, labels: Tensor | None = None,
                 num_classes: int | None = None, *, what: str = "inputs",
                 check_range: bool = True) -> None:
    """Raise :class:`AdvgeomError` unless ``inputs``/``labels`` meet the contract;
    ``check_range=False`` accepts finite inputs outside [0,1] (raw features)."""
    if not isinstance(inputs, Tensor):
        raise AdvgeomError(f"{what} must be a torch.Tensor, got {type(inputs).__name__}")
    if not inputs.is_floating_point():
        raise AdvgeomError(f"{what} must be floating point{' in [0,1]' * check_range}, got dtype {inputs.dtype}")
    if inputs.dim() < 2 or inputs.shape[0] == 0:
        raise AdvgeomError(f"{what} must be a non-empty batch (N, ...), got shape {tuple(inputs.shape)}")
    if not torch.isfinite(inputs).all():
        raise AdvgeomError(f"{what} contain NaN or infinite values")
    lo, hi = float(inputs.min()), float(inputs.max())
    if check_range and (lo < 0.0 or hi > 1.0):
        raise AdvgeomError(f"{what} must lie in [0,1], got range [{lo:.4g}, {hi:.4g}]")
    if labels is None:
        return
    if not isinstance(labels, Tensor) or labels.dtype not in (torch.int64, torch.int32):
        raise AdvgeomError("labels must be an int64 tensor of class indices")
    if labels.shape != inputs.shape[:1]:
        raise AdvgeomError(
            f"labels shape {tuple(labels.shape)} does not match batch size {inputs.shape[0]}"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise AdvgeomError(f"labels must be >= 0, got {int(labels.min())}")
    if num_classes is not None and labels.numel() and int(labels.max()) >= num_classes:
        raise AdvgeomError(
            f"label {int(labels.max())} out of range for a model with {num_classes} classes"
        )


def check_eps(eps: Eps, batch: int) -> None:
    """``eps`` must be a finite non-negative float or a per-sample tensor of length ``batch``."""
    if isinstance(eps, Tensor):
        if eps.dim() > 1 or (eps.dim() == 1 and eps.numel() not in (1, batch)):
            raise AdvgeomError(f"per-sample eps must have shape ({batch},), got {tuple(eps.shape)}")
        if not torch.isfinite(eps).all() or bool((eps < 0).any()):
            raise AdvgeomError("eps must be finite and >= 0")
        return
    try:
        val = float(eps)
    except (TypeError, ValueError):
        raise AdvgeomError(f"eps must be a number, got {eps!r}") from None
    if not (val >= 0.0) or val == float("inf"):
        raise AdvgeomError(f"eps must be finite and >= 0, got {eps!r}")


AUTO = "auto"


def resolve_device(device: str | torch.device = AUTO) -> str:
    """``device`` as a concrete name: ``auto`` becomes ``cuda`` when CUDA is available,
    else ``mps`` when MPS is, else ``cpu``; any other name is checked by
    :func:`check_device` and returned as given (``cuda:1`` stays ``cuda:1``). Resolved
    once per run, before anything is keyed or recorded, so a run on ``auto`` that lands
    on the CPU is the same run as one on ``cpu``."""
    if str(device) != AUTO:
        check_device(device)
        return str(device)
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, or one clear error for an unknown name or a
    device this machine lacks (``cuda`` without CUDA, ``mps`` without MPS)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise AdvgeomError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AdvgeomError(f"device {device!r}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise AdvgeomError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise AdvgeomError(f"device {device!r}: MPS is not available on this machine")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise AdvgeomError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def check_model_dtype(model: object, inputs: Tensor) -> None:
    """One clear error when a model's floating-point parameters and the inputs differ in
    dtype (torch would raise a bare RuntimeError deep inside the first layer)."""
    params = getattr(model, "parameters", None)
    if not callable(params):
        return
    for p in params():
        if p.is_floating_point():
            if p.dtype != inputs.dtype:
                raise AdvgeomError(f"the model's parameters are {p.dtype} but the inputs are "
                                   f"{inputs.dtype}: convert one (model.to({inputs.dtype}) or "
                                   f"inputs.to({p.dtype}))")
            return
