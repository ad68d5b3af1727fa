"""Frozen config dataclasses: TOML loading, ``key=value`` overrides, stable hashes.

A config is any frozen dataclass whose fields are plain values (bool, int, float,
str, None), tuples/lists of them, dicts of them, or nested config dataclasses.
Unknown keys are errors (with a suggestion), so a typo never silently does nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from advgeom.errors import ConfigError
from advgeom.registry import did_you_mean

C = TypeVar("C")

# ---------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        return v
    return conv(cfg)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_dict(tp, value, prefix=where + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build ``cls`` from a dict, rejecting unknown keys with a did-you-mean hint."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or cls.__name__}: expected a table of settings, "
                          f"got {type(data).__name__} {data!r:.60}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            hint = did_you_mean(key, fields)
            hint = f" ({hint})" if hint else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}")
        kwargs[key] = _coerce(value, hints[key], prefix + key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{cls.__name__}: {e}") from None


# ---------------------------------------------------------------------------
# files and overrides


def parse_value(text: str) -> Any:
    """Parse an override value as TOML (numbers, bools, lists, quoted strings), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides to a nested dict (copy)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, _, text = item.partition("=")
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a table")
        node[parts[-1]] = parse_value(text.strip())
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file with errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] = ()) -> C:
    """Load ``cls`` from an optional TOML file plus ``key=value`` overrides."""
    data = read_toml(path) if path is not None else {}
    return from_dict(cls, apply_overrides(data, list(overrides)))


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of a config (canonical JSON of its dict).

    The fields a config class lists in ``HASH_OMITTED_AT_DEFAULT`` (a ``ClassVar``) are
    left out while they hold their default, in nested configs too (the training
    config's ``monitor``): an option added later keeps the hashes, and so the cached
    runs, of every config that does not use it."""
    blob = json.dumps(_hashed(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _hashed(cfg: Any) -> dict[str, Any]:
    """:func:`to_dict` of ``cfg`` without its (and its nested configs') omitted defaults."""
    data = to_dict(cfg)
    omitted = getattr(type(cfg), "HASH_OMITTED_AT_DEFAULT", ())
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            data[f.name] = _hashed(value)
        elif f.name in omitted:
            default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
            if data.get(f.name) == to_dict({"v": default})["v"]:
                del data[f.name]
    return data


def replace(cfg: C, **changes: Any) -> C:
    """``dataclasses.replace`` re-exported for configs."""
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]
