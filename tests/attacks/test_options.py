"""Option validation (issue 14): every option value that would make an attack a no-op is
an error, attacks refuse vocabulary options they do not use, and no attack changes
BatchNorm running statistics, in either mode."""
from __future__ import annotations

import inspect
import re
import warnings

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from advgeom.attacks.base import AttackInfo, Range
from advgeom.attacks.spec import AttackSpec, validate
from advgeom.cli import app
from advgeom.errors import AdvgeomError, ConfigError
from advgeom.eval import parse_attacks
from advgeom.registry import get, names
from advgeom.seeding import make_generator


def seeded(seed: int, build):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()

ATTACKS = names("attack")


def meta(name: str) -> AttackInfo:
    return get("attack", name).info


@pytest.mark.parametrize("text", ["mifgsm:decay=nan", "pgd:targeted=maybe", "pgd:targeted=true",
                                  "bim:targeted=true", "pgd:steps=2.5", "pgd:early_stop=1"])
def test_noop_specs_are_config_errors(text):
    with pytest.raises(AdvgeomError):
        parse_attacks(text)


@pytest.mark.parametrize("name,kw", [
    ("mifgsm", {"decay": float("nan")}), ("mifgsm", {"decay": -1.0}),
    ("pgd", {"targeted": "maybe"}), ("deepfool", {"overshoot": -1.0}),
    ("square", {"step_size": -1.0}), ("square", {"p_init": 0.0}),
    ("deepfool", {"loss": "dlr"}), ("cw_l2", {"loss": "margin"}), ("fab", {"loss": "ce"}),
    ("fab", {"step_size": 0.1}), ("fab", {"targeted": True}), ("fab", {"beta": 1.0}),
    ("fab", {"eta": 0.5}), ("fgsm", {"steps": 10}), ("fgsm", {"step_size": 0.1}),
    ("fgsm", {"restarts": 3}), ("bim", {"restarts": 3}), ("mifgsm", {"restarts": 2}),
    ("deepfool", {"restarts": 2}), ("locally_linear", {"loss": "margin"}),
    ("locally_linear", {"steps": 5}), ("pgd", {"random_start": False, "restarts": 3}),
])
def test_noop_options_are_errors(tiny, name, kw):
    model, _, x, y = tiny
    fn = get("attack", name)
    with pytest.raises(AdvgeomError):
        fn(model, x, y, eps=0.1, norm=meta(name).norms[0], **kw)


@pytest.mark.parametrize("name", [n for n in ATTACKS if not meta(n).uses_loss])
def test_attacks_without_a_loss_refuse_one(name, tiny):
    model, source, x, y = tiny
    kw = {"source_model": source} if "source_model" in meta(name).needs else {}
    with pytest.raises(AdvgeomError, match="does not use"):
        get("attack", name)(model, x, y, eps=0.1, norm=meta(name).norms[0], loss="ce", **kw)


@pytest.mark.parametrize("name", [n for n in ATTACKS if meta(n).single_step])
def test_single_step_attacks_refuse_steps(name, tiny):
    model, _, x, y = tiny
    with pytest.raises(AdvgeomError, match="does not use"):
        get("attack", name)(model, x, y, eps=0.1, steps=7)


class BNNet(nn.Module):
    """Conv -> BatchNorm -> ReLU -> linear on 1x8x8 images, 5 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("name", ATTACKS)
def test_no_batchnorm_statistic_changes(name, train_mode, tiny):
    _, _, x, y = tiny
    model, source = seeded(5, BNNet), seeded(6, BNNet)
    for m in (model, source):  # non-trivial running statistics first
        m.train()
        with torch.no_grad():
            m(x)
    model.train(train_mode)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    src_before = {k: v.clone() for k, v in source.state_dict().items()}
    info = meta(name)
    kw = {"source_model": source.train(train_mode)} if "source_model" in info.needs else {}
    if not info.single_step:
        kw["steps"] = 3
    if name in ("apgd-t", "multi_target", "fab"):
        kw["num_targets"] = 2
    if name == "cw_l2":
        kw["search_steps"] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the training-mode warning
        get("attack", name)(model, x, y, eps=0.1 if "linf" in info.norms else 0.5,
                            norm=info.norms[0], generator=make_generator(0), **kw)
    assert model.training == train_mode
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{name} changed {k}"
    for k, v in source.state_dict().items():
        assert torch.equal(v, src_before[k]), f"{name} changed the source model's {k}"


# -- declared ranges (issue 29): every numeric option of every attack -----------------------


def numeric_options(name: str) -> list[tuple[str, object]]:
    """``(option, default)`` of every integer/float option of attack ``name`` (by its
    annotation, so ``num_targets: int | None = None`` counts), the evaluator's own
    (eps) left out."""
    params = inspect.signature(get("attack", name)).parameters.values()
    return [(p.name, p.default) for p in params
            if p.name != "eps" and p.default is not p.empty
            and re.search(r"\b(int|float)\b", str(p.annotation))]


def bad_values(rng: Range, default: object) -> list[object]:
    """Values just outside ``rng`` (and NaN, inf, a boolean, a non-integer)."""
    if rng.unused:
        return [default + 1 if isinstance(default, int) else 0.5]
    out: list[object] = [float("nan"), float("inf"), True]
    if rng.integer:
        out.append(2.5)
    step = 1 if rng.integer else 0.5
    if rng.low is not None:
        out.append(rng.low if rng.open_low else rng.low - step)
    if rng.high is not None:
        out.append(rng.high if rng.open_high else rng.high + step)
    return out


def edge_value(rng: Range, default: object) -> object:
    """A value inside ``rng`` at (or next to) its lower end."""
    if rng.unused:
        return default
    if rng.integer:
        return int(rng.low) + (1 if rng.open_low else 0)
    return rng.low + (0.25 if rng.open_low else 0.0)


CASES = [(name, key, default) for name in ATTACKS for key, default in numeric_options(name)]
BAD = [(name, key, default, v) for name, key, default in CASES
       for v in bad_values(meta(name).option_ranges()[key], default)]


def _extra(name, source):
    return {"source_model": source} if "source_model" in meta(name).needs else {}


@pytest.mark.parametrize("name,key,default", CASES)
def test_every_numeric_option_has_a_range_bounded_below(name, key, default):
    rng = meta(name).option_ranges().get(key)
    assert rng is not None, f"{name}: no declared range for option {key}"
    assert rng.unused or rng.low is not None, f"{name} {key}: {rng.text()}"
    assert rng.text() and "\n" not in rng.text()


@pytest.mark.parametrize("name,key,default,value", BAD)
def test_out_of_range_options_refused_at_parse_time(tiny, name, key, default, value):
    _, source, _, _ = tiny
    with pytest.raises(ConfigError, match=key) as err:
        validate(AttackSpec(name, {key: value, **_extra(name, source)}))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name,key,default,value", BAD)
def test_out_of_range_options_refused_by_the_attack(tiny, name, key, default, value):
    model, source, x, y = tiny
    info = meta(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # refused, not run with a warning
        with pytest.raises(AdvgeomError, match=key):
            get("attack", name)(model, x, y, eps=0.1, norm=info.norms[0], **{key: value},
                                **_extra(name, source))


@pytest.mark.parametrize("name,key,default", CASES)
def test_edge_values_inside_the_range_are_accepted(tiny, name, key, default):
    _, source, _, _ = tiny
    value = edge_value(meta(name).option_ranges()[key], default)
    given = {} if value is None else {key: value}   # an unused step_size: nothing to give
    validate(AttackSpec(name, {**given, **_extra(name, source)}))


@pytest.mark.parametrize("text", ["square:steps=0", "fab:steps=0", "pgd:steps=0", "apgd-t:num_targets=0",
                                  "square:p_init=0", "cw_l2:search_steps=0", "fgsm:steps=3"])
def test_noop_values_named_in_the_issue_are_config_errors(text):
    with pytest.raises(ConfigError, match=text.split(":")[1].split("=")[0]):
        parse_attacks(text)


CLI_BAD = [(name, key, v) for name, key, default, v in BAD
           if "source_model" not in meta(name).needs and not isinstance(v, bool)]


@pytest.mark.parametrize("name,key,value", CLI_BAD)
def test_cli_refuses_out_of_range_options_with_exit_2(tmp_path, name, key, value):
    # refused while parsing the command line: before the (missing) checkpoint is opened
    out = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(tmp_path / "none.safetensors"),
                                   "--root", str(tmp_path), "--no-progress", "--eps", "0.1",
                                   "--attacks", f"{name}:{key}={value!r}"])
    assert out.exit_code == 2, out.output
    assert out.output.strip().count("\n") == 0 and key in out.output and "none.safetensors" not in out.output
