"""Attacks: one pure function each, one argument vocabulary (docs/design.md "Contracts").

Every registered attack is an attribute of this package under its registered name,
so ``from advgeom.attacks import pgd, apgd, square, cw_l2`` gives the functions::

    adv = pgd(model, x, y, eps=0.1, steps=20)

Names with a hyphen (``apgd-ce``, ``apgd-dlr``, ``apgd-t``) are also bound with an
underscore (``apgd_ce``), the spelling attack specs accept too. Where an attack and
its defining module share a name (``pgd``, ``apgd``, ``square`` ...), the attribute is
the function; the module stays importable by its dotted path
(``from advgeom.attacks.pgd import bim``; ``sys.modules["advgeom.attacks.pgd"]``).
Each attack's ``help()`` ends with its parameters (meaning and default) and its paper.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

from advgeom.attacks.base import AttackInfo, PassCounter
from advgeom.registry import get, import_submodules

import_submodules(__name__)

# The shared vocabulary (docs/design.md "Contracts"); an attack's own docstring overrides
# a meaning by naming the parameter as ``name``.
_VOCABULARY: dict[str, str] = {
    "model": "the classifier: any nn.Module mapping inputs in [0,1] to logits, in eval mode "
             "(normalization inside it: advgeom.models.with_normalization)",
    "inputs": "clean inputs, a float tensor in [0,1], batch first",
    "labels": "int64 class indices, one per input (the target classes when targeted=True)",
    "eps": "radius of the threat model in the ``norm``: a float or a per-sample tensor",
    "norm": "the threat model, 'linf' or 'l2' (those the attack supports)",
    "steps": "iterations per restart",
    "step_size": "step length in the norm; None = the attack's default",
    "restarts": "independent runs; per sample the worst case over runs is kept",
    "targeted": "True: ``labels`` are targets to reach instead of true classes to leave",
    "loss": "the objective the attack maximizes ('ce', 'margin', 'dlr'; those it accepts)",
    "generator": "torch.Generator, the attack's only source of randomness "
                 "(None: a fresh generator seeded with 0)",
    "counter": "a PassCounter tallying the model passes spent (None: not counted)",
    "early_stop": "True: a sample leaves the batch at its first success (changes the cost, "
                  "not the robust accuracy); False runs every step",
}


def _identifier(name: str) -> str:
    return name.replace("-", "_")


def _parameter_doc(fn: Callable[..., Any]) -> str:
    """The generated part of an attack's docstring: every parameter with its default
    and meaning (pointing to the attack's own text when it names the parameter, else
    the shared vocabulary), what the attack supports, and its module's description,
    which names the paper."""
    module = sys.modules.get(fn.__module__)
    about = inspect.getdoc(module) or "" if module is not None else ""
    own = (inspect.getdoc(fn) or "") + about
    lines = ["", "", "Parameters (defaults from the signature):"]
    for p in inspect.signature(fn).parameters.values():
        default = "required" if p.default is p.empty else f"default {p.default!r}"
        described = f"``{p.name}``" in own or f"``{p.name}=" in own
        meaning = _VOCABULARY.get(p.name, "")
        if described:
            meaning = f"{meaning}; more in the text" if meaning else f"see ``{p.name}`` in the text"
        meaning = meaning or "UNDOCUMENTED"  # tests/test_api.py fails on this
        lines.append(f"    {p.name} ({default}): {meaning}")
    meta = getattr(fn, "info", None)
    if meta is not None:
        lines.append(f"Supports norms {', '.join(meta.norms)}; losses "
                     f"{', '.join(meta.losses) or 'none (own objective)'}"
                     + ("; gradient-free" if meta.gradient_free else "")
                     + ("; minimum-norm (eps is an optional bound)" if meta.min_norm else "") + ".")
    lines.append("Returns the adversarial inputs (the best found per sample), inside the threat "
                 "model and [0,1].")
    if about:
        lines += ["", f"About {fn.__module__} (paper and algorithm):", "",
                  *(("    " + s).rstrip() for s in about.splitlines())]
    return "\n".join(lines)


def _bind() -> list[str]:
    """Bind every attack registered so far under its name (and its identifier
    spelling), documenting its parameters once; returns the identifiers."""
    from advgeom.registry import _REGISTRY  # read-only: listing without importing every package

    bound = []
    this = sys.modules[__name__]
    for name, fn in sorted(_REGISTRY["attack"].items()):
        if not getattr(fn, "_advgeom_documented", False):
            fn.__doc__ = (inspect.getdoc(fn) or "") + _parameter_doc(fn)
            fn._advgeom_documented = True
        setattr(this, name, fn)
        setattr(this, _identifier(name), fn)
        bound.append(_identifier(name))
    return bound


__all__ = sorted(_bind()) + ["AttackInfo", "PassCounter"]


def __getattr__(name: str) -> Any:
    """Attacks registered after import (outside this package) by name or identifier."""
    if name.startswith("_"):
        raise AttributeError(name)
    from advgeom.registry import names

    for registered in names("attack"):
        if name in (registered, _identifier(registered)):
            _bind()
            return get("attack", registered)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
