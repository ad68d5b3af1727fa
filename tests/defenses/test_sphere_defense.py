"""The dsphere objective (hyperspherical-defense.txt Section 4.2): eq. 8's limits,
the annealing schedule, the weight-multiplier and orthogonality terms by hand, the base
objective reused unchanged, and clear errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advgeom.defenses.base import StepContext
from advgeom.defenses.sphere import Annealing, annealed_loss
from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.nn.sphere import orthogonality_penalty
from advgeom.registry import create
from advgeom.train import TrainConfig
from advgeom.train.build import build_optimizer

SMALL = {"widths": [4, 8], "convs_per_stage": 1, "fc_dim": 8}


def model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **SMALL).train()


def batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 28, 28, generator=g), torch.randint(0, 10, (6,), generator=g)


def test_annealed_loss_limits():
    torch.manual_seed(0)
    g, norm, y = torch.rand(5, 4) * 2 - 1, torch.rand(5) * 5, torch.randint(0, 4, (5,))
    torch.testing.assert_close(annealed_loss(g, norm, y, 0.0), F.cross_entropy(g, y))  # eq. 7
    torch.testing.assert_close(annealed_loss(g, norm, y, 1e9), F.cross_entropy(norm[:, None] * g, y),
                               rtol=1e-6, atol=1e-6)  # W-Softmax, eq. 4


def test_schedule_decreases_to_its_minimum():
    s = Annealing(base=100.0, gamma=1.0, power=1.0, minimum=2.0)
    vals = [s.at(t) for t in range(0, 200, 7)]
    assert vals[0] == 100.0 and all(a >= b for a, b in zip(vals, vals[1:])) and vals[-1] == 2.0
    with pytest.raises(ConfigError, match="anneal"):
        Annealing.checked({"start": 3})
    with pytest.raises(ConfigError, match="minimum"):
        Annealing.checked({"minimum": -1})


def test_annealed_objective_is_eq8_on_the_training_forward():
    net = model("dsphere_mnist_annealing")
    x, y = batch()
    obj = create("defense", "dsphere", ortho=0.0, anneal={"base": 10.0, "gamma": 1.0, "minimum": 1.0})
    out = obj(net, x, y, generator=torch.Generator().manual_seed(0), context=StepContext(step=4, total=10))
    lam = 2.0  # 10 / (1 + 4)
    g, norm = net.head.correlation(net.features(x))
    torch.testing.assert_close(out.total, annealed_loss(g, norm.squeeze(1), y, lam))
    assert float(out.terms["lambda"]) == lam


def test_multiplier_penalty_and_orthogonality_are_added_to_the_base_loss():
    net = model("dsphere_mnist_wm")
    x, y = batch()
    obj = create("defense", "dsphere", base="ce", ortho=0.01, eta=0.5)
    out = obj(net, x, y, generator=torch.Generator().manual_seed(0))
    ce = F.cross_entropy(net(x), y)
    expect = ce + 0.01 * orthogonality_penalty(net) + 0.5 * net.head.alpha.abs()
    torch.testing.assert_close(out.total, expect)
    assert float(out.terms["alpha"]) == pytest.approx(10.0)


def test_base_adversarial_objective_is_used_unchanged():
    net = model("dsphere_mnist")
    x, y = batch()
    kw = {"eps": 0.3, "attack": "fgsm"}
    wrapped = create("defense", "dsphere", base="fgsm_at", base_kwargs=kw, ortho=0.0)
    plain = create("defense", "fgsm_at", **kw)
    a = wrapped(net, x, y, generator=torch.Generator().manual_seed(0)).total
    b = plain(net, x, y, generator=torch.Generator().manual_seed(0)).total
    torch.testing.assert_close(a, b)


def test_errors_are_clear():
    x, y = batch()
    with pytest.raises(ConfigError, match="D-SphereNet"):
        create("defense", "dsphere")(model("hyper_mnist_cnn"), x, y)
    with pytest.raises(ConfigError, match="one training forward"):
        obj = create("defense", "dsphere", base="trades", base_kwargs={"steps": 1})
        obj(model("dsphere_mnist_annealing"), x, y, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="ortho"):
        create("defense", "dsphere", ortho=-1.0)


def test_no_weight_decay_on_sphere_layers_only_when_decay_is_on():
    net = model("dsphere_mnist_wm")
    opt = build_optimizer(TrainConfig(model="dsphere_mnist_wm", weight_decay=5e-4), net)
    decays = sorted(g["weight_decay"] for g in opt.param_groups)
    assert decays == [0.0, 5e-4]
    exempt = [g for g in opt.param_groups if g["weight_decay"] == 0.0][0]["params"]
    assert len(exempt) == len(list(net.parameters()))  # every layer is a SphereCorr one
    assert len(build_optimizer(TrainConfig(), net).param_groups) == 1
    base = create_model("hyper_mnist_cnn", **SMALL)
    assert len(build_optimizer(TrainConfig(weight_decay=5e-4), base).param_groups) == 1
