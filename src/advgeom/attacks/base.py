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

import functools
import inspect
import math
import warnings
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
    objective (C&W, DeepFool). ``rejection_aware``: on a model that can reject
    (:mod:`advgeom.eval.rejection`) it seeks points that are misclassified AND accepted
    (the unbounded check of a rejecting model runs these). ``ranges``: the valid range of each numeric option
    beyond (or overriding) :data:`SHARED_RANGES`; see :meth:`option_ranges`. ``extra_runs``:
    budget options that each add that many runs of ``steps`` after the restarts (the
    geodesic attack's guides and targets) instead of multiplying them.
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
    rejection_aware: bool = False
    extra_runs: tuple[str, ...] = field(default_factory=tuple)
    ranges: Mapping[str, Range] = field(default_factory=dict, hash=False)

    def option_ranges(self) -> dict[str, Range]:
        """Every numeric option's :class:`Range`: steps >= 1, restarts >= 1 and
        step_size > 0 unless the attack's ``ranges`` say otherwise."""
        return {**SHARED_RANGES, **self.ranges}

    def check(self, name: str, value: Any, default: Any = None, *, attack: str = "") -> Any:
        """``value`` checked against the range of option ``name`` (see :meth:`Range.check`)."""
        return self.option_ranges()[name].check(name, value, default, attack)


def describe(**kw: Any) -> Callable[[F], F]:
    """Decorator attaching an :class:`AttackInfo` as ``fn.info`` and reading the shared
    vocabulary's spellings the same way for every attack (:func:`shared_arguments`):
    the decorated attack is a thin wrapper whose ``inspect.signature`` is ``fn``'s."""
    meta = AttackInfo(**kw)

    def deco(fn: F) -> F:
        params = inspect.signature(fn).parameters
        param = params.get("norm")
        default_norm = None if param is None or param.default is param.empty else param.default
        foreign = {k: v for k, v in FOREIGN_NAMES.items() if k not in params}

        @functools.wraps(fn)
        def attack(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **shared_arguments(fn.__name__, kwargs, default_norm, foreign))

        attack.info = meta  # type: ignore[attr-defined]
        return attack  # type: ignore[return-value]

    return deco


# torchattacks / foolbox spellings of the shared vocabulary's options, refused by name
FOREIGN_NAMES: dict[str, str] = {"alpha": "step_size", "epsilon": "eps", "iters": "steps",
                                 "nb_iter": "steps", "random_restarts": "restarts"}


def canonical_norm(norm: Any) -> Any:
    """A norm name in the vocabulary's spelling: ``"Linf"``, ``"LINF"`` -> ``"linf"``,
    ``"L2"`` -> ``"l2"`` (anything else is returned as given, for the attack to refuse)."""
    return norm.strip().lower() if isinstance(norm, str) else norm


def shared_arguments(attack: str, kwargs: dict[str, Any], default_norm: str | None,
                     foreign: Mapping[str, str] = FOREIGN_NAMES) -> dict[str, Any]:
    """An attack's keyword arguments in the vocabulary's own spelling, for every attack
    alike: ``eps`` given as text (``"8/255"``, read by the attack-spec parser as on the
    command line) becomes a float, a norm name is lower-cased, another library's name of
    an option (``alpha=``, torchattacks' step) is one clear error naming advgeom's, and a
    linf ``eps`` above 1 (on [0,1] inputs the whole box: ``eps=8`` usually meant 8/255)
    gives a ``UserWarning``. l2 radii above 1 are normal and pass silently. ``foreign``:
    the other libraries' names this attack does not take itself."""
    for theirs, ours in foreign.items():
        if theirs in kwargs:
            raise AdvgeomError(f"{attack} has no option {theirs}= (another library's name): "
                               f"advgeom calls it {ours}=")
    out = dict(kwargs)
    if isinstance(out.get("eps"), str):
        from advgeom.attacks.spec import parse_number

        out["eps"] = parse_number(out["eps"], "eps")
    if "norm" in out:
        out["norm"] = canonical_norm(out["norm"])
    if out.get("norm", default_norm) == "linf" and _above_one(out.get("eps")):
        warnings.warn(f"{attack}: linf eps {_eps_text(out['eps'])} exceeds 1, the whole [0,1] box; "
                      "an eps in pixel levels (8) means its fraction (8/255)", UserWarning,
                      stacklevel=3)
    return out


def _above_one(eps: Any) -> bool:
    """Whether a finite eps (a number or any entry of a tensor) exceeds 1."""
    if isinstance(eps, bool) or eps is None:
        return False
    if isinstance(eps, (int, float)):
        return math.isfinite(eps) and eps > 1
    import torch

    if isinstance(eps, torch.Tensor) and eps.numel():
        e = eps.detach().double()
        return bool(((e > 1) & torch.isfinite(e)).any())
    return False


def _eps_text(eps: Any) -> str:
    return f"{eps:g}" if isinstance(eps, (int, float)) else "(an entry of the per-sample eps)"


def info(name: str) -> AttackInfo:
    """The :class:`AttackInfo` of registered attack ``name``."""
    fn = get("attack", name)
    meta = getattr(fn, "info", None)
    if meta is None:
        raise AdvgeomError(f"attack {name!r} carries no AttackInfo")
    return meta
