"""Transfer (black-box) attack: adversarial examples crafted on a ``source_model``
with any registered attack and returned for evaluation on the target ``model``:
the black-box protocol of hyperspherical-defense.txt (Table 3), after Papernot et al.
2017, "Practical Black-Box Attacks against Machine Learning".

The target model is only probed once to validate the labels; the crafting passes
on the source model are counted in ``counter`` (when the named attack accepts
one). A transfer attack stronger than the white-box ones flags gradient masking.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import prepare
from advgeom.attacks._geometry import finalize
from advgeom.attacks._losses import LOSSES
from advgeom.attacks.base import PassCounter, describe
from advgeom.errors import AdvgeomError
from advgeom.registry import get, register


@register("attack", "transfer")
@describe(norms=("linf", "l2"), losses=LOSSES, transfer=True, needs=("source_model",))
def transfer(model: nn.Module, inputs: Tensor, labels: Tensor, *, eps: Any, norm: str = "linf",
             steps: int | None = None, step_size: float | None = None,
             restarts: int | None = None, targeted: bool = False, loss: str | None = None,
             generator: torch.Generator | None = None, source_model: nn.Module | None = None,
             attack: str = "pgd", attack_kwargs: dict[str, Any] | None = None,
             counter: PassCounter | None = None) -> Tensor:
    """Craft with ``attack`` (any registered name but "transfer") on ``source_model``.
    ``steps``, ``step_size``, ``restarts`` and ``loss`` mean what they mean for that
    attack and are passed on only when given (the crafting attack's defaults apply
    otherwise, and it refuses the ones it does not use); eps, norm, targeted and the
    generator always go through. ``attack_kwargs`` go to that attack only. Returns the
    crafted points."""
    if source_model is None:
        raise AdvgeomError("transfer needs source_model= (the model the examples are crafted on)")
    if attack == "transfer":
        raise AdvgeomError("transfer cannot use itself as the crafting attack")
    s = prepare(model, inputs, labels, info=transfer.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=1 if steps is None else steps,
                restarts=1 if restarts is None else restarts, step_size=step_size,
                counter=counter, generator=generator)
    fn = get("attack", attack)
    given = {k: v for k, v in (("steps", steps), ("step_size", step_size),
                               ("restarts", restarts), ("loss", loss)) if v is not None}
    extra = {**given, **(attack_kwargs or {})}
    params = inspect.signature(fn).parameters
    if "counter" in params:
        extra.setdefault("counter", s.counter)
    if "early_stop" in params:  # keep pushing past the source's boundary: transfers better
        extra.setdefault("early_stop", False)
    if targeted:
        extra["targeted"] = True
    adv = fn(source_model, inputs, labels, eps=eps, norm=norm, generator=generator, **extra)
    return finalize(s.x, adv, s.eps, norm)
