"""ReLU switch analysis (sparsification-robustness.txt, Sections 3.2-3.4, Theorem 1).

A ReLU unit is a switch ``s_i(x) = 1[w_i^T x + b_i > 0]`` (the paper writes the bias
with a minus sign); a max-pool unit is a switch between its inputs. An input
perturbation ``e`` flips the switch of neuron ``i`` only if the pre-activation crosses
zero; the *high-SNR* condition ``|w_i^T x + b_i| > |w_i^T e|`` is sufficient for no flip,
and Theorem 1 says it holds for all but a vanishing fraction of the neurons when
``delta < |b_i| / ||w_i||_1 - C`` and N grows.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.errors import AdvgeomError


# --------------------------------------------------------------------------- trained models
def forward_with_hooks(model: nn.Module, x: Tensor, handles: list) -> None:
    """One gradient-free forward of ``model`` on ``x``; the hooks ``handles`` are removed
    afterwards, also when the forward fails."""
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


def switch_states(model: nn.Module, x: Tensor, *, max_pool: bool = True) -> list[Tensor]:
    """Per call of every ``nn.ReLU`` (and ``nn.MaxPool2d``) in ``model``, in execution
    order, the switch state of each unit flattened per sample: ReLU ``input > 0`` (bool),
    max-pool the argmax index inside each window (int64)."""
    states: list[Tensor] = []

    def relu_hook(_m: nn.Module, args: tuple, _out: Tensor) -> None:
        states.append((args[0] > 0).flatten(1))

    def pool_hook(m: nn.MaxPool2d, args: tuple, _out: Tensor) -> None:
        _, idx = F.max_pool2d(args[0], m.kernel_size, m.stride, m.padding, m.dilation,
                              ceil_mode=m.ceil_mode, return_indices=True)
        states.append(idx.flatten(1))

    handles = []
    for m in model.modules():
        if isinstance(m, nn.ReLU):
            handles.append(m.register_forward_hook(relu_hook))
        elif max_pool and isinstance(m, nn.MaxPool2d):
            handles.append(m.register_forward_hook(pool_hook))
    if not any(isinstance(m, nn.ReLU) for m in model.modules()):
        raise AdvgeomError("switch analysis needs nn.ReLU modules in the model (functional relu is invisible)")
    forward_with_hooks(model, x, handles)
    return states


@dataclass(frozen=True)
class SwitchFlips:
    """Flip counts per switch layer: ``flipped[j]`` (B,), ``units[j]`` units per sample."""

    flipped: list[Tensor]
    units: list[int]
    kinds: list[str]

    def fraction(self, kind: str | None = None) -> Tensor:
        """Per-sample fraction of flipped switches (over layers of ``kind``, or all)."""
        sel = [j for j, k in enumerate(self.kinds) if kind is None or k == kind]
        if not sel:
            raise AdvgeomError(f"no switch layer of kind {kind!r}")
        num = sum(self.flipped[j].double() for j in sel)
        return num / sum(self.units[j] for j in sel)

    def layer_fractions(self) -> list[float]:
        """Mean flipped fraction per switch layer."""
        return [float(f.double().mean()) / u for f, u in zip(self.flipped, self.units)]


def count_flips(model: nn.Module, x: Tensor, x_adv: Tensor, *, max_pool: bool = True) -> SwitchFlips:
    """How many ReLU / max-pool switches of ``model`` differ between ``x`` and ``x_adv``."""
    kinds = [("relu" if s.dtype == torch.bool else "maxpool")
             for s in switch_states(model, x[:1], max_pool=max_pool)]
    a = switch_states(model, x, max_pool=max_pool)
    b = switch_states(model, x_adv, max_pool=max_pool)
    flipped = [(sa != sb).sum(1) for sa, sb in zip(a, b)]
    return SwitchFlips(flipped, [s.shape[1] for s in a], kinds)


# --------------------------------------------------------------------------- one layer, Theorem 1
def flips_linear_relu(weight: Tensor, bias: Tensor, x: Tensor, e: Tensor) -> Tensor:
    """Exact flips of a layer ``relu(W x + b)``: (B, M) bool, state at x vs x + e."""
    z0 = x @ weight.T + bias
    z1 = (x + e) @ weight.T + bias
    return (z0 > 0) != (z1 > 0)


def high_snr(weight: Tensor, bias: Tensor, x: Tensor, e: Tensor) -> Tensor:
    """The per-neuron sufficient condition of Sec. 3.4, ``|W x + b| > |W e|`` (B, M)."""
    return (x @ weight.T + bias).abs() > (e @ weight.T).abs()


def high_snr_worst_case(weight: Tensor, bias: Tensor, x: Tensor, delta: float) -> Tensor:
    """The condition for every ``||e||_inf <= delta``: ``|W x + b| > delta ||w_i||_1``."""
    return (x @ weight.T + bias).abs() > delta * weight.abs().sum(1)


def random_layer(n: int, m: int, *, bias_margin: float | None, delta: float,
                 generator: torch.Generator, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Theorem 1's model: ``w_i[k]`` iid N(0, 1); biases ``|b_i| = (delta + C) ||w_i||_1``
    with random signs (Assumption 2, ``C = bias_margin``), or N(0, 1) if ``bias_margin`` is None."""
    w = torch.randn(m, n, generator=generator, dtype=dtype)
    if bias_margin is None:
        return w, torch.randn(m, generator=generator, dtype=dtype)
    sign = torch.randint(0, 2, (m,), generator=generator).to(dtype) * 2 - 1
    return w, sign * (delta + bias_margin) * w.abs().sum(1)


def random_unit_inputs(b: int, n: int, *, generator: torch.Generator,
                       dtype: torch.dtype = torch.float64) -> Tensor:
    """Inputs of Assumption 1: ``||x||_2 = 1`` with entries O(1/sqrt(N))."""
    x = torch.rand(b, n, generator=generator, dtype=dtype)
    return x / x.norm(dim=1, keepdim=True)


def theorem1_trial(n: int, m: int, delta: float, *, bias_margin: float | None, samples: int,
                   generator: torch.Generator, attack: str = "worst") -> dict[str, float]:
    """Flip fraction and high-SNR fraction ``|S|/M`` of a random layer at dimension ``n``.

    ``attack="worst"`` perturbs each neuron's input by the locally linear attack of the
    layer output ``sum_i s_i w0_i w_i`` (random ``w0``), ``"random"`` by random signs.
    """
    w, b = random_layer(n, m, bias_margin=bias_margin, delta=delta, generator=generator)
    x = random_unit_inputs(samples, n, generator=generator)
    if attack == "worst":
        w0 = torch.randn(m, generator=generator, dtype=w.dtype)
        s = ((x @ w.T + b) > 0).to(w.dtype)
        w_eq = (s * w0) @ w  # (B, N): the locally linear model of y = w0^T relu(Wx + b)
        e = delta * w_eq.sign()
    elif attack == "random":
        e = delta * (torch.randint(0, 2, x.shape, generator=generator).to(w.dtype) * 2 - 1)
    else:
        raise AdvgeomError(f"attack must be 'worst' or 'random', got {attack!r}")
    flips = flips_linear_relu(w, b, x, e)
    snr = high_snr(w, b, x, e)
    return {"n": n, "flip_fraction": float(flips.double().mean()),
            "high_snr_fraction": float(snr.double().mean()),
            "worst_case_high_snr_fraction": float(high_snr_worst_case(w, b, x, delta).double().mean())}


def flip_curve(model: nn.Module, x: Tensor, perturb, eps_list: list[float]) -> dict[str, list[float]]:
    """Mean fraction of flipped ReLU (and max-pool) switches of ``model`` at each eps,
    where ``perturb(x, eps)`` returns the perturbed inputs (an attack or random noise)."""
    out: dict[str, list[float]] = {}
    for eps in eps_list:
        flips = count_flips(model, x, perturb(x, eps))
        for kind in sorted(set(flips.kinds)):
            out.setdefault(kind, []).append(float(flips.fraction(kind).mean()))
    return out
