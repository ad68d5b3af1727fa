"""What every training objective shares: the step context, named loss terms, and the
crafting of training examples by attacks.

An objective is ``objective(model, inputs, labels, *, generator, context) -> Tensor |
Loss``: the scalar loss, or a :class:`Loss` that also carries named terms (they are
averaged into the run's history). ``context`` is the :class:`StepContext` of the
step, so objectives can follow schedules (warm-up, annealing, eps ramps).

Adversarial defenses craft examples with the model in eval mode by default
(:func:`crafting`), so no crafting pass updates BatchNorm statistics or uses dropout;
``craft_mode="train"`` crafts in training mode with the running statistics frozen.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Union

import torch
from torch import Tensor, nn

from advgeom.attacks._common import as_logits, eval_mode, frozen_norm_stats
from advgeom.attacks._geometry import check_norm
from advgeom.attacks.spec import AttackSpec, parse_attack_spec
from advgeom.errors import ConfigError

# ---------------------------------------------------------------------------
# step context and losses


@dataclass(frozen=True)
class StepContext:
    """Where training stands: ``step`` (0-based, the step being taken), its ``epoch``,
    the run's ``total`` steps and ``steps_per_epoch``."""

    step: int = 0
    epoch: int = 0
    total: int = 1
    steps_per_epoch: int = 1

    @property
    def fraction(self) -> float:
        """Share of training done before this step, in [0, 1)."""
        return self.step / max(self.total, 1)


@dataclass
class Loss:
    """A scalar ``total`` to minimize plus named ``terms`` for the history."""

    total: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


Objective = Callable[..., Union[Tensor, Loss]]


def split_loss(out: Tensor | Loss) -> tuple[Tensor, dict[str, Tensor]]:
    """``(total, terms)`` of an objective's return value."""
    if isinstance(out, Loss):
        return out.total, out.terms
    if isinstance(out, Tensor):
        return out, {}
    raise ConfigError(f"an objective must return a Tensor or Loss, got {type(out).__name__}")


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """The model's logits as (N, C >= 2): a one-logit binary model becomes ``[0, s]``."""
    return as_logits(model(x), x.shape[0])


# ---------------------------------------------------------------------------
# validation of defense options


def check_nonneg(defense: str, name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"defense {defense!r}: {name} must be a number, got {value!r}") from None
    if not v >= 0.0 or v == float("inf"):
        raise ConfigError(f"defense {defense!r}: {name} must be finite and >= 0, got {value!r}")
    return v


def check_positive(defense: str, name: str, value: Any, why: str = "") -> float:
    """``value`` as a finite number > 0, else a one-line :class:`ConfigError` (``why``:
    what 0 would do, e.g. train a natural model under an adversarial defense's name)."""
    v = check_nonneg(defense, name, value)
    if v == 0.0:
        raise ConfigError(f"defense {defense!r}: {name} must be finite and > 0, got {value!r}"
                          + (f" ({why})" if why else ""))
    return v


def check_fraction(defense: str, name: str, value: Any) -> float:
    """``value`` as a number in [0, 1], else a one-line :class:`ConfigError`."""
    v = check_nonneg(defense, name, value)
    if v > 1.0:
        raise ConfigError(f"defense {defense!r}: {name} must be in [0, 1], got {value!r}")
    return v


def check_count(defense: str, name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"defense {defense!r}: {name} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class ThreatModel:
    """The training threat model: radius ``eps`` in ``norm``, reached after a linear
    ramp over the first ``warmup`` share of training (0: the full eps from step 0)."""

    eps: float
    norm: str = "linf"
    warmup: float = 0.0

    @classmethod
    def checked(cls, defense: str, eps: Any, norm: str, warmup: Any = 0.0) -> "ThreatModel":
        eps = check_positive(defense, "eps", eps, "eps 0 crafts no adversarial example: "
                             "that is natural training, objective 'ce'")
        try:
            check_norm(norm)
        except ValueError as e:
            raise ConfigError(f"defense {defense!r}: {e}") from None
        w = check_nonneg(defense, "warmup", warmup)
        if w >= 1.0:
            raise ConfigError(f"defense {defense!r}: warmup is a share of training in [0, 1), got {w}")
        return cls(eps, norm, w)

    def at(self, context: StepContext | None) -> float:
        """The radius used at this step."""
        if context is None or self.warmup <= 0.0:
            return self.eps
        return self.eps * min(1.0, (context.fraction + 1.0 / max(context.total, 1)) / self.warmup)


# ---------------------------------------------------------------------------
# crafting


CRAFT_MODES = ("eval", "train")


def check_craft_mode(defense: str, mode: str) -> str:
    if mode not in CRAFT_MODES:
        raise ConfigError(f"defense {defense!r}: craft_mode must be 'eval' or 'train', got {mode!r}")
    return mode


@contextmanager
def crafting(model: nn.Module, mode: str = "eval") -> Iterator[None]:
    """The model as training examples are crafted: eval mode (restored afterwards), or
    training mode with every running statistic frozen."""
    ctx = eval_mode(model) if mode == "eval" else frozen_norm_stats(model)
    with ctx, torch.enable_grad(), warnings.catch_warnings():
        # crafting in training mode is this defense's explicit choice, not a mistake
        warnings.filterwarnings("ignore", message="attacking a model in training mode")
        yield


@dataclass(frozen=True)
class SpecCrafter:
    """Craft training examples with any registered attack from its spec text
    (``"pgd:steps=40,step_size=0.01,early_stop=false"``, the syntax of ``evaluate``)."""

    spec: AttackSpec

    @classmethod
    def parse(cls, defense: str, text: str) -> "SpecCrafter":
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"defense {defense!r}: attack must be an attack spec such as "
                              f"'pgd:steps=10,step_size=0.01'")
        try:
            return cls(parse_attack_spec(text))
        except ConfigError as e:
            raise ConfigError(f"defense {defense!r}: {e}") from None

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, norm: str,
                 generator: torch.Generator) -> Tensor:
        if eps <= 0.0:
            return x.detach()
        fn = self.spec.fn
        return fn(model, x, y, eps=eps, norm=norm, generator=generator,
                  **self.spec.call_kwargs()).detach()
