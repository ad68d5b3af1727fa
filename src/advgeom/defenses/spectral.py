"""Spectral norm regularization and l2 projected-gradient-ascent adversarial training
(spectral-norm-adversarial-training.txt, Sections 3-4 and Theorem 1).

- ``global_snr`` (Yoshida & Miyato 2017; paper Eq. 6): ``CE + lambda/2 sum_l sigma(W_l)^2``
  over every Linear and Conv2d weight; ``sigma`` by the power method (Eq. 5) with
  persistent ``u`` vectors, one iteration per step. ``conv="reshape"`` takes a
  convolution kernel as the ``(out, in k k)`` matrix (Yoshida & Miyato's choice);
  ``conv="operator"`` the true operator norm of the convolution at the layer's input
  size (power iteration with ``conv2d`` / ``conv_transpose2d``).
- ``data_snr`` (Section 4.1): ``CE + lambda/2 ||f(x + eps v) - f(x)||^2`` (``variant="sos"``,
  Eq. 9, the paper's choice) or ``CE + lambda eps^2 / 2 (u^T J v)^2`` (``"jacobian"``,
  Eq. 8 with ``lambda~ = lambda eps^2``, so both agree in the linear regime), with
  ``(u, v)`` the dominant singular pair of the input-output Jacobian at each training
  input (``iters`` power steps, activation pattern fixed at ``x``).
- ``pga_at`` (Section 4.2): l2 projected gradient ascent (Eq. 11: uniform start in the
  ball, ``iters`` normalized-gradient steps of ``alpha``, default ``2 eps / iters``) with
  ``loss="ce"`` (train on CE of the adversarial input, Table 1) or ``"sos"`` (the
  sum-of-squares logit loss of Theorem 1: ``CE(x) + lambda/2 ||f(x) - f(x*)||^2``).

Batch norm: the power method, the penalty of ``data_snr`` and the crafting of
``pga_at`` run with the model in eval mode (running statistics; nothing updates them),
because a training-mode batch norm has no per-sample Jacobian; the CE term trains in
the model's own mode. Persistent ``u`` vectors of ``global_snr`` live in the objective,
not in checkpoints: a resumed run restarts them with ``init_iters`` power steps
(a resumed run is therefore close to, not bitwise equal to, an uninterrupted one).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from advgeom.analysis.jacobian import power_method
from advgeom.attacks._common import eval_mode
from advgeom.attacks._geometry import fix_generator
from advgeom.defenses.base import (Loss, StepContext, check_count, check_nonneg, check_positive,
                                   logits_of)
from advgeom.errors import ConfigError
from advgeom.seeding import derive_seed
from advgeom.registry import register

_TINY = 1e-12

# ---------------------------------------------------------------------------
# layer-wise spectral norms (Eq. 5)


def _normalize(t: Tensor) -> Tensor:
    return t / t.norm().clamp_min(_TINY)


class LayerOperator:
    """A weight as a linear map: ``matrix`` (Linear, reshaped conv) or a convolution
    operator at input shape ``in_shape`` (C, H, W)."""

    def __init__(self, module: nn.Module, conv: str, in_shape: tuple[int, ...] | None) -> None:
        self.module, self.as_conv = module, conv == "operator" and isinstance(module, nn.Conv2d)
        self.in_shape = in_shape
        if self.as_conv and in_shape is None:
            raise ConfigError("global_snr: conv='operator' needs the layer's input size")

    def forward(self, w: Tensor, v: Tensor) -> Tensor:
        m = self.module
        if not self.as_conv:
            return w.reshape(w.shape[0], -1) @ v
        return F.conv2d(v.reshape(1, *self.in_shape), w, None, m.stride, m.padding, m.dilation,
                        m.groups).reshape(-1)

    def adjoint(self, w: Tensor, u: Tensor) -> Tensor:
        m = self.module
        if not self.as_conv:
            return w.reshape(w.shape[0], -1).T @ u
        out_shape = conv_out_shape(m, self.in_shape)
        y = u.reshape(1, *out_shape)
        pad = [self.in_shape[1 + i] - ((out_shape[1 + i] - 1) * m.stride[i] - 2 * m.padding[i]
                                      + m.dilation[i] * (m.kernel_size[i] - 1) + 1) for i in range(2)]
        return F.conv_transpose2d(y, w, None, m.stride, m.padding, tuple(pad), m.groups,
                                  m.dilation).reshape(-1)

    def in_dim(self) -> int:
        w = self.module.weight
        return int(torch.tensor(self.in_shape).prod()) if self.as_conv else w[0].numel()


def conv_out_shape(m: nn.Conv2d, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Output (C, H, W) of ``m`` on inputs (C, H, W)."""
    hw = [(in_shape[1 + i] + 2 * m.padding[i] - m.dilation[i] * (m.kernel_size[i] - 1) - 1)
          // m.stride[i] + 1 for i in range(2)]
    return (m.out_channels, hw[0], hw[1])


def operator_sigma(op: LayerOperator, w: Tensor, v: Tensor, iters: int = 1) -> tuple[Tensor, Tensor]:
    """``iters`` power steps from ``v`` (no grad), then the differentiable ``sigma =
    u^T W v`` with ``u, v`` fixed; returns ``(sigma, v)``."""
    with torch.no_grad():
        for _ in range(iters):
            u = _normalize(op.forward(w, v))
            v = _normalize(op.adjoint(w, u))
        u = _normalize(op.forward(w, v))
    return (u * op.forward(w, v)).sum(), v


def input_shapes(model: nn.Module, x: Tensor) -> dict[nn.Module, tuple[int, ...]]:
    """Input shape (without batch) of every Conv2d of ``model`` on ``x`` (one eval pass)."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(mod: nn.Module, args: tuple) -> None:
        shapes.setdefault(mod, tuple(args[0].shape[1:]))

    hooks = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return shapes


class GlobalSNR:
    """The ``global_snr`` objective; ``state`` maps each layer to its persistent ``v``."""

    def __init__(self, lam: float, iters: int, conv: str, init_iters: int) -> None:
        self.lam, self.iters, self.conv, self.init_iters = lam, iters, conv, init_iters
        self.state: dict[nn.Module, tuple[LayerOperator, Tensor]] = {}

    def _start(self, model: nn.Module, x: Tensor) -> None:
        """Start vectors seeded by the layer's position alone, not by the step's
        generator: under torchrun every rank starts with the same vectors and, the
        weights being equal on every rank, keeps them equal."""
        shapes = input_shapes(model, x) if self.conv == "operator" else {}
        layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        for i, m in enumerate(layers):
            op = LayerOperator(m, self.conv, shapes.get(m))
            g = torch.Generator().manual_seed(derive_seed("global_snr", i))
            v = torch.randn(op.in_dim(), generator=g, dtype=m.weight.dtype).to(m.weight.device)
            _, v = operator_sigma(op, m.weight.detach(), _normalize(v), self.init_iters)
            self.state[m] = (op, v)

    def sigmas(self, model: nn.Module, x: Tensor) -> list[Tensor]:
        """One power step per layer (persistent vectors); differentiable sigmas."""
        if not self.state or next(iter(self.state)) not in set(model.modules()):
            self.state = {}
            self._start(model, x)
        out = []
        for m, (op, v) in self.state.items():
            s, v = operator_sigma(op, m.weight, v, self.iters)
            self.state[m] = (op, v)
            out.append(s)
        return out

    def __call__(self, model: nn.Module, inputs: Tensor, labels: Tensor, *,
                 generator: torch.Generator | None = None, context: StepContext | None = None) -> Loss:
        ce = F.cross_entropy(logits_of(model, inputs), labels)
        sig = self.sigmas(model, inputs)
        pen = 0.5 * torch.stack([s * s for s in sig]).sum()
        return Loss(ce + self.lam * pen, {"ce": ce.detach(), "sum_sigma2_half": pen.detach(),
                                          "max_sigma": torch.stack(sig).max().detach()})


@register("defense", "global_snr")
def global_snr(lam: float = 3e-4, iters: int = 1, conv: str = "reshape",
               init_iters: int = 50) -> Callable[..., Loss]:
    """Global spectral norm regularization (Yoshida & Miyato 2017; paper Eq. 6, Table 1:
    lambda 3e-4, one power step per update)."""
    if conv not in ("reshape", "operator"):
        raise ConfigError(f"defense 'global_snr': conv must be 'reshape' or 'operator', got {conv!r}")
    return GlobalSNR(check_nonneg("global_snr", "lam", lam), check_count("global_snr", "iters", iters),
                     conv, check_count("global_snr", "init_iters", init_iters))


# ---------------------------------------------------------------------------
# data-dependent spectral norm regularization (Eqs. 7-9)


def mode_free(model: nn.Module) -> bool:
    """Whether ``model`` computes the same function in training and eval mode (no batch
    norm, no dropout): then one forward at ``x`` serves the loss and the power method."""
    return not any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd))
                   for m in model.modules())


def data_penalty(model: nn.Module, x: Tensor, *, eps: float, iters: int, variant: str,
                 generator: torch.Generator | None,
                 graph: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Per-sample penalty ``(B,)`` before ``lambda/2``: ``||f(x + eps v) - f(x)||^2``
    (``sos``) or ``eps^2 (u^T J v)^2`` (``jacobian``), ``v`` from ``iters`` power steps
    at ``x``; also the power method's ``sigma`` (detached). Runs in eval mode.
    ``graph``: ``(x_leaf, logits at x_leaf)`` of a forward to reuse (mode-free models)."""
    with eval_mode(model):
        sigma, _, v = power_method(model, x, iters=iters, generator=generator, graph=graph)
        if variant == "sos":
            ref = graph[1] if graph is not None else logits_of(model, x)
            diff = logits_of(model, x.detach() + eps * v) - ref
            return diff.pow(2).sum(1), sigma
        xr = x.detach().requires_grad_(True)
        jv = torch.func.jvp(model, (xr,), (v,))[1]  # differentiable in the parameters
        u = (jv / jv.norm(dim=1, keepdim=True).clamp_min(_TINY)).detach()
        return (eps * (u * jv).sum(1)).pow(2), sigma


@register("defense", "data_snr")
def data_snr(lam: float = 2e-2, eps: float = 1.75, iters: int = 10,
             variant: str = "sos") -> Callable[..., Loss]:
    """Data-dependent spectral norm regularization (Section 4.1; Table 1: lambda 2e-2,
    eps 1.75, 10 power steps, the sum-of-squares variant)."""
    lam = check_nonneg("data_snr", "lam", lam)
    eps = check_positive("data_snr", "eps", eps, "the penalty is eps^2 times sigma^2: 0 is natural training")
    iters = check_count("data_snr", "iters", iters)
    if variant not in ("sos", "jacobian"):
        raise ConfigError(f"defense 'data_snr': variant must be 'sos' or 'jacobian', got {variant!r}")

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        graph = None
        if mode_free(model):  # one forward at x for the loss, the power method and f(x)
            xr = inputs.detach().requires_grad_(True)
            logits = logits_of(model, xr)
            graph = (xr, logits)
        else:
            logits = logits_of(model, inputs)
        ce = F.cross_entropy(logits, labels)
        pen, sigma = data_penalty(model, inputs, eps=eps, iters=iters, variant=variant,
                                  generator=fix_generator(generator, inputs.device), graph=graph)
        reg = 0.5 * pen.mean()
        return Loss(ce + lam * reg, {"ce": ce.detach(), "penalty": reg.detach(),
                                     "sigma": sigma.mean()})

    return objective


# ---------------------------------------------------------------------------
# l2 projected gradient ascent adversarial training (Eq. 11-12, Theorem 1)


def _ball(x: Tensor, x_adv: Tensor, eps: float, clip: bool) -> Tensor:
    d = x_adv - x
    n = d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(_TINY)
    out = x + d * (eps / n).clamp(max=1.0).reshape(-1, *([1] * (x.dim() - 1)))
    return out.clamp(0.0, 1.0) if clip else out


def pga(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, iters: int, alpha: float,
        loss: str = "ce", clip: bool = True, start: Tensor | None = None,
        generator: torch.Generator | None = None) -> Tensor:
    """l2 projected gradient ascent (Eq. 11): ``x_k = P(x_{k-1} + alpha g/||g||)`` from a
    uniform point of the ball (or ``x + start``), maximizing CE (``loss="ce"``) or
    ``1/2 ||f(x) - f(x_k)||^2`` (``"sos"``); the last iterate. ``clip``: also into [0,1]
    (off for Theorem 1, which has no box)."""
    x = x.detach()
    if start is None:
        g = fix_generator(generator, x.device)
        d = torch.randn(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
        r = torch.rand(x.shape[0], generator=g, device=g.device, dtype=x.dtype).to(x.device)
        r = r.pow(1.0 / x[0].numel()) * eps
        start = d / d.reshape(d.shape[0], -1).norm(dim=1).clamp_min(_TINY).reshape(-1, *([1] * (x.dim() - 1)))
        start = start * r.reshape(-1, *([1] * (x.dim() - 1)))
    xk = _ball(x, x + start, eps, clip)
    with torch.no_grad():
        ref = logits_of(model, x)
    for _ in range(iters):
        xk.requires_grad_(True)
        z = logits_of(model, xk)
        value = F.cross_entropy(z, y, reduction="sum") if loss == "ce" else 0.5 * (z - ref).pow(2).sum()
        (grad,) = torch.autograd.grad(value, xk)
        step = grad / grad.reshape(grad.shape[0], -1).norm(dim=1).clamp_min(_TINY).reshape(
            -1, *([1] * (x.dim() - 1)))
        xk = _ball(x, xk.detach() + alpha * step, eps, clip)
    return xk.detach()


@register("defense", "pga_at")
def pga_at(eps: float = 1.75, iters: int = 10, alpha: float | None = None, loss: str = "ce",
           lam: float = 1.0, clip: bool = True) -> Callable[..., Loss]:
    """l2 PGA adversarial training (Section 4.2; Table 1: eps 1.75, alpha 2 eps / iters,
    10 iterations). ``loss="ce"``: CE on the adversarial input; ``"sos"``: ``CE(x) +
    lambda/2 ||f(x) - f(x*)||^2`` with ``x*`` maximizing that sum of squares (Eq. 33)."""
    eps = check_positive("pga_at", "eps", eps, "0 crafts no adversarial example: natural training")
    lam = check_nonneg("pga_at", "lam", lam)
    if loss == "sos" and lam == 0.0:
        raise ConfigError("defense 'pga_at': lam must be > 0 with loss 'sos' (0 is natural training)")
    iters = check_count("pga_at", "iters", iters)
    step = 2.0 * eps / iters if alpha is None else check_positive("pga_at", "alpha", alpha,
                                                                  "0 would not move from the start")
    if loss not in ("ce", "sos"):
        raise ConfigError(f"defense 'pga_at': loss must be 'ce' or 'sos', got {loss!r}")

    def objective(model: nn.Module, inputs: Tensor, labels: Tensor, *,
                  generator: torch.Generator | None = None,
                  context: StepContext | None = None) -> Loss:
        with eval_mode(model), torch.enable_grad():
            x_adv = pga(model, inputs, labels, eps=eps, iters=iters, alpha=step, loss=loss,
                        clip=clip, generator=generator)
        if loss == "ce":
            adv = F.cross_entropy(logits_of(model, x_adv), labels)
            return Loss(adv, {"adv_ce": adv.detach()})
        ce = F.cross_entropy(logits_of(model, inputs), labels)
        with eval_mode(model):
            reg = 0.5 * (logits_of(model, x_adv) - logits_of(model, inputs)).pow(2).sum(1).mean()
        return Loss(ce + lam * reg, {"ce": ce.detach(), "sos": reg.detach()})

    return objective


# ---------------------------------------------------------------------------
# Theorem 1, numerically


def theorem1_gap(model: nn.Module, x: Tensor, *, eps: float, alpha: float, iters: int = 10,
                 v0: Tensor | None = None, generator: torch.Generator | None = None) -> float:
    """Relative difference ``||g_AT - g_SNR|| / ||g_SNR||`` of the parameter gradients of
    PGA-AT's sum-of-squares term ``1/2 ||f(x*) - f(x)||^2`` (``iters`` steps of ``alpha``
    from ``x + eps v0``, no box) and of data-dependent SNR's ``1/2 ||f(x + eps v) -
    f(x)||^2`` (``iters`` power steps from ``v0``). Theorem 1: -> 0 as ``alpha -> inf``
    while the eps-ball stays inside the activation region of ``x``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if v0 is None:
        g = fix_generator(generator, x.device)
        v0 = torch.randn(x.shape, generator=g, device=g.device, dtype=x.dtype).to(x.device)
    v0 = v0 / v0.reshape(v0.shape[0], -1).norm(dim=1).reshape(-1, *([1] * (x.dim() - 1)))
    with eval_mode(model):
        y = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)  # unused by "sos"
        with torch.enable_grad():
            x_star = pga(model, x, y, eps=eps, iters=iters, alpha=alpha, loss="sos", clip=False,
                         start=eps * v0)
        _, _, v = power_method(model, x, iters=iters, v0=v0)

        def grad(point: Tensor) -> Tensor:
            value = 0.5 * (logits_of(model, point) - logits_of(model, x)).pow(2).sum(1).mean()
            return torch.cat([t.reshape(-1) for t in torch.autograd.grad(value, params)])

        g_at, g_snr = grad(x_star), grad(x + eps * v)
    return float((g_at - g_snr).norm() / g_snr.norm().clamp_min(_TINY))
