"""Multi-Target Attack and APGD-T: one targeted run per wrong class, worst case
kept; exact on multiclass linear models, where untargeted PGD can stall."""
from __future__ import annotations

import pytest
import torch

from advgeom.attacks.base import PassCounter
from advgeom.errors import AdvgeomError
from advgeom.registry import get
from advgeom.seeding import make_generator

mta = get("attack", "multi_target")


@pytest.mark.parametrize("base", ["pgd", "apgd"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_multiclass_linear_breaks_exactly_below_margin(base, norm, make_linear, broken):
    """With the targeted margin loss every run climbs w_t - w_y exactly, so the
    attack succeeds iff the exact distance (nearest of the C-1 half-spaces) < eps."""
    p = make_linear(5, n=200)
    d = p.dist_linf if norm == "linf" else p.dist_l2
    eps = float(d.median()) * 1.001
    adv = mta(p.model, p.x, p.y, eps=eps, norm=norm, steps=20, loss="margin", base=base,
              generator=make_generator(0))
    hit = broken(p.model, adv, p.y)
    band = 0.01 if (norm == "linf" or base == "apgd") else 0.03
    assert hit[d < eps * (1 - band)].all()
    assert not hit[d > eps * (1 + 1e-9)].any()
    untargeted = get("attack", base)(p.model, p.x, p.y, eps=eps, norm=norm, steps=20,
                                    generator=make_generator(0))
    assert hit.sum() >= broken(p.model, untargeted, p.y).sum()


def test_targets_tried_only_on_survivors(tiny):
    model, _, x, y = tiny
    c = PassCounter()
    mta(model, x, y, eps=0.3, steps=4, counter=c)
    assert c.backwards < 4 * 4 * x.shape[0]  # 4 targets, most samples broken early


def test_apgd_t(tiny, make_linear, broken):
    p = make_linear(5, n=100)
    eps = float(p.dist_linf.median())
    adv = get("attack", "apgd-t")(p.model, p.x, p.y, eps=eps, steps=20, num_targets=4)
    hit = broken(p.model, adv, p.y)
    assert hit[p.dist_linf < eps * 0.99].all() and not hit[p.dist_linf > eps * 1.000001].any()
    p3 = make_linear(3, n=10)
    with pytest.raises(AdvgeomError, match="4 classes"):
        get("attack", "apgd-t")(p3.model, p3.x, p3.y, eps=0.1)


def test_bad_base(tiny):
    model, _, x, y = tiny
    with pytest.raises(AdvgeomError, match="base"):
        mta(model, x, y, eps=0.1, base="square")


def test_apgd_t_matches_pyautoattack(mnist_cnn, racc):
    """APGD-T (targeted DLR, top-3 targets) against pyautoattack's APGDAttack_targeted
    with the same iterations and targets: at most + 1 point robust accuracy."""
    base = pytest.importorskip("pyautoattack.autopgd_base")
    m, x, y = mnist_cnn.model, mnist_cnn.x[:150], mnist_cnn.y[:150]
    eps, steps = 0.1, 30
    ours = racc(m, x, get("attack", "apgd-t")(m, x, y, eps=eps, steps=steps, num_targets=3,
                                              generator=make_generator(0)), y)
    with torch.random.fork_rng(devices=[]):
        ref = base.APGDAttack_targeted(m, n_iter=steps, norm="Linf", eps=eps,
                                       n_target_classes=3, seed=0, device=x.device)
        theirs = racc(m, x, ref.perturb(x, y), y)
    print(f"robust accuracy APGD-T-{steps} (3 targets) eps={eps}: advgeom {ours:.1f}% "
          f"pyautoattack {theirs:.1f}%")
    assert ours <= theirs + 1.0
