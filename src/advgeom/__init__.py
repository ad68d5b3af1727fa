"""advgeom: the geometry of adversarial robustness, five papers in one tool.

The Python API (README "Use it from Python")::

    import advgeom
    from advgeom.attacks import pgd, apgd, square      # every registered attack
    result = advgeom.evaluate(model, (x, y), "pgd:steps=20", eps=["4/255", "8/255"])
    result = advgeom.evaluate(model, loader, "pgd:steps=20", eps=0.1)  # a DataLoader, streamed
    zoo = advgeom.load_model("Carmon2019Unlabeled.pt")    # a RobustBench WideResNet file
    fast = advgeom.load_model("Wong2020Fast.pt", zoo_entry="Wong2020Fast")  # PreAct ResNet + its mean/std
    suite = advgeom.standard_suite(model, (x, y), eps=0.1)
    trained = advgeom.train.fit(advgeom.TrainConfig(objective="trades"), model=model).model

Accuracies from the API are fractions in [0,1], exact from counts
(``result.accuracy()`` = correct / n; ``f"{result.accuracy():.1%}"`` prints percent);
only printed output (the CLI, reports) and the stored rows' ``value`` show percent.

``model`` is any ``nn.Module`` mapping inputs in [0,1] to logits
(:func:`advgeom.models.with_normalization` puts a normalization inside it).
Subpackages and functions load on first use, so ``import advgeom`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from advgeom.errors import AdvgeomError as AdvgeomError  # noqa: E402
from advgeom.registry import create as create, get as get, names as names, register as register  # noqa: E402

# public name -> "module" (a subpackage) or "module:attribute", imported on first use
_LAZY: dict[str, str] = {
    "attacks": "advgeom.attacks",
    "data": "advgeom.data",
    "defenses": "advgeom.defenses",
    "eval": "advgeom.eval",
    "models": "advgeom.models",
    "results": "advgeom.results",
    "train": "advgeom.train",
    "evaluate": "advgeom.eval.runner:evaluate",
    "standard_suite": "advgeom.eval.suite:standard_suite",
    "EvalResult": "advgeom.eval.runner:EvalResult",
    "load_model": "advgeom.train.state:load_model",
    "fit": "advgeom.train.loop:fit",
    "TrainConfig": "advgeom.train.config:TrainConfig",
    "with_normalization": "advgeom.models.wrap:with_normalization",
    "ResultStore": "advgeom.results.store:ResultStore",
}

# ``eval`` stays out of ``__all__``: a star import must not shadow the builtin
__all__ = sorted(["AdvgeomError", "create", "get", "names", "register", *(n for n in _LAZY if n != "eval")])


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, _, attribute = target.partition(":")
    value = importlib.import_module(module)
    if attribute:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
