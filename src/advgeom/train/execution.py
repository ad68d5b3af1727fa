"""How a training step executes: the model's memory format and compilation
(``TrainConfig.channels_last`` / ``compile``, issue 25 "CPU training speed"), and the
check that a compiled step computes what the eager step does.

These are execution options: a step with them has the loss and weights of the plain
step within float tolerance (over a long adversarial run the two drift apart, as with
any other summation order: PGD's sign steps amplify rounding). One exception to the
values, not to the law: dropout on a 4-D channels-last activation draws the same
numbers in another memory order, so another mask (dropout after flattening, as in
small_cnn, is unchanged). ``benchmarks/train_speed.py`` measures their speed and
the equivalence. The weights always live in the eager module (the optimizer,
checkpoints and the monitor use it); a compiled module is only the callable the
objective gets, sharing those parameters.

Why the check: torch 2.13's inductor on a CPU computes wrong gradients for
Madry et al.'s MNIST CNN at batch 128 (the scatter-add decomposition of the max-pool
backward is scheduled after the kernel that reads its result: zero input gradients,
wrong convolution gradients; batch 64, or channels-last weights, are right). A
compiled run therefore compares the first step of each batch shape against the eager
step on the same batch and seeds, and stops with :class:`~advgeom.errors.ConfigError`
when they differ.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from advgeom.errors import ConfigError
from advgeom.train.config import TrainConfig

# the compiled step may differ from the eager one by float reordering, not more
LOSS_RTOL = 1e-4
GRAD_RTOL = 1e-3


def apply_memory_format(cfg: TrainConfig, model: nn.Module, device: torch.device) -> nn.Module:
    """Channels-last weights on CUDA (always) or when ``cfg.channels_last``; in place."""
    if device.type == "cuda" or cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def compiled(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` (inductor) with random ops left to eager PyTorch
    (``fallback_random``), so that dropout draws the numbers of the eager step."""
    return torch.compile(model, options={"fallback_random": True})


def step_runner(cfg: TrainConfig, model: nn.Module) -> nn.Module:
    """What the objective calls: the compiled module when ``cfg.compile``, else ``model``."""
    return compiled(model) if cfg.compile else model


def _params(model: nn.Module) -> list[Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def eager_reference(model: nn.Module, run: Callable[[nn.Module], Any],
                    device: torch.device) -> tuple[float, list[Tensor | None]]:
    """Loss and parameter gradients of ``run(model)`` (the loss, or a tuple that starts
    with it) on the eager module, leaving no trace: the global RNG, ``.grad`` and every
    buffer (BatchNorm statistics) are as before. ``run`` must seed its own generator so
    that a second call repeats it."""
    saved = [b.detach().clone() for b in model.buffers()]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        out = run(model)
        loss = out[0] if isinstance(out, tuple) else out
        params = _params(model)
        grads = torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad \
            else [None] * len(params)
    with torch.no_grad():
        for b, s in zip(model.buffers(), saved):
            b.copy_(s)
    return float(loss.detach().float()), [None if g is None else g.detach() for g in grads]


def compile_mismatch(reference: tuple[float, list[Tensor | None]], loss: Tensor,
                     model: nn.Module) -> str:
    """'' when the compiled step's loss and the gradients now in ``model``'s ``.grad``
    match the eager ``reference`` (relative to the largest gradient entry), else what
    differs."""
    ref_loss, ref_grads = reference
    got = float(loss.detach().float())
    scale = max((float(g.abs().max()) for g in ref_grads if g is not None and g.numel()), default=0.0)
    worst = 0.0
    for p, g in zip(_params(model), ref_grads):
        if (p.grad is None) != (g is None):
            return "a parameter has a gradient in one step and none in the other"
        if g is not None and g.numel():
            worst = max(worst, float((p.grad.float() - g.float()).abs().max()))
    loss_bad = not abs(got - ref_loss) <= LOSS_RTOL * max(1.0, abs(ref_loss))
    grad_bad = not worst <= GRAD_RTOL * scale + 1e-12
    if loss_bad or grad_bad:
        return (f"loss {got:.6g} compiled vs {ref_loss:.6g} eager, largest gradient difference "
                f"{worst:.3g} (largest gradient entry {scale:.3g})")
    return ""


def refuse_compiled(what: str, name: str, shape: tuple[int, ...]) -> ConfigError:
    """The error that stops a run whose compiled step differs from the eager one."""
    return ConfigError(f"compile=true: torch.compile computes another training step than eager "
                       f"PyTorch for {name} on batches of shape {shape} ({what}); this torch "
                       f"version miscompiles the model: train with compile=false")
