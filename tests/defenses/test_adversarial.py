"""Adversarial training objectives: losses against hand computations, crafting
invariants, BatchNorm untouched by crafting, the toy problem where adversarial
training must beat natural training, and one-line errors for bad options."""
import math

import pytest
import torch
import torch.nn.functional as F

from advgeom.data import load
from advgeom.defenses.adversarial import fast_fgsm, mart_loss, noise_pgd, trades_loss
from advgeom.defenses.base import StepContext, ThreatModel
from advgeom.errors import ConfigError
from advgeom.models import create_model
from advgeom.registry import create, get
from advgeom.train import TrainConfig, fit

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]])
LOGITS_ADV = torch.tensor([[0.5, 1.5, -0.5], [1.0, -0.2, 0.4]])
LABELS = torch.tensor([0, 2])


def _softmax(row):
    e = [math.exp(v) for v in row]
    return [v / sum(e) for v in e]


def test_trades_loss_by_hand():
    beta = 6.0
    ce = kl = 0.0
    for z, za, y in zip(LOGITS.tolist(), LOGITS_ADV.tolist(), LABELS.tolist()):
        p, q = _softmax(z), _softmax(za)
        ce += -math.log(p[y]) / 2
        kl += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q)) / 2
    out = trades_loss(LOGITS, LOGITS_ADV, LABELS, beta)
    assert float(out.total) == pytest.approx(ce + beta * kl, rel=1e-6)
    assert float(out.terms["ce"]) == pytest.approx(ce, rel=1e-6)
    assert float(out.terms["kl"]) == pytest.approx(kl, rel=1e-6)


def test_mart_loss_by_hand():
    beta = 6.0
    bce = robust = 0.0
    for z, za, y in zip(LOGITS.tolist(), LOGITS_ADV.tolist(), LABELS.tolist()):
        p, q = _softmax(z), _softmax(za)
        other = max((k for k in range(3) if k != y), key=lambda k: q[k])
        bce += (-math.log(q[y]) - math.log(1.0001 - q[other] + 1e-12)) / 2
        kl = sum(pi * (math.log(pi) - math.log(qi + 1e-12)) for pi, qi in zip(p, q))
        robust += kl * (1.0000001 - p[y]) / 2
    out = mart_loss(LOGITS, LOGITS_ADV, LABELS, beta)
    assert float(out.total) == pytest.approx(bce + beta * robust, rel=1e-5)
    assert float(out.terms["bce"]) == pytest.approx(bce, rel=1e-5)


def test_mart_other_class_is_the_most_likely_wrong_one():
    """When the adversarial prediction is already wrong, the boosted term pushes down
    the top (wrong) class, not the runner-up."""
    za = torch.tensor([[0.0, 3.0, 1.0]])
    y = torch.tensor([0])
    q = F.softmax(za, 1)[0]
    expected = -math.log(float(q[0])) - math.log(1.0001 - float(q[1]) + 1e-12)
    assert float(mart_loss(za, za, y, 0.0).total) == pytest.approx(expected, rel=1e-6)


def _tiny():
    torch.manual_seed(0)
    return create_model("relu_mlp", input_dim=2, width=16, depth=2, num_outputs=2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "kl"])
def test_noise_pgd_stays_in_threat_model_and_raises_its_loss(norm, loss):
    model = _tiny().eval()
    data = load("robust_features_2d", "train", n=64)
    x, y = data.images, data.labels
    eps = 0.1
    g = torch.Generator().manual_seed(0)
    adv = noise_pgd(model, x, y, eps=eps, norm=norm, steps=10, step_size=0.02, generator=g, loss=loss)
    d = (adv - x).flatten(1)
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    with torch.no_grad():
        z, za = model(x), model(adv)
    if loss == "ce":
        assert F.cross_entropy(za, y) > F.cross_entropy(z, y)
    else:
        assert F.kl_div(F.log_softmax(za, 1), F.softmax(z, 1), reduction="sum") > 1e-4


def test_fast_fgsm_in_ball_and_step():
    model = _tiny().eval()
    x = load("robust_features_2d", "train", n=32).images
    y = torch.zeros(32, dtype=torch.int64)
    adv = fast_fgsm(model, x, y, eps=0.1, norm="linf", alpha=0.125, generator=torch.Generator())
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_fast_fgsm_unclipped_start_is_the_mnist_codes_step():
    """``start="unclipped"``: the gradient at the raw uniform start, pixels below 0 included
    (Wong et al.'s MNIST code), then the step clamped to the ball and to [0,1], computed
    here by hand; the clipped start (their CIFAR code) differs on a black background."""
    from advgeom.attacks._geometry import random_start
    from advgeom.seeding import make_generator

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)).eval()
    x = torch.zeros(64, 2)                      # every pixel on the lower edge of [0,1]
    y = torch.randint(0, 2, (64,))
    eps, alpha = 0.3, 0.375
    x0 = random_start(x, torch.full((64,), eps), "linf", make_generator(3), clip=False)
    assert float(x0.min()) < -0.1               # the start leaves [0,1]
    x0.requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x0), y, reduction="sum"), x0)
    delta = (x0.detach() - x + alpha * g.sign()).clamp(-eps, eps)
    by_hand = x + torch.max(torch.min(1 - x, delta), -x)
    got = fast_fgsm(model, x, y, eps=eps, norm="linf", alpha=alpha, generator=make_generator(3), start="unclipped")
    assert torch.allclose(got, by_hand, atol=1e-7)
    clipped = fast_fgsm(model, x, y, eps=eps, norm="linf", alpha=alpha, generator=make_generator(3))
    assert not torch.equal(clipped, got)
    for adv in (got, clipped):
        assert float(adv.min()) >= 0.0 and float((adv - x).abs().max()) <= eps + 1e-6
    with pytest.raises(ConfigError, match="start must be one of clipped, unclipped, got 'raw'"):
        create("defense", "fgsm_at", start="raw")


def test_threat_model_warmup_ramps_linearly():
    tm = ThreatModel.checked("x", 0.3, "linf", 0.5)
    assert tm.at(StepContext(step=0, total=100)) == pytest.approx(0.3 * 1 / 50)
    assert tm.at(StepContext(step=24, total=100)) == pytest.approx(0.15)
    assert tm.at(StepContext(step=60, total=100)) == pytest.approx(0.3)
    assert ThreatModel.checked("x", 0.3, "linf").at(StepContext(step=0, total=100)) == 0.3


@pytest.mark.parametrize("name,kw,forwards", [
    ("pgd_at", {"attack": "pgd:steps=3,early_stop=false"}, 1),
    ("fgsm_at", {}, 1), ("trades", {"steps": 3}, 2), ("mart", {"steps": 3}, 2),
    ("pgd_at", {"attack": "pgd:steps=3", "craft_mode": "train"}, 1),
])
def test_crafting_leaves_batchnorm_statistics_and_mode_alone(name, kw, forwards):
    """Only the training forwards (1 for CE on x', 2 for TRADES/MART as in their
    official code) update BatchNorm; the crafting passes do not."""
    model = _tiny().train()
    bn = model.body[1]
    x = load("robust_features_2d", "train", n=32).images
    y = load("robust_features_2d", "train", n=32).labels
    objective = create("defense", name, eps=0.1, **kw)
    before = bn.num_batches_tracked.item()
    loss = objective(model, x, y, generator=torch.Generator().manual_seed(0),
                     context=StepContext(0, 0, 10, 10)).total
    assert model.training and torch.isfinite(loss)
    assert bn.num_batches_tracked.item() - before == forwards
    for p in model.parameters():
        assert p.grad is None


def _toy_cfg(objective, **kw):
    return TrainConfig(dataset="robust_features_2d", model="relu_mlp",
                       model_kwargs={"input_dim": 2, "width": 32, "depth": 2, "num_outputs": 2},
                       objective=objective, objective_kwargs=kw, lr=1e-2, batch_size=64,
                       iterations=300, checkpoint_every=100)


def _robust_accuracy(model, eps=0.1):
    test = load("robust_features_2d", "test", n=1000)
    adv = get("attack", "pgd")(model, test.images, test.labels, eps=eps, steps=20, step_size=0.01,
                               restarts=2)
    with torch.no_grad():
        return float((model(adv).argmax(1) == test.labels).float().mean())


def test_adversarial_training_beats_natural_training_on_the_toy(tmp_path):
    """Natural training leans on the non-robust feature (0% robust at eps 0.1);
    PGD-AT and TRADES move to the robust one (the best possible is ~93%)."""
    ce = _robust_accuracy(fit(_toy_cfg("ce"), root=tmp_path, progress=False).model)
    at = _robust_accuracy(fit(_toy_cfg("pgd_at", eps=0.1,
                                       attack="pgd:steps=10,step_size=0.02,early_stop=false"),
                              root=tmp_path, progress=False).model)
    tr = _robust_accuracy(fit(_toy_cfg("trades", eps=0.1, steps=10, step_size=0.02),
                              root=tmp_path, progress=False).model)
    assert ce < 0.2
    assert at > 0.85 and tr > 0.85


@pytest.mark.parametrize("name,kw,match", [
    ("pgd_at", {"attack": "pgd:stepz=3"}, "stepz"),
    ("pgd_at", {"attack": "nope"}, "unknown attack"),
    ("pgd_at", {"eps": -0.1}, "eps"),
    ("trades", {"beta": -1.0}, "beta"),
    ("mart", {"beta": float("nan")}, "beta"),
    ("trades", {"norm": "l3"}, "norm"),
    ("fgsm_at", {"craft_mode": "both"}, "craft_mode"),
    ("pgd_at", {"mix": 2.0}, "mix"),
    ("fgsm_at", {"mix": -0.5}, "mix"),
    ("trades", {"steps": 0}, "steps"),
    ("pgd_at", {"warmup": 1.0}, "warmup"),
    # issue 29: options that would train a natural model under an adversarial name
    ("pgd_at", {"attack": "square:steps=0"}, "steps"),
    ("pgd_at", {"attack": "pgd:steps=0"}, "steps"),
    ("pgd_at", {"attack": "fab:steps=0"}, "steps"),
    ("pgd_at", {"eps": 0.0}, "eps"),
    ("mmc", {"adversarial": True, "eps": 0.0}, "eps"),
    ("fgsm_at", {"alpha": 0.0}, "alpha"),
    ("trades", {"step_size": 0.0}, "step_size"),
    ("mart", {"step_size": float("inf")}, "step_size"),
    ("trades", {"beta": 0.0}, "beta"),
])
def test_bad_options_are_one_line_config_errors(name, kw, match):
    with pytest.raises(ConfigError, match=match) as err:
        create("defense", name, **kw)
    assert "\n" not in str(err.value)


def test_mart_beta_zero_is_still_adversarial():
    """MART's boosted cross-entropy is on the adversarial example: beta 0 drops only the
    KL term, so it stays allowed (TRADES' beta 0 is natural training: refused)."""
    create("defense", "mart", beta=0.0)


def test_bad_objective_kwargs_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="eps"):
        fit(_toy_cfg("pgd_at", eps=-1.0), root=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown argument"):
        fit(_toy_cfg("trades", betta=1.0), root=tmp_path, progress=False)


@pytest.mark.parametrize("name", ["fgsm_at", "pgd_at"])
def test_mix_weighs_the_clean_cross_entropy_in(name):
    """(1 - mix) CE(x') + mix CE(x), x' from plain FGSM (deterministic), against a hand sum."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(5, 1, 4, 4), torch.tensor([0, 1, 2, 1, 0])
    attack = "fgsm" if name == "fgsm_at" else "pgd:steps=2,step_size=0.05,random_start=false"
    kw = dict(eps=0.1, attack=attack)
    mixed = create("defense", name, mix=0.5, **kw)(net, x, y, generator=torch.Generator().manual_seed(0))
    alone = create("defense", name, **kw)(net, x, y, generator=torch.Generator().manual_seed(0))
    clean = F.cross_entropy(net(x), y)
    assert float(alone.terms["adv_ce"]) == pytest.approx(float(alone.total), rel=1e-6)
    assert float(mixed.terms["adv_ce"]) == pytest.approx(float(alone.total), rel=1e-6)
    assert float(mixed.total) == pytest.approx(0.5 * float(alone.total) + 0.5 * float(clean), rel=1e-6)
    assert float(mixed.terms["clean_ce"]) == pytest.approx(float(clean), rel=1e-6)
