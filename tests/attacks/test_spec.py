"""Attack specs: parsing, aliases, validation against the attack signatures."""
import pytest

from advgeom.errors import ConfigError
from advgeom.eval import AttackSpec, parse_attack_spec, parse_attacks, parse_eps
from advgeom.attacks.spec import split_attack_list


def test_parse_name_and_kwargs():
    s = parse_attack_spec("pgd:steps=100,step_size=0.01,loss=margin")
    assert s.name == "pgd" and s.kwargs == {"steps": 100, "step_size": 0.01, "loss": "margin"}
    assert s.label == "pgd:loss=margin,step_size=0.01,steps=100"       # canonical, sorted
    assert parse_attack_spec("fgsm").label == "fgsm"
    assert parse_attack_spec("pgd:random_start=false").kwargs == {"random_start": False}
    assert parse_attack_spec("pgd:step_size=2/255").kwargs["step_size"] == pytest.approx(2 / 255)


def test_aliases_and_registered_variants():
    for name in ("apgd-ce", "apgd-dlr"):
        s = parse_attack_spec(name)
        assert s.kind == "iterative"
        assert s.call_kwargs().get("loss", name.split("-")[1]) == name.split("-")[1]
    assert parse_attack_spec("pgd-margin").call_kwargs() == {"loss": "margin"}
    assert parse_attack_spec("pgd-margin").base_name == "pgd"


def test_kinds_from_attack_info():
    assert parse_attack_spec("fgsm").kind == "single_step"
    assert parse_attack_spec("pgd").kind == "iterative"
    assert parse_attack_spec("square").kind == "black_box"
    assert parse_attack_spec("deepfool").kind == "min_norm"


@pytest.mark.parametrize("text, match", [
    ("pgdd", "did you mean 'pgd'"),
    ("pgd:stepz=10", "did you mean 'steps'"),
    ("pgd:eps=0.3", "set by the evaluator"),
    ("pgd:generator=1", "set by the evaluator"),
    ("pgd:steps", "key=value"),
    ("pgd:steps=1,steps=2", "twice"),
    ("square:queries=1000", "no option 'queries'"),
    ("transfer", "needs source_model"),
    ("transfer:attack=fgsm,source_model=foo", "source_model must be an object passed from Python"),
    (":steps=3", "attack name"),
    ("pgd:loss=bogus", "unknown loss 'bogus'; this attack accepts: ce, margin, dlr"),
    ("apgd-ce:loss=margin", "unknown loss 'margin'"),
])
def test_clear_errors(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_attacks(text)


def test_attack_lists():
    assert split_attack_list("pgd:steps=20,loss=margin,apgd-dlr,square:steps=50") == [
        "pgd:steps=20,loss=margin", "apgd-dlr", "square:steps=50"]
    specs = parse_attacks("pgd,apgd-dlr,square")
    assert [s.label for s in specs] == ["pgd", "apgd-dlr", "square"]
    assert parse_attacks(["fgsm", AttackSpec("pgd", {"steps": 3})])[1].label == "pgd:steps=3"
    with pytest.raises(ConfigError, match="twice"):
        parse_attacks("pgd,pgd")
    with pytest.raises(ConfigError, match="starts with an option"):
        parse_attacks("steps=3,pgd")


def test_custom_attack_function_is_validated():
    def mine(model, inputs, labels, *, eps, norm="linf", generator=None, strength=1.0):
        return inputs

    assert AttackSpec("mine", {"strength": 2.0}, attack=mine) in parse_attacks([AttackSpec("mine", {"strength": 2.0}, attack=mine)])
    with pytest.raises(ConfigError, match="no option 'power'"):
        parse_attacks([AttackSpec("mine", {"power": 2.0}, attack=mine)])


def test_parse_eps():
    assert parse_eps("0.3,0.1,0.2,0.1") == [0.1, 0.2, 0.3]
    assert parse_eps("2/255,8/255") == pytest.approx([2 / 255, 8 / 255])
    assert parse_eps(0.5) == [0.5]
    for bad in ("abc", "-0.1", "inf", ""):
        with pytest.raises(ConfigError):
            parse_eps(bad)


def test_hyphen_and_underscore_names_are_one_name():
    from advgeom.eval import parse_attacks

    assert [s.base_name for s in parse_attacks("cw-l2,multi-target,apgd_ce")] == \
        ["cw_l2", "multi_target", "apgd-ce"]


@pytest.mark.parametrize("text", ["0.1,,0.2", "1_0", "nan", "0x10", ",0.1"])
def test_malformed_eps_lists_are_errors(text):
    with pytest.raises(ConfigError):
        parse_eps(text)


def test_eps_list_forms():
    assert parse_eps("0.2, 0.1,") == [0.1, 0.2]
    assert parse_eps("8/255") == [pytest.approx(8 / 255)]


def test_a_model_that_cannot_read_the_data_is_one_clear_error():
    import torch
    from torch import nn

    from advgeom.errors import AdvgeomError
    from advgeom.eval import evaluate

    x, y = torch.rand(4, 2), torch.tensor([0, 1, 0, 1])
    flat = nn.Sequential(nn.Flatten(), nn.Linear(784, 2)).eval()
    with pytest.raises(AdvgeomError, match="cannot read inputs of shape"):
        evaluate(flat, (x, y), ["fgsm"], [0.1], progress=False)


def test_specs_of_the_wrong_type_are_config_errors():
    from advgeom.attacks import pgd
    from advgeom.attacks.spec import AttackSpec, parse_attack_spec

    with pytest.raises(ConfigError, match="an attack spec is text"):
        parse_attack_spec(123)
    with pytest.raises(ConfigError, match="goes through parse_attack_spec"):
        AttackSpec("pgd", "steps=3")
    for bad in (pgd, None, 3):
        with pytest.raises(ConfigError, match="attacks must be a spec string"):
            parse_attacks(bad)
