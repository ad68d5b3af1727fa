"""PGD and BIM: exact behaviour on linear models (oracle) and agreement with
torchattacks on a trained MNIST CNN (peer)."""
from __future__ import annotations

import pytest
import torch

from advgeom.attacks.base import PassCounter
from advgeom.errors import AdvgeomError
from advgeom.registry import get
from advgeom.seeding import make_generator

pgd = get("attack", "pgd")
bim = get("attack", "bim")


# ----------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("classes", [1, 2])
@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_binary_linear_breaks_exactly_below_margin(classes, norm, loss, make_linear, broken):
    """On a binary affine model PGD succeeds iff the exact distance is below eps."""
    p = make_linear(classes, n=200)
    d = p.dist_linf if norm == "linf" else p.dist_l2
    eps = float(d.detach().median()) * 1.001
    adv = pgd(p.model, p.x, p.y, eps=eps, norm=norm, steps=20, loss=loss,
              generator=make_generator(0))
    hit = broken(p.model, adv, p.y)
    band = 0.01 if norm == "linf" else 0.03  # l2: the random start's orthogonal part decays slowly
    assert hit[d < eps * (1 - band)].all()
    assert not hit[d > eps * (1 + 1e-9)].any()  # soundness: nothing beyond the exact distance
    assert 0.3 < hit.double().mean() < 0.7


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_multiclass_linear_sound_and_strong(norm, make_linear, broken):
    """5 classes: never beyond the exact distance, always within half of it (PGD may
    stall at the boundary of the highest-logit class; ``multi_target`` is exact)."""
    p = make_linear(5, n=200)
    d = p.dist_linf if norm == "linf" else p.dist_l2
    eps = float(d.detach().median())
    adv = pgd(p.model, p.x, p.y, eps=eps, norm=norm, steps=20, generator=make_generator(0))
    hit = broken(p.model, adv, p.y)
    assert not hit[d > eps * (1 + 1e-9)].any()
    assert hit[d < 0.5 * eps].all()
    assert hit[d < eps].double().mean() > 0.8


def test_step_count_and_budget(tiny):
    model, _, x, y = tiny
    n = x.shape[0]
    c = PassCounter()
    best = pgd(model, x, y, eps=0.1, steps=7, counter=c, early_stop=False)
    assert c.backwards == 7 * n and c.backward_calls == 7
    # probe, 7 gradient steps, then the final iterate only on samples no iterate broke
    with torch.no_grad():
        survivors = int((model(best).argmax(1) == y).sum())
    assert survivors == 0 and c.forward_calls == 1 + 7  # probe + steps; no final forward
    probe = c.forwards - 7 * n
    assert 0 < probe <= n
    c.reset()
    pgd(model, x, y, eps=1e-6, steps=2, counter=c)  # eps too small to break anything: after
    with torch.no_grad():                             # step 1 only the clean-correct samples
        correct = int((model(x).argmax(1) == y).sum())  # are attacked and scored
    assert 0 < correct < n
    assert c.forwards == probe + n + correct + correct and c.forward_calls == 1 + 2 + 1
    c.reset()  # without early stop the second step still runs on the whole batch
    pgd(model, x, y, eps=1e-6, steps=2, counter=c, early_stop=False)
    assert c.forwards == probe + 2 * n + correct and c.forward_calls == 1 + 2 + 1
    c.reset()
    pgd(model, x, y, eps=0.3, steps=5, restarts=3, counter=c)  # restarts only on survivors
    assert c.backwards <= 3 * 5 * n


def test_early_stop_spends_nothing_on_broken_samples(tiny):
    """A sample leaves the batch at its first success: after the first gradient step
    (random start, all n samples) only the still-unbroken ones are forwarded again."""
    model, _, x, y = tiny
    n = x.shape[0]
    c = PassCounter()
    g = make_generator(5)
    adv = pgd(model, x, y, eps=0.3, steps=6, counter=c, generator=g)
    with torch.no_grad():
        broken = int((model(adv).argmax(1) != y).sum())
    assert broken == n  # eps 0.3 breaks the tiny model everywhere ...
    assert c.backwards < 6 * n  # ... and the broken samples stopped costing passes
    c2 = PassCounter()
    full = pgd(model, x, y, eps=0.3, steps=6, counter=c2, generator=make_generator(5),
               early_stop=False)
    assert c2.backwards == 6 * n
    with torch.no_grad():  # same verdict per sample either way
        assert torch.equal(model(adv).argmax(1) != y, model(full).argmax(1) != y)


def test_restarts_never_worse(tiny, broken):
    model, _, x, y = tiny
    one = pgd(model, x, y, eps=0.05, steps=3, generator=make_generator(0))
    many = pgd(model, x, y, eps=0.05, steps=3, restarts=4, generator=make_generator(0))
    assert broken(model, many, y).sum() >= broken(model, one, y).sum()


def test_returns_best_not_last_iterate(make_linear, broken):
    """A huge step oscillates across the boundary; the best iterate is kept."""
    p = make_linear(1, n=100)
    eps = float(p.dist_l2.median())
    kw = dict(eps=eps, norm="l2", steps=1, step_size=100.0, random_start=False)
    hit = broken(p.model, pgd(p.model, p.x, p.y, **kw), p.y)
    assert hit[p.dist_l2 < eps * 0.99].all()


def test_targeted_reaches_target(make_linear):
    p = make_linear(5, n=100)
    target = (p.y + 1) % 5
    adv = pgd(p.model, p.x, target, eps=1.0, norm="linf", steps=30, targeted=True,
              loss="margin", generator=make_generator(0))
    with torch.no_grad():
        assert (p.model(adv).argmax(1) == target).all()


# ----------------------------------------------------------------------------- peers


def test_pgd_matches_torchattacks(mnist_cnn, racc):
    """Same eps/steps/step size and the same random start (a seed of 0 gives
    torchattacks' uniform start and ours the same numbers): advgeom's robust accuracy
    is at most torchattacks' + 1 point."""
    torchattacks = pytest.importorskip("torchattacks")
    m, x, y = mnist_cnn.model, mnist_cnn.x, mnist_cnn.y
    eps, steps = 0.1, 10
    alpha = 2.5 * eps / steps
    ours = racc(m, x, pgd(m, x, y, eps=eps, steps=steps, step_size=alpha,
                          generator=make_generator(0)), y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = racc(m, x, torchattacks.PGD(m, eps=eps, alpha=alpha, steps=steps,
                                             random_start=True)(x, y), y)
    print(f"robust accuracy PGD-10 eps={eps}: advgeom {ours:.1f}% torchattacks {theirs:.1f}%")
    assert ours <= theirs + 1.0
    assert 10.0 < theirs < 90.0  # the setting discriminates


def test_pgd_l2_matches_torchattacks(mnist_cnn, racc):
    torchattacks = pytest.importorskip("torchattacks")
    m, x, y = mnist_cnn.model, mnist_cnn.x, mnist_cnn.y
    eps, steps = 1.5, 10
    alpha = 2.5 * eps / steps
    ours = racc(m, x, pgd(m, x, y, eps=eps, norm="l2", steps=steps, step_size=alpha,
                          generator=make_generator(0)), y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        theirs = racc(m, x, torchattacks.PGDL2(m, eps=eps, alpha=alpha, steps=steps)(x, y), y)
    print(f"robust accuracy PGD-L2-10 eps={eps}: advgeom {ours:.1f}% torchattacks {theirs:.1f}%")
    assert ours <= theirs + 1.0


def test_bim_at_least_as_strong_as_torchattacks(mnist_cnn64):
    """BIM is deterministic: same trajectory as torchattacks (in float64, see
    ``mnist_cnn64``), plus best-iterate tracking, so per-sample it can only break more."""
    torchattacks = pytest.importorskip("torchattacks")
    m, x, y = mnist_cnn64.model, mnist_cnn64.x, mnist_cnn64.y
    eps, steps, alpha = 0.1, 10, 0.02
    ours = bim(m, x, y, eps=eps, steps=steps, step_size=alpha)
    theirs = torchattacks.BIM(m, eps=eps, alpha=alpha, steps=steps)(x, y)
    with torch.no_grad():
        ok_ours = m(ours).argmax(1) == y
        ok_theirs = m(theirs).argmax(1) == y
    assert not (ok_ours & ~ok_theirs).any()


# ----------------------------------------------------------------------------- final_iterate


def test_bim_final_iterate_is_torchattacks_bim(mnist_cnn64):
    """torchattacks' BIM returns its last iterate: ``final_iterate`` returns the same
    points (same deterministic trajectory, in float64: see ``mnist_cnn64``), and the
    default, which keeps a successful iterate of that trajectory if any, breaks every
    point the last iterate breaks."""
    torchattacks = pytest.importorskip("torchattacks")
    m, x, y = mnist_cnn64.model, mnist_cnn64.x, mnist_cnn64.y
    eps, steps, alpha = 0.15, 20, 0.02
    last = bim(m, x, y, eps=eps, steps=steps, step_size=alpha, final_iterate=True, early_stop=False)
    theirs = torchattacks.BIM(m, eps=eps, alpha=alpha, steps=steps)(x, y)
    assert last.dtype == theirs.dtype == torch.float64
    assert (last - theirs).abs().max() <= 1e-12
    any_ = bim(m, x, y, eps=eps, steps=steps, step_size=alpha, early_stop=False)
    with torch.no_grad():
        ok_last, ok_any = m(last).argmax(1) == y, m(any_).argmax(1) == y
    assert not (ok_any & ~ok_last).any()
    assert (x - last).abs().max() <= eps + 1e-6 and last.min() >= 0 and last.max() <= 1


def test_pgd_final_iterate_is_the_last_step(tiny):
    """The final iterate is the trajectory's last point, recomputed here by hand
    (signed steps from the clean input, projection onto the ball and [0,1])."""
    model, _, x, y = tiny
    eps, steps, alpha = 0.1, 6, 0.03
    got = pgd(model, x, y, eps=eps, steps=steps, step_size=alpha, random_start=False,
              final_iterate=True, early_stop=False)
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        g, = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), y, reduction="sum"), xa)
        xa = torch.min(torch.max(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    assert torch.allclose(got, xa, atol=1e-6)
    assert not torch.allclose(got, x)


@pytest.mark.parametrize("name", ["pgd", "bim", "mifgsm"])
def test_final_iterate_refuses_early_stop_and_non_bools(tiny, name):
    model, _, x, y = tiny
    attack = get("attack", name)
    extra = {} if name == "mifgsm" else {"early_stop": True}
    if name != "mifgsm":
        with pytest.raises(AdvgeomError, match="early_stop=false"):
            attack(model, x, y, eps=0.1, steps=2, final_iterate=True, **extra)
    with pytest.raises(AdvgeomError, match="final_iterate must be true or false"):
        attack(model, x, y, eps=0.1, steps=2, final_iterate="yes")
