"""Option validation (issue 14): every option value that would make an attack a no-op is
an error, attacks refuse vocabulary options they do not use, and no attack changes
BatchNorm running statistics, in either mode."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from advgeom.attacks.base import AttackInfo
from advgeom.errors import AdvgeomError
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
