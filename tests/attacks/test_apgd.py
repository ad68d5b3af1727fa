"""APGD (Croce & Hein 2020): checkpoint schedule of the paper, exact behaviour on
linear models, targeted DLR, and agreement with pyautoattack's APGD-CE / APGD-DLR
on a trained MNIST CNN."""
from __future__ import annotations

import pytest
import torch

from advgeom.attacks.apgd import checkpoints
from advgeom.attacks.base import PassCounter
from advgeom.errors import AdvgeomError
from advgeom.registry import get
from advgeom.seeding import make_generator

apgd = get("attack", "apgd")


def test_checkpoints_follow_the_paper():
    """p_0=0, p_1=0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    assert sorted(checkpoints(100)) == [22, 41, 57, 70, 80, 87, 93, 99]
    assert sorted(checkpoints(1000)) == [220, 410, 570, 700, 800, 870, 930, 990]
    assert checkpoints(1) == {1}


def test_budget_is_one_gradient_per_step(tiny):
    model, _, x, y = tiny
    c = PassCounter()
    apgd(model, x, y, eps=0.1, steps=20, counter=c)
    n = x.shape[0]
    assert c.backwards == 20 * n          # start + 19 steps with gradients, last forward only
    assert c.forward_calls == 1 + 21      # probe + start + 20 iterates


@pytest.mark.parametrize("classes", [1, 2])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_binary_linear_breaks_exactly_below_margin(classes, norm, make_linear, broken):
    p = make_linear(classes, n=200)
    d = (p.dist_linf if norm == "linf" else p.dist_l2).detach()
    eps = float(d.median()) * 1.001
    adv = apgd(p.model, p.x, p.y, eps=eps, norm=norm, steps=20, loss="margin",
               generator=make_generator(0))
    hit = broken(p.model, adv, p.y)
    assert hit[d < eps * 0.99].all()
    assert not hit[d > eps * (1 + 1e-9)].any()


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_multiclass_linear_sound_and_strong(loss, make_linear, broken):
    p = make_linear(5, n=200)
    d = p.dist_linf.detach()
    eps = float(d.median())
    adv = apgd(p.model, p.x, p.y, eps=eps, steps=30, loss=loss, generator=make_generator(0))
    hit = broken(p.model, adv, p.y)
    assert not hit[d > eps * (1 + 1e-9)].any()
    assert hit[d < 0.5 * eps].all()


def test_targeted_dlr_reaches_target(make_linear):
    p = make_linear(5, n=100)
    target = (p.y + 2) % 5
    adv = apgd(p.model, p.x, target, eps=1.0, steps=30, targeted=True, loss="dlr",
               generator=make_generator(0))
    with torch.no_grad():
        assert (p.model(adv).argmax(1) == target).all()


def test_dlr_needs_three_classes_and_dlr_t_four(tiny, make_linear):
    p3 = make_linear(3, n=10)
    apgd(p3.model, p3.x, p3.y, eps=0.1, steps=2, loss="dlr")  # fine
    with pytest.raises(AdvgeomError, match="4 classes"):
        apgd(p3.model, p3.x, p3.y, eps=0.1, steps=2, loss="dlr", targeted=True)
    p2 = make_linear(2, n=10)
    with pytest.raises(AdvgeomError, match="3 classes"):
        apgd(p2.model, p2.x, p2.y, eps=0.1, steps=2, loss="dlr")
    with pytest.raises(AdvgeomError):
        get("attack", "apgd-ce")(p2.model, p2.x, p2.y, eps=0.1, loss="dlr")


def test_aliases_equal_apgd(tiny):
    model, _, x, y = tiny
    for alias, loss in (("apgd-ce", "ce"), ("apgd-dlr", "dlr")):
        a = get("attack", alias)(model, x, y, eps=0.05, steps=5, generator=make_generator(3))
        b = apgd(model, x, y, eps=0.05, steps=5, loss=loss, generator=make_generator(3))
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- peers


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_apgd_matches_pyautoattack(loss, mnist_cnn, racc):
    """Same eps, iterations and one restart: advgeom's robust accuracy is at most
    pyautoattack's + 1 point."""
    base = pytest.importorskip("pyautoattack.autopgd_base")
    m, x, y = mnist_cnn.model, mnist_cnn.x, mnist_cnn.y
    eps, steps = 0.1, 50
    ours = racc(m, x, apgd(m, x, y, eps=eps, steps=steps, loss=loss,
                           generator=make_generator(0)), y)
    with torch.random.fork_rng(devices=[]):  # pyautoattack seeds torch's global RNG
        ref = base.APGDAttack(m, n_iter=steps, norm="Linf", eps=eps, loss=loss, seed=0,
                              device=x.device)
        theirs = racc(m, x, ref.perturb(x, y), y)
    print(f"robust accuracy APGD-{loss.upper()}-{steps} eps={eps}: advgeom {ours:.1f}% "
          f"pyautoattack {theirs:.1f}%")
    assert ours <= theirs + 1.0
    assert 10.0 < theirs < 90.0
