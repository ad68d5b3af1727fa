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

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar

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
class Range:
    """The valid values of one numeric attack option, checked when a spec is parsed
    (:func:`advgeom.attacks.spec.validate`) and when the attack is called: an integer
    (``integer``) or a finite number from ``low`` to ``high`` (``open_low``/``open_high``:
    that end excluded); ``why`` says what an edge means. ``unused``: the attack does not
    use the option and accepts only its default (issue 14: a no-op option is an error).
    ``None`` is accepted where the signature's default is ``None`` (the attack's default)."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    open_low: bool = False
    open_high: bool = False
    unused: bool = False
    why: str = ""

    def text(self) -> str:
        """The range in words: ``an integer >= 1 (0 would run no attack)``."""
        if self.unused:
            return "its default (the attack does not use it)"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            ends = (f"{lo:g}" if lo == hi else
                    f"in {'(' if self.open_low else '['}{lo:g}, {hi:g}{')' if self.open_high else ']'}")
        elif lo is not None:
            ends = f"{'>' if self.open_low else '>='} {lo:g}"
        elif hi is not None:
            ends = f"{'<' if self.open_high else '<='} {hi:g}"
        else:
            ends = ""
        what = "an integer" if self.integer else "a finite number"
        return f"{what} {ends}".rstrip() + (f" ({self.why})" if self.why else "")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the range (booleans, NaN and inf never do)."""
        if self.unused or isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        lo, hi = self.low, self.high
        return not ((lo is not None and (value < lo or (self.open_low and value == lo)))
                    or (hi is not None and (value > hi or (self.open_high and value == hi))))

    def check(self, name: str, value: Any, default: Any = None, attack: str = "") -> Any:
        """``value`` (as a float for a number range), else a one-line
        :class:`AdvgeomError` naming the range; ``default``: the signature's default
        (``None`` then passes); ``attack`` names the attack in the message."""
        if value is None and default is None:
            return None
        if self.unused:
            if value is default or (value == default and type(value) is type(default)):
                return value
            raise AdvgeomError(f"{attack or 'this attack'} does not use {name}={value!r} "
                               "(see its docstring for the options it takes)")
        if not self.contains(value):
            raise AdvgeomError(f"{attack + ' ' if attack else ''}{name} must be {self.text()}, "
                               f"got {value!r}")
        return value if self.integer else float(value)


def count(low: int, why: str = "") -> Range:
    """An integer option ``>= low``."""
    return Range(low=low, integer=True, why=why)


def number(low: float | None = None, high: float | None = None, *, open_low: bool = False,
           open_high: bool = False, why: str = "") -> Range:
    """A finite number option in the stated range."""
    return Range(low=low, high=high, open_low=open_low, open_high=open_high, why=why)


UNUSED = Range(unused=True)

# The shared vocabulary's numeric options; an attack's ``ranges`` override them.
SHARED_RANGES: dict[str, Range] = {
    "steps": count(1, "0 would run no attack"),
    "restarts": count(1),
    "step_size": number(0.0, open_low=True),
}


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
    objective (C&W, DeepFool). ``ranges``: the valid range of each numeric option
    beyond (or overriding) :data:`SHARED_RANGES`; see :meth:`option_ranges`.
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
    ranges: Mapping[str, Range] = field(default_factory=dict, hash=False)

    def option_ranges(self) -> dict[str, Range]:
        """Every numeric option's :class:`Range`: steps >= 1, restarts >= 1 and
        step_size > 0 unless the attack's ``ranges`` say otherwise."""
        return {**SHARED_RANGES, **self.ranges}

    def check(self, name: str, value: Any, default: Any = None, *, attack: str = "") -> Any:
        """``value`` checked against the range of option ``name`` (see :meth:`Range.check`)."""
        return self.option_ranges()[name].check(name, value, default, attack)


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
