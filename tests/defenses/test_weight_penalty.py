"""The classifier weight penalty (weight-penalization-classification-layer.txt, eq. 3.8)."""
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advgeom.analysis.class_angles import min_pairwise_angle, theorem1_angle
from advgeom.defenses.base import StepContext
from advgeom.defenses.weight_penalty import crop_flip
from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.models.base import Classifier
from advgeom.registry import create


def _tiny(features: int = 3, classes: int = 4, act: nn.Module | None = None) -> Classifier:
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(2, features), act or nn.Tanh())
    return Classifier(body, nn.Linear(features, classes), num_classes=classes, input_shape=(2,),
                      feature_dim=features)


def _call(obj, model, x, y, seed=0):
    return obj(model, x, y, generator=torch.Generator().manual_seed(seed), context=StepContext())


def test_loss_is_ce_plus_alpha_times_the_gap_by_hand():
    model = _tiny()
    x, y = torch.rand(6, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3, 0, 1])
    s, alpha = 0.2, 7.0
    w = model.head.weight.detach().double()
    sigma = torch.full((4, 4), s * s / (1 - 4), dtype=torch.float64).fill_diagonal_(s * s)
    gap = float(torch.sqrt(((w @ w.T - sigma) ** 2).sum()))
    ce = float(F.cross_entropy(model(x), y).detach())
    out = _call(create("defense", "weight_penalty", alpha=alpha, s=s), model, x, y)
    assert float(out.total.detach()) == pytest.approx(ce + alpha * gap, rel=1e-5)
    assert float(out.terms["gram_gap"]) == pytest.approx(gap, rel=1e-5)
    assert float(out.terms["ce"]) == pytest.approx(ce, rel=1e-5)
    assert float(out.terms["min_angle"]) == pytest.approx(min_pairwise_angle(w), rel=1e-5)
    spectral = _call(create("defense", "weight_penalty", alpha=alpha, s=s, matrix_norm="spectral"), model, x, y)
    assert float(spectral.terms["gram_gap"]) < gap   # the spectral norm is below Frobenius here
    out.total.backward()
    assert model.head.weight.grad is not None and float(model.head.weight.grad.abs().sum()) > 0


def test_training_with_the_penalty_reaches_the_theorem1_angle():
    """A toy problem (K = 4 classes, P = 3 tanh features): a few hundred Adam steps of
    CE + 100 ||W W^T - Sigma|| spread the class vectors to arccos(-1/3) = 109.47 degrees."""
    model = _tiny()
    g = torch.Generator().manual_seed(2)
    centres = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    y = torch.randint(0, 4, (256,), generator=g)
    x = centres[y] + 0.3 * torch.randn(256, 2, generator=g)
    obj = create("defense", "weight_penalty")
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    start = min_pairwise_angle(model.head.weight)
    for _ in range(300):
        loss = _call(obj, model, x, y).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert start < 100
    assert min_pairwise_angle(model.head.weight) == pytest.approx(theorem1_angle(4), abs=1.0)
    norms = model.head.weight.detach().norm(dim=1)
    torch.testing.assert_close(norms, torch.full((4,), 0.1), atol=5e-3, rtol=0)
    assert float((model(x).argmax(1) == y).float().mean()) > 0.5   # chance: 0.25


@pytest.mark.parametrize("kwargs, match", [
    ({"s": 0.0}, "s"), ({"s": -0.1}, "s"), ({"s": float("nan")}, "s"), ({"alpha": -1.0}, "alpha"),
    ({"matrix_norm": "nuclear"}, "matrix_norm"), ({"augment": "cutout"}, "augment"),
    ({"adversarial": "yes"}, "adversarial"), ({"adversarial": True, "eps": -0.1}, "eps"),
])
def test_bad_configs_are_clear_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create("defense", "weight_penalty", **kwargs)


def test_k_above_p_plus_one_warns_once_and_a_non_linear_head_is_refused():
    model = _tiny(features=2, classes=4)   # K = 4 > P + 1 = 3
    obj = create("defense", "weight_penalty")
    x, y = torch.rand(4, 2), torch.tensor([0, 1, 2, 3])
    with pytest.warns(UserWarning, match="Theorem 1"):
        _call(obj, model, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _call(obj, model, x, y)     # once per weight shape
    mmc = create_model("mmc", base="relu_mlp", base_kwargs={"input_dim": 2, "width": 4, "depth": 1,
                                                             "num_outputs": 3}, dim=4)
    with pytest.raises(ConfigError, match="nn.Linear"):
        _call(obj, mmc, x[:3], y[:3])


def test_adversarial_option_trains_on_crafted_examples():
    model = _tiny().train()
    x, y = torch.rand(8, 2, generator=torch.Generator().manual_seed(3)), torch.randint(0, 4, (8,))
    plain = _call(create("defense", "weight_penalty"), model, x, y)
    adv = _call(create("defense", "weight_penalty", adversarial=True, eps=0.3,
                       attack="pgd:steps=5,step_size=0.1,early_stop=false"), model, x, y)
    assert model.training
    assert float(adv.terms["ce"]) > float(plain.terms["ce"])          # PGD raised the CE
    assert float(adv.terms["gram_gap"]) == pytest.approx(float(plain.terms["gram_gap"]))


def test_crop_flip_shifts_and_flips_each_image():
    x = torch.rand(5, 2, 6, 6, generator=torch.Generator().manual_seed(4))
    out = crop_flip(x, torch.Generator().manual_seed(5), pad=2)
    assert out.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(5):
        options = [c for dy in range(5) for dx in range(5)
                   for c in (padded[i, :, dy:dy + 6, dx:dx + 6], padded[i, :, dy:dy + 6, dx:dx + 6].flip(-1))]
        assert any(torch.equal(out[i], c) for c in options)
    again = crop_flip(x, torch.Generator().manual_seed(5), pad=2)
    assert torch.equal(out, again) and not torch.equal(out, x)
