"""Layer-wise l_inf bounds from weight sparsity (sparsification-robustness.txt, Sec. 4).

Theorem 2: if every neuron of layer j has ``||w_ij||_1 <= gamma_j`` then an input
perturbation with ``||e||_inf <= eps`` changes the output of layer j by at most
``eps * prod_{l<=j} gamma_l`` in l_inf (Hoelder per neuron, ReLU 1-Lipschitz).

Here ``gamma_j = max_i ||w_ij||_1`` is computed for Linear layers (rows) and Conv layers
(per output channel, the l1 norm of the whole kernel: an upper bound for border neurons
whose window meets the zero padding). Between weight layers only l_inf 1-Lipschitz
maps are allowed (ReLU, max/avg pooling, flatten, dropout in eval, identity); a
normalization ``(x - mean)/std`` counts as a layer with ``gamma = max 1/std``. The model
must be a feed-forward chain whose modules are registered in execution order (as
:class:`advgeom.models.Classifier` is); anything else raises :class:`AdvgeomError`.
The measured perturbation is taken at the *output of each weight layer* (before its
activation), which the same recursion bounds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from advgeom.errors import AdvgeomError
from advgeom.analysis.switches import forward_with_hooks
from advgeom.models.base import Normalize

WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d)
ONE_LIPSCHITZ = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.MaxPool1d, nn.MaxPool2d,
                 nn.AvgPool1d, nn.AvgPool2d, nn.Flatten, nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class LayerBound:
    """One layer of Theorem 2: ``gamma``, the bound ``eps*prod gamma`` and the measured
    ``max ||e_j||_inf`` over the batch (``ratio`` = max per-sample measured/bound)."""

    name: str
    gamma: float
    bound: float
    measured: float
    ratio: float

    @property
    def holds(self) -> bool:
        return self.ratio <= 1.0 + 1e-5


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Weight layers and normalizations in order; errors on unsupported leaf modules."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, WEIGHTED) or isinstance(m, Normalize):
            out.append((name, m))
        elif not list(m.children()) and not isinstance(m, ONE_LIPSCHITZ):
            raise AdvgeomError(f"Theorem 2 bound: module {name or type(m).__name__!r} "
                               f"({type(m).__name__}) is not a supported l_inf 1-Lipschitz map")
    if not any(isinstance(m, WEIGHTED) for _, m in out):
        raise AdvgeomError("Theorem 2 bound: the model has no Linear/Conv layer")
    return out


def gamma_of(m: nn.Module) -> float:
    """``max_i ||w_i||_1`` of one layer (``max 1/std`` for a normalization)."""
    if isinstance(m, Normalize):
        return float((1.0 / m.std).abs().max())
    w = m.weight.detach()
    return float(w.abs().flatten(1).sum(1).max())


def layer_gammas(model: nn.Module) -> list[tuple[str, float]]:
    """``(name, gamma_j)`` for every layer of the chain, in order."""
    return [(name, gamma_of(m)) for name, m in _layers(model)]


def layer_outputs(model: nn.Module, x: Tensor) -> list[tuple[str, Tensor]]:
    """The output of every chain layer at ``x`` (flattened per sample), in call order."""
    layers = _layers(model)
    got: list[tuple[str, Tensor]] = []
    handles = [m.register_forward_hook(lambda _m, _a, out, n=name: got.append((n, out.flatten(1))))
               for name, m in layers]
    forward_with_hooks(model, x, handles)
    if [n for n, _ in got] != [n for n, _ in layers]:
        raise AdvgeomError("Theorem 2 bound: layers are not called once each in registration order "
                           "(not a feed-forward chain)")
    return got


def theorem2(model: nn.Module, x: Tensor, x_adv: Tensor) -> list[LayerBound]:
    """Measured layer-wise l_inf perturbations of ``x_adv - x`` against ``eps * prod gamma``,
    with ``eps`` the per-sample ``||x_adv - x||_inf``."""
    if x.shape != x_adv.shape:
        raise AdvgeomError(f"x and x_adv shapes differ: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    eps = (x_adv - x).flatten(1).abs().amax(1).double()
    clean = layer_outputs(model, x)
    pert = layer_outputs(model, x_adv)
    gammas = layer_gammas(model)
    rows, prod = [], torch.ones_like(eps)
    for (name, g), (_, a), (_, b) in zip(gammas, clean, pert):
        prod = prod * g
        bound = eps * prod
        meas = (b - a).abs().amax(1).double()
        ratio = torch.where(bound > 0, meas / bound.clamp_min(1e-300),
                            torch.where(meas > 0, torch.inf, 0.0))
        rows.append(LayerBound(name, g, float(bound.max()), float(meas.max()), float(ratio.max())))
    return rows


# --------------------------------------------------------------------------- random networks
def random_relu_network(widths: Sequence[int], *, generator: torch.Generator,
                        keep: float = 1.0, scale: float = 1.0) -> nn.Sequential:
    """A fully connected ReLU chain ``widths[0] -> ... -> widths[-1]`` with N(0, scale^2/fan_in)
    weights, a fraction ``keep`` of them nonzero (random sparsity), N(0, 0.1^2) biases;
    all drawn from ``generator``."""
    mods: list[nn.Module] = []
    for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        lin = nn.Linear(a, b)
        with torch.no_grad():
            w = torch.randn(b, a, generator=generator) * scale / a ** 0.5
            if keep < 1.0:
                w = w * (torch.rand(b, a, generator=generator) < keep)
            lin.weight.copy_(w)
            lin.bias.copy_(0.1 * torch.randn(b, generator=generator))
        mods.append(lin)
        if j + 2 < len(widths):
            mods.append(nn.ReLU())
    return nn.Sequential(*mods)
