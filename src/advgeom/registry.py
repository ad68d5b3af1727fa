"""Name registries and one factory for every pluggable part (timm-style).

Kinds used in advgeom: ``dataset``, ``model``, ``attack``, ``defense`` (training
objectives and regularizers), ``experiment``. Registration happens at import time
of the defining module; :func:`names` imports the package of a kind first so that
listing is complete.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Iterable, Mapping, TypeVar

from advgeom.errors import AdvgeomError, ConfigError

T = TypeVar("T")

KINDS: dict[str, str] = {
    "dataset": "advgeom.data",
    "model": "advgeom.models",
    "attack": "advgeom.attacks",
    "defense": "advgeom.defenses",
    "experiment": "advgeom.experiments",
}

_REGISTRY: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}


def _check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise AdvgeomError(f"unknown registry kind {kind!r}; kinds: {', '.join(sorted(KINDS))}")


def register(kind: str, name: str) -> Callable[[T], T]:
    """Decorator registering ``obj`` under ``(kind, name)``; names are unique per kind."""
    _check_kind(kind)

    def deco(obj: T) -> T:
        table = _REGISTRY[kind]
        if name in table and table[name] is not obj:
            raise AdvgeomError(f"{kind} {name!r} is registered twice")
        table[name] = obj
        return obj

    return deco


def _populate(kind: str) -> None:
    """Import the package of ``kind``, which registers every name of that kind (each kind
    is registered in its own package: tests/test_layers.py), so listing a kind does not
    depend on what happened to be imported before."""
    importlib.import_module(KINDS[kind])


def names(kind: str) -> list[str]:
    """Sorted names registered for ``kind`` (imports the kind's package first)."""
    _check_kind(kind)
    _populate(kind)
    return sorted(_REGISTRY[kind])


def did_you_mean(name: str, choices: Iterable[str], n: int = 1) -> str:
    """``"did you mean 'x'?"`` naming the closest of ``choices`` to ``name`` (up to ``n``),
    or ``""`` when none is close: the one hint every unknown name gets."""
    close = difflib.get_close_matches(name, list(choices), n=n)
    return f"did you mean {', '.join(map(repr, close))}?" if close else ""


def get(kind: str, name: str) -> Any:
    """The registered object itself (class or function); clear error on unknown names."""
    _check_kind(kind)
    _populate(kind)
    table = _REGISTRY[kind]
    if name not in table:
        hint = did_you_mean(name, table, n=3)
        hint = f"; {hint}" if hint else ""
        raise AdvgeomError(
            f"unknown {kind} {name!r}{hint} (known: {', '.join(sorted(table)) or 'none'})"
        )
    return table[name]


def accepts(kind: str, name: str, argument: str) -> bool:
    """Whether the registered ``(kind, name)`` names the keyword ``argument`` in its
    signature (a ``**kwargs`` catch-all does not count)."""
    import inspect

    try:
        return argument in inspect.signature(get(kind, name)).parameters
    except (TypeError, ValueError):
        return False


def check_arguments(kind: str, name: str, cfg: Mapping[str, Any]) -> Any:
    """The registered object, after checking that it accepts every keyword of ``cfg``
    (nothing is built): an unknown name or argument is a clear error naming the
    accepted ones."""
    import inspect

    obj = get(kind, name)
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return obj
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        accepted = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        bad = [k for k in cfg if k not in accepted]
        if bad:
            hint = did_you_mean(bad[0], accepted)
            raise ConfigError(f"{kind} {name!r}: unknown argument {bad[0]!r}{'; ' + hint if hint else ''} "
                              f"(options: {', '.join(accepted) or 'none'})")
    return obj


def create(kind: str, name: str, **cfg: Any) -> Any:
    """Build the registered object: ``get(kind, name)(**cfg)``; unknown keyword
    arguments are a clear error naming the accepted ones."""
    return check_arguments(kind, name, cfg)(**cfg)


def import_submodules(package: str) -> None:
    """Import every public submodule of ``package`` so their ``@register`` calls run.

    Packages call this from their ``__init__`` so that adding a module is enough to
    add its registered names (no central list to edit).
    """
    import pkgutil

    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
