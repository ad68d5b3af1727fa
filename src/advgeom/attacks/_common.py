"""Plumbing every attack shares: argument validation, the eval-mode warning, the
counted forward (with binary one-logit models lifted to two logits), input
gradients through ``torch.autograd.grad`` only, and best-iterate tracking.

Contracts (docs/design.md "Contracts"): attacks never touch parameter ``.grad`` and
never change ``model.training``; they warn when the model is in training mode.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from advgeom.attacks._geometry import bview, check_norm, fix_generator
from advgeom.attacks._losses import LossFn, check_loss_name, get_loss, success
from advgeom.attacks.base import AttackInfo, PassCounter
from advgeom.errors import AdvgeomError, one_line
from advgeom.logits import two_logits
from advgeom.types import check_eps, check_inputs, check_model_dtype

# ----------------------------------------------------------------------------- forward / grad


def as_logits(out: Any, batch: int) -> Tensor:
    """Model output as (N, C) logits with C >= 2; one logit ``s`` becomes ``[0, s]``."""
    if not isinstance(out, Tensor):
        raise AdvgeomError(
            f"attacks need a model returning a logits tensor, got {type(out).__name__}")
    if out.dim() == 1:
        out = out.unsqueeze(1)
    if out.dim() != 2 or out.shape[0] != batch:
        raise AdvgeomError(
            f"model output must have shape (N, classes) with N={batch}, got {tuple(out.shape)}")
    return two_logits(out)


def probe_logits(model: Any, x1: Tensor) -> Tensor:
    """The logits of one input, checked once per attack call: a model that cannot read
    the inputs' shape, or returns integer or non-finite logits, is one clear error (the
    attack would otherwise fail deep in torch, or score NaN as class 0)."""
    try:
        out = model(x1)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as e:
        first = one_line(e)[:200] or type(e).__name__
        raise AdvgeomError(f"the model cannot read inputs of shape {tuple(x1.shape[1:])}: {first}") from None
    z = as_logits(out, x1.shape[0])
    if not z.is_floating_point():
        raise AdvgeomError(f"the model must return floating-point logits, got {z.dtype}")
    if not bool(torch.isfinite(z).all()):
        raise AdvgeomError("the model returned non-finite logits (NaN or inf) on the first input")
    return z


def norm_stat_layers(model: Any) -> list[nn.Module]:
    """Normalization layers of ``model`` that keep running statistics (BatchNorm & co.)."""
    if not isinstance(model, nn.Module):
        return []
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats]


@contextmanager
def frozen_norm_stats(model: Any) -> Iterator[None]:
    """Run the body without changing any running statistic of ``model``: the buffers of
    every BatchNorm-like layer in training mode are saved and written back afterwards
    (in eval mode nothing changes them, and nothing is copied)."""
    layers = [m for m in norm_stat_layers(model) if m.training]
    saved = [(m, {k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None})
             for m in layers]
    try:
        yield
    finally:
        with torch.no_grad():  # through .data: no version bump, so a pending backward
            for m, bufs in saved:  # through the batch-norm (training mode) still works
                for k, v in bufs.items():
                    getattr(m, k).data.copy_(v)


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """``model.eval()`` for the body, then the previous mode of every submodule back."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


class Forward:
    """``model`` called on a batch, counted in ``counter``, returning lifted logits.

    A model left in training mode keeps its BatchNorm running statistics: no attack
    forward may change them (docs/design.md "Contracts")."""

    def __init__(self, model: nn.Module, counter: PassCounter) -> None:
        self.model = model
        self.counter = counter
        self.guard = bool(isinstance(model, nn.Module) and model.training
                          and norm_stat_layers(model))

    def __call__(self, x: Tensor) -> Tensor:
        if self.guard:
            with frozen_norm_stats(self.model):
                out = self.model(x)
        else:
            out = self.model(x)
        self.counter.add_forward(x.shape[0])
        return as_logits(out, x.shape[0])


def input_grad(loss: Tensor, x: Tensor, counter: PassCounter) -> Tensor:
    """Gradient of ``loss.sum()`` w.r.t. the input ``x`` only (parameters untouched)."""
    counter.add_backward(x.shape[0])
    if not loss.requires_grad:
        return torch.zeros_like(x)
    (g,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if g is None else g


# ----------------------------------------------------------------------------- validation


def warn_if_training(model: nn.Module) -> None:
    if getattr(model, "training", False):
        warnings.warn("attacking a model in training mode (dropout/batch-norm active); "
                      "call model.eval() first — the attack leaves the mode unchanged",
                      UserWarning, stacklevel=3)


def as_eps(eps: Any, x: Tensor, *, allow_inf: bool = False) -> Tensor:
    """``eps`` (float or per-sample tensor) as a (N,) tensor on ``x``'s device/dtype."""
    n = x.shape[0]
    if allow_inf:
        val = eps.detach().to(torch.float64) if isinstance(eps, Tensor) else None
        if val is None:
            try:
                val = torch.tensor(float(eps), dtype=torch.float64)
            except (TypeError, ValueError):
                raise AdvgeomError(f"eps must be a number, got {eps!r}") from None
        if val.dim() > 1 or (val.dim() == 1 and val.numel() not in (1, n)):
            raise AdvgeomError(f"per-sample eps must have shape ({n},), got {tuple(val.shape)}")
        if bool(torch.isnan(val).any()) or bool((val < 0).any()):
            raise AdvgeomError("eps must be >= 0 (inf means unbounded)")
    else:
        check_eps(eps, n)
    e = eps.detach() if isinstance(eps, Tensor) else torch.tensor(float(eps), dtype=torch.float64)
    return e.to(device=x.device, dtype=x.dtype).reshape(-1).expand(n).clone()


def check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AdvgeomError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_positive(name: str, value: Any) -> float:
    """``value`` as a positive finite float, else :class:`AdvgeomError`."""
    return check_number(name, value, low=0.0, open_low=True)


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 open_low: bool = False, open_high: bool = False) -> float:
    """``value`` as a finite float in the stated range, else :class:`AdvgeomError`
    (NaN, inf, booleans and strings are refused: an option that would make an attack a
    no-op must be an error, never a silently "robust" number)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    val = float(value) if ok else math.nan
    if ok and math.isfinite(val):
        ok = not ((low is not None and (val < low or (open_low and val == low)))
                  or (high is not None and (val > high or (open_high and val == high))))
    else:
        ok = False
    if not ok:
        lo = "" if low is None else ("(" if open_low else "[") + f"{low:g}"
        hi = "" if high is None else f"{high:g}" + (")" if open_high else "]")
        where = f" in {lo or '(-inf'}, {hi or 'inf)'}" if (lo or hi) else ""
        raise AdvgeomError(f"{name} must be a finite number{where}, got {value!r}")
    return val


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool (``targeted="maybe"`` is an error, not True)."""
    if not isinstance(value, bool):
        raise AdvgeomError(f"{name} must be true or false, got {value!r}")
    return value


def refuse_unused(attack: str, **given: tuple[Any, Any]) -> None:
    """Raise :class:`AdvgeomError` for every shared-vocabulary option ``attack`` does not
    use that was given a value other than its no-op default: ``name=(value, default)``
    (``deepfool:loss=dlr`` is an error, not a silently ignored option)."""
    bad = [f"{k}={v!r}" for k, (v, default) in given.items()
           if not (v is default or (v == default and type(v) is type(default)))]
    if bad:
        raise AdvgeomError(f"{attack} does not use {', '.join(bad)} "
                           "(see its docstring for the options it takes)")


@dataclass
class Setup:
    """Validated attack inputs: detached ``x``, int64 ``y``, per-sample ``eps`` (N,),
    the counted forward, the loss, the number of classes and the generator."""

    x: Tensor
    y: Tensor
    eps: Tensor
    forward: Forward
    counter: PassCounter
    num_classes: int
    loss_fn: LossFn | None
    generator: torch.Generator


def prepare(model: nn.Module, inputs: Tensor, labels: Tensor, *, info: AttackInfo,
            eps: Any, norm: str, loss: str | None, targeted: bool, steps: int = 1,
            restarts: int = 1, step_size: Any = None, counter: PassCounter | None = None,
            generator: torch.Generator | None = None) -> Setup:
    """Validate everything an attack receives and probe the model's output once.

    Raises :class:`AdvgeomError` for bad images, labels, eps, norm, loss, step
    counts (the ranges of ``info``: :meth:`AttackInfo.option_ranges`) or a model
    whose output does not match the labels.
    """
    if not isinstance(model, nn.Module) and not callable(model):
        raise AdvgeomError("model must be a torch.nn.Module (or callable) returning logits")
    check_inputs(inputs, labels)
    check_model_dtype(model, inputs)
    check_norm(norm, info.norms)
    if loss is not None:
        check_loss_name(loss, info.losses)
    check_bool("targeted", targeted)
    if targeted and not info.targeted:
        raise AdvgeomError("this attack has no targeted mode")
    ranges = info.option_ranges()
    for key, value in (("steps", steps), ("restarts", restarts), ("step_size", step_size)):
        if not ranges[key].unused:  # an unused option is refused by the attack (refuse_unused)
            ranges[key].check(key, value)
    e = as_eps(eps, inputs, allow_inf=info.min_norm)
    warn_if_training(model)
    counter = counter if counter is not None else PassCounter()
    x = inputs.detach().clone()
    y = labels.detach().to(torch.int64)
    fwd = Forward(model, counter)
    with torch.no_grad(), eval_mode(model):  # a shape probe: no statistics, any batch size
        num_classes = probe_logits(model, x[:1]).shape[1]
    counter.add_forward(1)
    if int(y.max()) >= num_classes:
        raise AdvgeomError(
            f"label {int(y.max())} out of range for a model with {num_classes} classes"
            + (" (one logit = binary: labels 0/1)" if num_classes == 2 else ""))
    loss_fn = get_loss(loss, targeted=targeted, num_classes=num_classes) if loss else None
    gen = fix_generator(generator, x.device)
    return Setup(x, y, e, fwd, counter, num_classes, loss_fn, gen)


def default_step(step_size: Any, eps: Tensor, scale: float) -> Tensor:
    """Per-sample step size: the given one, else ``scale * eps``."""
    if step_size is None:
        return eps * scale
    return torch.full_like(eps, float(step_size))


# ----------------------------------------------------------------------------- best iterate


def copy_rows_(dst: Tensor, src: Tensor, mask: Tensor) -> Tensor:
    """``dst[i] = src[i]`` where ``mask[i]``, in place. On the CPU only the chosen rows
    are copied (``index_copy_``; usually few, and a host sync costs nothing there);
    elsewhere one ``torch.where`` (no host synchronisation)."""
    if dst.device.type == "cpu":
        rows = mask.nonzero().squeeze(1)
        if rows.numel():
            dst.index_copy_(0, rows, src.index_select(0, rows))
        return dst
    return torch.where(bview(mask, dst), src, dst, out=dst)


class BestTracker:
    """Per sample, the successful point if any iterate succeeded, else the one of
    highest loss; among successful points the one of highest loss.

    ``broken`` is True once ANY tracked iterate succeeded (the returned point is then
    a successful one). Off the CPU, no host synchronisation (:func:`copy_rows_`).
    """

    def __init__(self, x: Tensor) -> None:
        self.x = x.clone()
        self.loss = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
        self.broken = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)

    def update(self, x: Tensor, loss: Tensor, succ: Tensor) -> None:
        loss = loss.detach().to(self.loss.dtype)
        upd = (succ & ~self.broken) | ((succ == self.broken) & (loss > self.loss))
        copy_rows_(self.x, x.detach(), upd)  # in place: no new buffer
        self.loss = torch.where(upd, loss, self.loss)
        self.broken = self.broken | succ

    def update_at(self, idx: Tensor, x: Tensor, loss: Tensor, succ: Tensor) -> None:
        """``update`` on the samples ``idx`` only (``x``, ``loss``, ``succ`` for those)."""
        loss = loss.detach().to(self.loss.dtype)
        b, best, xs = self.broken[idx], self.loss[idx], self.x[idx]
        upd = (succ & ~b) | ((succ == b) & (loss > best))
        self.x[idx] = torch.where(bview(upd, xs), x.detach(), xs)
        self.loss[idx] = torch.where(upd, loss, best)
        self.broken[idx] = b | succ

    def merge(self, idx: Tensor, other: "BestTracker") -> None:
        """Fold in a run on the subset ``idx`` (restarts keep the worst case)."""
        self.update_at(idx, other.x, other.loss, other.broken)


@torch.no_grad()
def score_final(fwd: Forward, best: BestTracker, x_adv: Tensor, y: Tensor, loss_fn: LossFn,
                succ_labels: Tensor, targeted: bool) -> None:
    """Feed the last iterate to ``best``, forwarding only the samples not yet broken:
    a broken sample already holds a successful point (one host sync)."""
    idx = remaining(best)
    if idx.numel() == x_adv.shape[0]:
        z = fwd(x_adv)
        best.update(x_adv, loss_fn(z, y), success_of(z, succ_labels, targeted))
    elif idx.numel():
        xs = x_adv[idx]
        z = fwd(xs)
        best.update_at(idx, xs, loss_fn(z, y[idx]), success_of(z, succ_labels[idx], targeted))


def remaining(tracker: BestTracker) -> Tensor:
    """Indices of samples not yet broken."""
    return (~tracker.broken).nonzero().squeeze(1)


def success_of(z: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    return success(z, labels, targeted)
