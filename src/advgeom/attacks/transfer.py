"""Transfer (black-box) attack: adversarial examples crafted on a ``source_model``
with any registered attack and returned for evaluation on the target ``model``:
the black-box protocol of hyperspherical-defense.txt (Table 3).

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
             steps: int = 10, step_size: float | None = None, restarts: int = 1,
             targeted: bool = False, loss: str = "ce", generator: torch.Generator | None = None,
             source_model: nn.Module | None = None, attack: str = "pgd",
             attack_kwargs: dict[str, Any] | None = None,
             counter: PassCounter | None = None) -> Tensor:
    """Craft with ``attack`` (any registered name but "transfer") on ``source_model``
    using the same eps/norm/steps/step_size/restarts/targeted/loss/generator;
    ``attack_kwargs`` go to that attack only. Returns the crafted points."""
    if source_model is None:
        raise AdvgeomError("transfer needs source_model= (the model the examples are crafted on)")
    if attack == "transfer":
        raise AdvgeomError("transfer cannot use itself as the crafting attack")
    s = prepare(model, inputs, labels, info=transfer.info, eps=eps, norm=norm, loss=loss,
                targeted=targeted, steps=steps, restarts=restarts, step_size=step_size,
                counter=counter, generator=generator)
    fn = get("attack", attack)
    extra = dict(attack_kwargs or {})
    params = inspect.signature(fn).parameters
    if "counter" in params:
        extra.setdefault("counter", s.counter)
    if "early_stop" in params:  # keep pushing past the source's boundary: transfers better
        extra.setdefault("early_stop", False)
    adv = fn(source_model, inputs, labels, eps=eps, norm=norm, steps=steps,
             step_size=step_size, restarts=restarts, targeted=targeted, loss=loss,
             generator=generator, **extra)
    return finalize(s.x, adv, s.eps, norm)
