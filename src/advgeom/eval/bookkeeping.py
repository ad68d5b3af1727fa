"""Bookkeeping for honest, resumable evaluation: per-unit seeds, percentages, and
counting the forward/backward passes an attack spends (the content hashes that key
units live in :mod:`advgeom.hashing`)."""
from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from advgeom.seeding import derive_seed

# ---------------------------------------------------------------------------
# seeds


def unit_seed(seed: int, *parts: Any) -> int:
    """The seed of one evaluation unit: :func:`advgeom.seeding.derive_seed` of ``seed``
    and the parts (batch index, attack, eps), in its evaluation encoding."""
    return derive_seed(int(seed), *parts, joined=True)


def percent(mask: Tensor) -> float:
    """Percentage of True entries, ``count * 100 / n`` from the integer count (no float32
    mean: 5 of 8 is 62.5, 337 of 1000 is 33.7 exactly as printed); 0 for an empty mask."""
    return int(mask.sum()) * 100 / mask.numel() if mask.numel() else 0.0


# ---------------------------------------------------------------------------
# counting passes


class HookCounter:
    """Counts sample-level forward and backward passes through ``model`` while active.

    A forward pass of a batch of ``b`` inputs counts ``b``; a backward pass through
    that output (any ``autograd.grad``/``backward`` reaching it) counts ``b`` again.
    Used as a context manager around one attack call for attacks that take no
    ``counter=`` argument (advgeom's own attacks count themselves); hooks are removed
    on exit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forwards = 0
        self.backwards = 0
        self._handle: Any = None

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        out = output[0] if isinstance(output, (tuple, list)) and output else output
        if not isinstance(out, Tensor):
            return
        b = int(out.shape[0]) if out.dim() else 1
        self.forwards += b
        if out.requires_grad:
            try:
                out.register_hook(lambda g, b=b: self._count_backward(b))
            except RuntimeError:  # e.g. functorch-transformed tensors
                pass

    def _count_backward(self, b: int) -> None:
        self.backwards += b

    def __enter__(self) -> "HookCounter":
        self._handle = self.model.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


# ---------------------------------------------------------------------------
# perturbation norms


def delta_norms(inputs: Tensor, adv: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample ``(l2, linf)`` norms of ``adv - inputs`` in float64 (CPU tensors)."""
    d = (adv.detach().double() - inputs.detach().double()).flatten(1)
    return d.norm(dim=1).cpu(), d.abs().amax(dim=1).cpu()
