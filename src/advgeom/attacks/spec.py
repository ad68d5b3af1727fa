"""Attack specifications, part of the attacks' vocabulary and parsed beside their registry:
``"pgd"``, ``"apgd-dlr"``, ``"pgd:steps=100,step_size=0.01,loss=margin"``.

A spec names a registered attack plus keyword arguments for it. ``eps``, ``norm`` and
``generator`` are set by the evaluator and cannot appear in a spec. Keyword names are
checked against the attack function's signature (``inspect``), so a typo is an error,
not a silently ignored option.
"""
from __future__ import annotations

import difflib
import inspect
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from advgeom.config import parse_value
from advgeom.errors import AdvgeomError, ConfigError
from advgeom.hashing import state_hash
from advgeom.registry import get, names

# Set by the evaluator for every attack call; a spec may not override them.
RESERVED = ("eps", "norm", "generator", "counter")

# Short names that expand to a registered attack plus fixed arguments, used when the
# name itself is not registered (the attack package may register some of them directly).
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "apgd-ce": ("apgd", {"loss": "ce"}),
    "apgd-dlr": ("apgd", {"loss": "dlr"}),
    "apgd-t": ("apgd", {"targeted": True, "loss": "dlr"}),
    "pgd-margin": ("pgd", {"loss": "margin"}),
    "pgd-dlr": ("pgd", {"loss": "dlr"}),
}


# The kind of an attack by registered name, for attacks whose function declares neither
# ``info`` nor ``attack_kind``; the evaluator's checks compare kinds.
KINDS: dict[str, str] = {
    "fgsm": "single_step", "fgm": "single_step",
    "pgd": "iterative", "bim": "iterative", "apgd": "iterative", "mifgsm": "iterative",
    "multi_target": "iterative", "apgd-ce": "iterative", "apgd-dlr": "iterative",
    "apgd-t": "iterative", "pgd-margin": "iterative", "pgd-dlr": "iterative",
    "deepfool": "min_norm", "cw_l2": "min_norm",
    "square": "black_box", "transfer": "transfer",
}

# ---------------------------------------------------------------------------
# the spec


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack ``name`` with keyword arguments ``kwargs``.

    ``label`` is how the attack appears in result rows and reports; by default the
    canonical spec string (``name`` or ``name:k=v,...`` with sorted keys). ``attack``
    may give the function itself (an unregistered, user-defined attack with the shared
    signature); ``name`` then only labels it. Such a function may declare
    ``attack_kind`` (see :attr:`kind`) for the sanity checks.
    """

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    attack: Callable[..., Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not isinstance(self.kwargs, Mapping):
            raise ConfigError(f"AttackSpec(name, kwargs): a name and a dict of options, got "
                              f"{type(self.name).__name__} and {type(self.kwargs).__name__} (text such as "
                              "'pgd:steps=3' goes through parse_attack_spec)")
        if not self.label:
            object.__setattr__(self, "label", canonical(self.name, self.kwargs))

    def __hash__(self) -> int:  # kwargs is a dict; hash the canonical text instead
        return hash((self.name, self.label, _stable_text(self.kwargs)))

    @property
    def fn(self) -> Callable[..., Any]:
        """The attack function (given, or registered after alias expansion)."""
        return self.attack if self.attack is not None else resolve(self.name)[0]

    @property
    def base_name(self) -> str:
        """The registered name the spec resolves to (``apgd`` for ``apgd-dlr``)."""
        return self.name if self.attack is not None else resolve(self.name)[2]

    def accepts(self, keyword: str) -> bool:
        """Whether the attack function takes ``keyword`` (e.g. ``counter``)."""
        params = inspect.signature(self.fn).parameters
        return keyword in params or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                        for p in params.values())

    @property
    def kind(self) -> str:
        """``single_step``/``iterative``/``min_norm``/``black_box``/``transfer``/``unknown``,
        from the attack's ``info`` (``AttackInfo``) or its registered name."""
        declared = getattr(self.fn, "attack_kind", None)
        if declared:
            return str(declared)
        info = getattr(self.fn, "info", None)
        if info is None:
            return KINDS.get(self.base_name, "unknown")
        if getattr(info, "transfer", False):
            return "transfer"
        if getattr(info, "gradient_free", False):
            return "black_box"
        if getattr(info, "single_step", False):
            return "single_step"
        if getattr(info, "min_norm", False):
            return "min_norm"
        return "iterative"

    @property
    def loss(self) -> str | None:
        """The loss the attack will use (spec, alias or the function's default)."""
        kw = self.call_kwargs()
        if "loss" in kw:
            return str(kw["loss"])
        p = inspect.signature(self.fn).parameters.get("loss")
        return None if p is None or p.default is inspect.Parameter.empty else str(p.default)

    def call_kwargs(self) -> dict[str, Any]:
        """Alias defaults merged with the spec's own kwargs (spec wins)."""
        if self.attack is not None:
            return dict(self.kwargs)
        return {**resolve(self.name)[1], **self.kwargs}

    def fingerprint(self) -> str:
        """Stable text identifying the spec (modules in kwargs by their weights)."""
        fn = "" if self.attack is None else f"|{self.attack.__module__}.{self.attack.__qualname__}"
        return f"{self.name}|{_stable_text(self.kwargs)}{fn}"


def canonical(name: str, kwargs: dict[str, Any]) -> str:
    """``name`` or ``name:k=v,...`` with sorted keys (values as TOML-ish text)."""
    if not kwargs:
        return name
    return name + ":" + ",".join(f"{k}={_value_text(v)}" for k, v in sorted(kwargs.items()))


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float, str)) or v is None:
        return str(v)
    return type(v).__name__


def _stable_text(kwargs: dict[str, Any]) -> str:
    import torch

    def conv(v: Any) -> Any:
        if isinstance(v, torch.nn.Module):
            return f"<{type(v).__name__}:{state_hash(v)[:16]}>"
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (bool, int, float, str)) or v is None:
            return v
        return f"<{type(v).__module__}.{type(v).__qualname__}>"

    return json.dumps(conv(kwargs), sort_keys=True, default=str)


# ---------------------------------------------------------------------------
# resolution and validation


def resolve(name: str) -> tuple[Callable[..., Any], dict[str, Any], str]:
    """``(function, alias kwargs, registered name)`` for an attack name or alias."""
    known = names("attack")
    if name in known:
        return get("attack", name), {}, name
    if name in ALIASES and ALIASES[name][0] in known:
        base, extra = ALIASES[name]
        return get("attack", base), dict(extra), base
    for variant in (name.replace("-", "_"), name.replace("_", "-")):  # cw-l2 = cw_l2
        if variant != name and (variant in known or variant in ALIASES):
            return resolve(variant)
    choices = sorted(set(known) | {a for a, (b, _) in ALIASES.items() if b in known})
    close = difflib.get_close_matches(name, choices, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ConfigError(f"unknown attack {name!r}{hint} (known: {', '.join(choices) or 'none'})")


def validate(spec: AttackSpec) -> AttackSpec:
    """Check that the attack exists and accepts every keyword of the spec."""
    if spec.attack is not None:
        if not callable(spec.attack):
            raise ConfigError(f"attack {spec.name!r}: {spec.attack!r} is not callable")
        fn, alias_kwargs = spec.attack, {}
    else:
        fn, alias_kwargs, _ = resolve(spec.name)
    bad = [k for k in spec.kwargs if k in RESERVED]
    if bad:
        raise ConfigError(f"attack {spec.label!r}: {', '.join(bad)} set by the evaluator, "
                          f"not in the attack spec")
    missing = [k for k in getattr(getattr(fn, "info", None), "needs", ())
               if k not in spec.kwargs and k not in alias_kwargs]
    if missing:
        raise ConfigError(f"attack {spec.name!r} needs {', '.join(missing)}, which only the Python API "
                          f"can pass (AttackSpec({spec.name!r}, {{...}})), not the command line")
    for k in getattr(getattr(fn, "info", None), "needs", ()):
        if isinstance(spec.kwargs.get(k), (str, int, float, bool)):   # text from a command line
            raise ConfigError(f"attack {spec.label!r}: {k} must be an object passed from Python, "
                              f"got {spec.kwargs[k]!r}")
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return spec
    accepted = [n for n, p in params.items()
                if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                and n not in ("model", "inputs", "labels", *RESERVED)]
    for key in {**alias_kwargs, **spec.kwargs}:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"attack {spec.name!r} has no option {key!r}{hint}; "
                              f"options: {', '.join(accepted)}")
    for key, value in spec.kwargs.items():
        _check_type(spec, key, value, params[key].default)
        _check_range(spec, fn, key, value, params[key].default)
    losses = getattr(getattr(fn, "info", None), "losses", None)
    if "loss" in spec.kwargs and losses and spec.kwargs["loss"] not in losses:
        # checked here, not only when the attack first runs (a run where every point is
        # already misclassified would never call it and store rows under a bad name)
        raise ConfigError(f"attack {spec.label!r}: unknown loss {spec.kwargs['loss']!r}; "
                          f"this attack accepts: {', '.join(losses)}")
    if {**alias_kwargs, **spec.kwargs}.get("targeted") is True and "targeted" not in alias_kwargs:
        raise ConfigError(f"attack {spec.label!r}: targeted=true would attack toward the true labels "
                          "(the evaluator passes true labels; success would be immediate): use "
                          "apgd-t, fab or multi_target, which pick their targets")
    return spec


def _check_type(spec: AttackSpec, key: str, value: Any, default: Any) -> None:
    """An option's value must have its default's type (bool, integer, finite number)."""
    import math

    what = None
    if isinstance(default, bool):
        what = None if isinstance(value, bool) else "true or false"
    elif isinstance(default, int) and not isinstance(default, bool):
        what = None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    elif isinstance(default, float) or (default is None and key == "step_size"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        what = None if ok else "a finite number"
    if what:
        raise ConfigError(f"attack {spec.label!r}: option {key} must be {what}, got {value!r}")


def _check_range(spec: AttackSpec, fn: Callable[..., Any], key: str, value: Any,
                 default: Any) -> None:
    """An option's value must lie in the attack's declared range (``AttackInfo.ranges``:
    ``square:steps=0`` is an error here, not an evaluation without an attack)."""
    info = getattr(fn, "info", None)
    rng = info.option_ranges().get(key) if hasattr(info, "option_ranges") else None
    if rng is None:
        return
    try:
        rng.check(key, value, default, spec.base_name)
    except AdvgeomError as e:
        raise ConfigError(f"attack {spec.label!r}: {e}") from None


# ---------------------------------------------------------------------------
# parsing


def parse_attack_spec(text: str) -> AttackSpec:
    """Parse ``name`` or ``name:key=value,key=value`` into a validated :class:`AttackSpec`."""
    if not isinstance(text, str):
        raise ConfigError(f"an attack spec is text such as 'pgd:steps=10', got {type(text).__name__}")
    text = text.strip()
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name or "=" in name:
        raise ConfigError(f"attack spec {text!r} must start with an attack name")
    kwargs: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key or not value.strip():
            raise ConfigError(f"attack spec {text!r}: {item!r} is not of the form key=value")
        if key in kwargs:
            raise ConfigError(f"attack spec {text!r}: {key!r} given twice")
        kwargs[key] = _parse(value.strip())
    return validate(AttackSpec(name, kwargs))


# A plain decimal (no "1_0", "nan", "0x1p-3" that Python's float() would accept),
# optionally a fraction of two of them ("8/255").
_DECIMAL = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(rf"{_DECIMAL}(?:/{_DECIMAL})?|inf")


def _fraction(text: str) -> float | None:
    """``"8/255"`` -> 0.0313..., else ``None``."""
    num, sep, den = text.partition("/")
    if not sep:
        return None
    try:
        return float(num) / float(den)
    except (ValueError, ZeroDivisionError):
        return None


def _parse(text: str) -> Any:
    frac = _fraction(text)
    return frac if frac is not None else parse_value(text)


def split_attack_list(text: str) -> list[str]:
    """Split ``"pgd:steps=20,loss=margin,square"`` into specs: a comma-separated item
    containing ``=`` belongs to the spec before it."""
    out: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        if "=" in item and ":" not in item.split("=", 1)[0]:
            if not out:
                raise ConfigError(f"attack list {text!r} starts with an option {item!r}")
            out[-1] += ("," if ":" in out[-1] else ":") + item
        else:
            out.append(item)
    return out


def parse_attacks(attacks: str | AttackSpec | Iterable[str | AttackSpec]) -> list[AttackSpec]:
    """Specs from a comma-separated string, one spec, or a list of strings/specs."""
    if isinstance(attacks, (str, AttackSpec)):
        attacks = [attacks]
    if callable(attacks) or not isinstance(attacks, Iterable):
        raise ConfigError(f"attacks must be a spec string ('pgd,fgsm'), an AttackSpec or a list of them, "
                          f"got {type(attacks).__name__} (wrap an attack function in AttackSpec(name, "
                          "attack=fn))")
    out: list[AttackSpec] = []
    for a in attacks:
        if isinstance(a, AttackSpec):
            out.append(validate(a))
        elif isinstance(a, str):
            out.extend(parse_attack_spec(s) for s in split_attack_list(a))
        else:
            raise ConfigError(f"an attack must be a spec string or AttackSpec, got {type(a).__name__}")
    labels = [s.label for s in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"attack(s) listed twice: {', '.join(dup)}")
    if not out:
        raise ConfigError("no attacks given")
    return out


def parse_eps(eps: str | float | Iterable[float]) -> list[float]:
    """``"0.1,0.2"`` / ``0.1`` / ``[0.1, 0.2]`` (or a tensor / numpy value of them) ->
    sorted unique non-negative floats."""
    if eps is None:
        raise ConfigError("eps is required: a number, a list of numbers or text such as '0.1,8/255'")
    if hasattr(eps, "tolist") and not isinstance(eps, (str, list, tuple)):   # tensor / numpy
        eps = eps.tolist()
    if isinstance(eps, str):
        items: list[Any] = [t.strip() for t in eps.split(",")]
        if len(items) > 1 and items[-1] == "":
            items.pop()   # one trailing comma is harmless
        if any(t == "" for t in items):
            raise ConfigError(f"eps list {eps!r} has an empty entry")
    elif isinstance(eps, (int, float)):
        items = [eps]
    else:
        items = list(eps)
    vals = []
    for v in items:
        f = parse_number(v, "eps")
        if not (f >= 0.0) or f == float("inf"):
            raise ConfigError(f"eps must be finite and >= 0, got {v!r}")
        vals.append(f)
    if not vals:
        raise ConfigError("no eps values given")
    return sorted(set(vals))


def parse_number(value: Any, what: str = "eps") -> float:
    """One number: a float, an int or text (a plain decimal or a fraction like ``"8/255"``,
    the spelling the command line accepts) as a float; else a one-line
    :class:`ConfigError` naming ``what``. Range checks are the caller's."""
    if isinstance(value, str) and not _NUMBER.fullmatch(value.replace(" ", "")):
        raise ConfigError(f"{what} {value!r} is not a number (a decimal or a fraction like 8/255)")
    if isinstance(value, bool):
        raise ConfigError(f"{what} {value!r} is not a number")
    try:
        frac = _fraction(value) if isinstance(value, str) else None
        return frac if frac is not None else float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} {value!r} is not a number") from None


# ---------------------------------------------------------------------------
# smoke runs: the attack budget capped


# The options that set how much work an attack does, and their caps under ``--smoke``
# (docs/design.md "Profiles and provenance"): iterations (Square's queries, C&W's and FAB's
# steps too), restarts, target classes (APGD-T, FAB-T, the multi-target attack),
# C&W's binary-search rounds and DeepFool's candidate classes.
SMOKE_CAPS: dict[str, int] = {"steps": 2, "restarts": 1, "num_targets": 2, "search_steps": 1,
                              "candidates": 2, "guides": 1}


def cap_spec(spec: str | AttackSpec, caps: Mapping[str, int] = SMOKE_CAPS) -> AttackSpec:
    """``spec`` with each budget option of ``caps`` set explicitly to at most its cap: the
    spec's value, the alias's or else the attack function's default (so ``apgd-t`` runs
    ``num_targets=2``, ``multi_target`` two targets instead of every other class). Options
    the attack does not take, or does not use (``fgsm``'s steps), stay unset; a user's
    attack function (``AttackSpec(..., attack=fn)``) has only the options its spec gives
    capped. A transfer attack's crafting attack is capped the same way. The label is kept,
    so an experiment finds its numbers under the labels it knows; smoke runs say in their
    rows (profile ``...+smoke``) that every budget was capped."""
    spec = parse_attack_spec(spec) if isinstance(spec, str) else validate(spec)
    fn = spec.fn
    info = getattr(fn, "info", None)
    if info is not None and getattr(info, "transfer", False):
        return validate(AttackSpec(spec.name, _cap_transfer(dict(spec.kwargs), caps), spec.label, spec.attack))
    ranges = info.option_ranges() if hasattr(info, "option_ranges") else {}
    kwargs = dict(spec.kwargs)
    for key, value in budget_values(spec, caps).items():
        rng, cap = ranges.get(key), caps[key]
        low = int(rng.low) if rng is not None and rng.low is not None else 0
        kwargs[key] = max(low, cap) if value is None else max(min(int(value), cap), min(low, int(value)))
    return validate(AttackSpec(spec.name, kwargs, spec.label, spec.attack))


def budget_values(spec: AttackSpec, keys: Iterable[str]) -> dict[str, int | None]:
    """The value each budget option of ``keys`` takes when ``spec`` runs: the spec's, the
    alias's or else the attack function's default (``None``: all, e.g. every target).
    Options the attack does not take or does not use (``fgsm``'s steps), and values that
    are not integers, are left out."""
    fn = spec.fn
    info = getattr(fn, "info", None)
    params = inspect.signature(fn).parameters
    alias = {} if spec.attack is not None else resolve(spec.name)[1]
    ranges = info.option_ranges() if hasattr(info, "option_ranges") else {}
    out: dict[str, int | None] = {}
    for key in keys:
        if key in spec.kwargs:
            value = spec.kwargs[key]
        elif key in alias:
            value = alias[key]
        elif key in params and params[key].default is not inspect.Parameter.empty:
            value = params[key].default
        else:
            continue
        rng = ranges.get(key)
        if (rng is not None and rng.unused) or isinstance(value, bool) or not isinstance(value, (int, type(None))):
            continue
        out[key] = value
    return out


def _cap_transfer(kwargs: dict[str, Any], caps: Mapping[str, int]) -> dict[str, Any]:
    """A transfer spec's options with its crafting attack capped: ``steps`` and
    ``restarts`` go through the transfer attack's own options, the rest into
    ``attack_kwargs``."""
    passed = {k: kwargs[k] for k in ("steps", "step_size", "restarts", "loss") if k in kwargs}
    extra = dict(kwargs.get("attack_kwargs") or {})
    inner = cap_spec(AttackSpec(str(kwargs.get("attack", "pgd")), {**passed, **extra}), caps)
    for key, value in inner.kwargs.items():
        if key in extra or key not in ("steps", "step_size", "restarts", "loss"):
            extra[key] = value
        else:
            kwargs[key] = value
    if extra:
        kwargs["attack_kwargs"] = extra
    return kwargs


def cap_spec_text(text: str, caps: Mapping[str, int] = SMOKE_CAPS) -> str:
    """:func:`cap_spec` of a spec string, as a spec string (training configs hold strings)."""
    capped = cap_spec(text, caps)
    return canonical(capped.name, capped.kwargs)
