"""Public helpers shared by every attack: the pass counter that makes attack budgets
comparable, and the metadata (:class:`AttackInfo`) that each registered attack
carries so that evaluation code can ask what an attack supports.

Counting convention (:class:`PassCounter`): ``forwards``/``backwards`` count
*per-sample* model passes (a forward on a batch of 64 adds 64), ``forward_calls``/
``backward_calls`` count batched calls. A backward is a gradient w.r.t. the input
(``torch.autograd.grad``); its forward is counted separately. Attacks that work on
the not-yet-broken samples only therefore show their true, smaller cost.

Usage::

    counter = PassCounter()
    adv = get("attack", "pgd")(model, x, y, eps=0.3, counter=counter)
    counter.forwards, counter.backwards
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar

from advgeom.errors import AdvgeomError
from advgeom.registry import get

F = TypeVar("F", bound=Callable[..., Any])

# ----------------------------------------------------------------------------- counting


@dataclass
class PassCounter:
    """Running tally of model passes spent by attacks (pass one via ``counter=``)."""

    forwards: int = 0
    backwards: int = 0
    forward_calls: int = 0
    backward_calls: int = 0

    def add_forward(self, batch: int) -> None:
        self.forwards += int(batch)
        self.forward_calls += 1

    def add_backward(self, batch: int) -> None:
        self.backwards += int(batch)
        self.backward_calls += 1

    @property
    def passes(self) -> int:
        """Forward plus backward sample-passes (a backward costs about two forwards)."""
        return self.forwards + self.backwards

    def reset(self) -> None:
        self.forwards = self.backwards = self.forward_calls = self.backward_calls = 0


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class AttackInfo:
    """What an attack supports.

    ``norms``: threat models it accepts (first = default). ``min_norm``: it looks for
    the smallest successful perturbation and ``eps`` is only an optional bound
    (``eps=inf`` allowed). ``gradient_free``: uses model outputs only. ``single_step``:
    one gradient step (for the "iterative >= single-step" sanity check).
    ``targeted``: accepts ``targeted=True``. ``losses``: accepted ``loss=`` values.
    ``needs``: extra keyword arguments that must be given (e.g. ``source_model``).
    ``uses_loss``: False when ``loss`` is validated but the attack has its own
    objective (C&W, DeepFool).
    """

    norms: tuple[str, ...] = ("linf",)
    losses: tuple[str, ...] = ("ce",)
    min_norm: bool = False
    gradient_free: bool = False
    single_step: bool = False
    targeted: bool = True
    transfer: bool = False
    needs: tuple[str, ...] = field(default_factory=tuple)
    uses_loss: bool = True


def describe(**kw: Any) -> Callable[[F], F]:
    """Decorator attaching an :class:`AttackInfo` as ``fn.info``."""
    meta = AttackInfo(**kw)

    def deco(fn: F) -> F:
        fn.info = meta  # type: ignore[attr-defined]
        return fn

    return deco


def info(name: str) -> AttackInfo:
    """The :class:`AttackInfo` of registered attack ``name``."""
    fn = get("attack", name)
    meta = getattr(fn, "info", None)
    if meta is None:
        raise AdvgeomError(f"attack {name!r} carries no AttackInfo")
    return meta
