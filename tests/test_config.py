from dataclasses import dataclass, field

import pytest

from advgeom.config import apply_overrides, config_hash, from_dict, load_config, parse_value, to_dict
from advgeom.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    a: int = 1
    b: tuple[float, ...] = ()


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    lr: float = 0.1
    flag: bool = False
    maybe: int | None = None
    inner: Inner = field(default_factory=Inner)
    extra: dict = field(default_factory=dict)


def test_roundtrip_and_hash_stable(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('name = "y"\nlr = 1\n[inner]\na = 3\nb = [1, 2.5]\n')
    cfg = load_config(Outer, p)
    assert cfg == Outer(name="y", lr=1.0, inner=Inner(a=3, b=(1.0, 2.5)))
    assert isinstance(cfg.lr, float) and cfg.inner.b == (1.0, 2.5)
    assert from_dict(Outer, to_dict(cfg)) == cfg
    assert config_hash(cfg) == config_hash(from_dict(Outer, to_dict(cfg)))
    assert config_hash(cfg) != config_hash(Outer())


def test_overrides_nested_and_typed():
    cfg = load_config(Outer, None, ["inner.a=7", "flag=true", 'name="z"', "maybe=4", "extra.k=0.5"])
    assert cfg.inner.a == 7 and cfg.flag is True and cfg.name == "z" and cfg.maybe == 4
    assert cfg.extra == {"k": 0.5}
    assert parse_value("abc") == "abc" and parse_value("[1,2]") == [1, 2]


def test_typo_gets_suggestion(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        load_config(Outer, None, ["lrr=0.1"])
    with pytest.raises(ConfigError, match="inner.c"):
        from_dict(Outer, {"inner": {"c": 1}})


@pytest.mark.parametrize("override,msg", [("lr=abc", "number"), ("flag=1", "true/false"),
                                          ("inner.a=1.5", "integer"), ("noequals", "key=value")])
def test_bad_values(override, msg):
    with pytest.raises(ConfigError, match=msg):
        load_config(Outer, None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unterminated\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Outer, bad)


def test_apply_overrides_does_not_mutate():
    data = {"inner": {"a": 1}}
    out = apply_overrides(data, ["inner.a=2"])
    assert data == {"inner": {"a": 1}} and out == {"inner": {"a": 2}}


def test_a_config_that_is_not_a_table_is_a_config_error():
    from advgeom.config import from_dict
    from advgeom.errors import ConfigError
    from advgeom.train import TrainConfig

    with pytest.raises(ConfigError, match="TrainConfig: expected a table of settings, got str 'x'"):
        from_dict(TrainConfig, "x")
