"""FAB-T: the box-constrained projection is exact, and the attack agrees with
pyautoattack's FAB-T (robust accuracy within 1 point, median distance within 5%)."""
from __future__ import annotations

import math
import os

import pytest
import torch

from advgeom.attacks._losses import success
from advgeom.attacks.base import PassCounter
from advgeom.attacks.fab import project_to_hyperplane, sort_rows
from advgeom.registry import get
from advgeom.seeding import make_generator

fab = get("attack", "fab")


def peer(module: str):
    """Import a peer library; under CI a missing peer fails instead of skipping."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_exact(norm):
    g = make_generator(0)
    p = torch.rand(64, 30, generator=g, dtype=torch.float64)
    w = torch.randn(64, 30, generator=g, dtype=torch.float64)
    r = torch.randn(64, generator=g, dtype=torch.float64) * 0.5
    d = project_to_hyperplane(p, w, r, norm)
    assert ((p + d) >= -1e-12).all() and ((p + d) <= 1 + 1e-12).all()
    reach = (w * d).sum(1)
    feasible = (w.sign() * r.sign()[:, None] * torch.where(w * r[:, None] > 0, 1 - p, p)
                * w.abs()).sum(1).abs() >= r.abs()
    assert torch.allclose(reach[feasible], r[feasible], atol=1e-9)
    # optimality: no feasible random direction of the same norm does better
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    if norm == "l2":  # without active box constraints the answer is r w / |w|^2
        free = ((p + r[:, None] * w / w.pow(2).sum(1, keepdim=True)) - 0.5).abs().amax(1) < 0.5
        assert torch.allclose(size[free], (r.abs() / w.norm(dim=1))[free], rtol=1e-9)
    else:  # without active box constraints the answer is |r| / |w|_1
        free = (r.abs() / w.abs().sum(1) <= torch.minimum(p, 1 - p).amin(1))
        assert torch.allclose(size[free], (r.abs() / w.abs().sum(1))[free], rtol=1e-9)
    assert free.any()


def _box_hyperplane_cases(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows like FAB's: pixels at 0 or 1 (no room on one side), sparse gradients, and
    targets ``r`` from easy to out of reach of the box."""
    g = make_generator(3)
    p = torch.rand(200, 50, generator=g, dtype=dtype)
    p[p < 0.3] = 0.0
    p[p > 0.85] = 1.0
    w = torch.randn(200, 50, generator=g, dtype=dtype) * (torch.rand(200, 50, generator=g) < 0.6)
    r = torch.randn(200, generator=g, dtype=dtype) * torch.logspace(-2, 1.5, 200, dtype=dtype)
    return p, w, r


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_newton_projection_agrees_with_the_sorted_solve(norm, dtype):
    """Newton's method (the default) and the sort-based solve (its fallback, forced with
    ``newton_steps=0``) are two exact algorithms: same displacement to rounding, also
    when only some rows fall back (``newton_steps=1``)."""
    p, w, r = _box_hyperplane_cases(dtype)
    ref = project_to_hyperplane(p, w, r, norm, newton_steps=0)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for steps in (1, 32):
        d = project_to_hyperplane(p, w, r, norm, newton_steps=steps)
        torch.testing.assert_close(d, ref, atol=tol, rtol=tol)
    reach = (w * ref).sum(1)
    assert ((reach - r).abs() < 1e-4).float().mean() > 0.5   # many rows reach their hyperplane
    assert ((reach - r).abs() > 1e-2).any()                    # and some are out of reach


def test_linf_projection_is_the_linear_programs_optimum():
    """linf: min t s.t. |d_i| <= t, <w, d> = r, 0 <= p + d <= 1 (scipy's HiGHS), on the
    feasible rows: the same norm, and the same displacement where the optimum is unique
    up to coordinates with w_i = 0."""
    linprog = pytest.importorskip("scipy.optimize").linprog
    p, w, r = (v.double() for v in _box_hyperplane_cases(torch.float64))
    d = project_to_hyperplane(p, w, r, "linf")
    checked = 0
    for i in range(0, 200, 7):
        n = p.shape[1]
        c = torch.zeros(n + 1, dtype=torch.float64)
        c[-1] = 1.0
        eye = torch.eye(n, dtype=torch.float64)
        a_ub = torch.cat([torch.cat([eye, -torch.ones(n, 1, dtype=torch.float64)], 1),
                          torch.cat([-eye, -torch.ones(n, 1, dtype=torch.float64)], 1)])
        bounds = [(float(-p[i, j]), float(1 - p[i, j])) for j in range(n)] + [(0, None)]
        res = linprog(c.numpy(), A_ub=a_ub.numpy(), b_ub=torch.zeros(2 * n).numpy(),
                      A_eq=torch.cat([w[i], torch.zeros(1, dtype=torch.float64)])[None].numpy(),
                      b_eq=[float(r[i])], bounds=bounds, method="highs")
        if res.status != 0:     # the hyperplane misses the box: the projection saturates instead
            assert abs(float((w[i] * d[i]).sum())) < abs(float(r[i]))
            continue
        checked += 1
        assert float(d[i].abs().max()) == pytest.approx(res.fun, rel=1e-7, abs=1e-9)
        assert float((w[i] * d[i]).sum()) == pytest.approx(float(r[i]), rel=1e-9, abs=1e-9)
    assert checked >= 10


def test_sort_rows_is_a_stable_sort():
    g = make_generator(1)
    v = torch.rand(40, 200, generator=g)
    v[v < 0.3] = 0.0
    v[v > 0.9] = math.inf
    v[:, 5:9] = 0.5            # ties
    v[:, 11] = math.nan        # w_i = 0 in the projection: sorted last
    for t in (v, v.double()):  # float32: packed NumPy sort; float64: torch.sort
        vals, order = sort_rows(t)
        ref_vals, ref_order = t.sort(dim=1, stable=True)
        assert torch.equal(order, ref_order) and torch.equal(vals.isnan(), ref_vals.isnan())
        assert torch.equal(vals.nan_to_num(-1.0), ref_vals.nan_to_num(-1.0))


@pytest.mark.parametrize("targets", [4, 0], ids=["fab-t", "untargeted"])
def test_infinite_eps_is_minimum_norm(make_linear, targets):
    """A linear model: FAB-T toward the nearest class boundary, and untargeted FAB (the
    closest linearized boundary at each iterate), find the exact minimal distance."""
    p = make_linear(5, n=60, dtype=torch.float32)
    for norm, exact in (("l2", p.dist_l2), ("linf", p.dist_linf)):
        c = PassCounter()
        adv = fab(p.model, p.x, p.y, eps=math.inf, norm=norm, steps=30, num_targets=targets, counter=c)
        with torch.no_grad():
            broken = p.model(adv).argmax(1) != p.y
        d = (adv - p.x).flatten(1)
        size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
        assert broken.all()
        assert (size <= exact.float() * 1.06 + 1e-4).float().mean() >= 0.95
        if not targets:
            assert c.backwards >= 5 * 60   # one backward per class for every linearization


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
@pytest.mark.parametrize("targets", [3, 0], ids=["fab-t", "untargeted"])
def test_agrees_with_pyautoattack(mnist_cnn, norm, eps, targets):
    """FAB-T (3 targets; 1 for the minimum-norm run) and untargeted FAB (``num_targets=0``)
    against pyautoattack's FAB in the same mode.

    The two run the same deterministic first restart in float32 (pyautoattack's FAB casts
    to float32), so they differ by rounding only, and rounding decides the points whose
    minimal distance is within a hair of ``eps`` (CI's CPU: 40 vs 42 robust at linf 0.1,
    another machine: 42 vs 43). Each point the two judge differently at ``eps`` must
    therefore lie on that boundary: a minimum-norm distance within 2% of ``eps`` in either
    run, or the adversarial that breaks it within 2% of ``eps``. The second is needed for
    FAB-T: the minimum-norm runs attack one target, and a point can sit on the eps sphere
    toward the second or third (seen on an Intel Xeon at linf 0.1: two points broken by
    advgeom toward the third-ranked class at distance 0.1000000, the first target's
    minimal distance 0.115 and 0.128 in both implementations)."""
    fab_pt = peer("pyautoattack.fab_pt")
    m, x, y = mnist_cnn.model, mnist_cnn.x[:100], mnist_cnn.y[:100]
    ours = fab(m, x, y, eps=eps, norm=norm, steps=20, num_targets=targets)
    ours_inf = fab(m, x, y, eps=math.inf, norm=norm, steps=20, num_targets=min(targets, 1))
    ref = lambda e, k: fab_pt.FABAttack_PT(m, norm={"linf": "Linf", "l2": "L2"}[norm], n_iter=20,  # noqa: E731
                                           eps=e, targeted=k > 0, n_target_classes=max(k, 1),
                                           device=x.device)
    with torch.random.fork_rng(devices=[]):
        theirs = ref(eps, targets).perturb(x, y)
        theirs_inf = ref(1e9, min(targets, 1)).perturb(x, y)
    size = lambda d: d.flatten(1).abs().amax(1) if norm == "linf" else d.flatten(1).norm(dim=1)  # noqa: E731
    with torch.no_grad():
        ok = m(x).argmax(1) == y
        sa, sb = ok & (m(ours_inf).argmax(1) != y), ok & (m(theirs_inf).argmax(1) != y)
        robust_a, robust_b = ok & (m(ours).argmax(1) == y), ok & (m(theirs).argmax(1) == y)
    a, b = (100.0 * r.double().mean().item() for r in (robust_a, robust_b))
    da, db = size(ours_inf - x)[sa].median(), size(theirs_inf - x)[sb].median()
    print(f"FAB{'-T' if targets else ''} {norm} eps={eps}: advgeom {a:.1f}% pyautoattack {b:.1f}%; "
          f"median distance {da:.4f} vs {db:.4f}")
    near = lambda d: (size(d) / eps - 1).abs() <= 0.02  # noqa: E731
    breaking = torch.where(robust_b[:, None, None, None], ours, theirs)   # the run that broke a differing point
    on_edge = near(ours_inf - x) | near(theirs_inf - x) | near(breaking - x)
    differ = robust_a ^ robust_b
    assert bool(on_edge[differ].all()), f"judged differently off the eps boundary: {differ.nonzero().flatten().tolist()}"
    assert abs(float(da) - float(db)) <= 0.05 * float(db)
    assert abs(int(sa.sum()) - int(sb.sum())) <= 2


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_minimum_norm_distances_equal_pyautoattacks_point_by_point(mnist_cnn, norm):
    """The search follows the reference's argmax rule, so the minimum-norm distances agree
    point by point wherever the reference's point is a success by advgeom's logit margin
    (issue 28: with the margin rule in the search, 5-9 of 98 points came out larger); where
    it is not (a float-noise success on the boundary), advgeom returns the closest iterate
    that is, never a closer one. What advgeom returns always clears the margin."""
    fab_pt = peer("pyautoattack.fab_pt")
    m, x, y = mnist_cnn.model, mnist_cnn.x[:100], mnist_cnn.y[:100]
    ours = fab(m, x, y, eps=math.inf, norm=norm, steps=20, num_targets=1)
    with torch.random.fork_rng(devices=[]):
        theirs = fab_pt.FABAttack_PT(m, norm={"linf": "Linf", "l2": "L2"}[norm], n_iter=20, eps=1e9,
                                     targeted=True, n_target_classes=1, device=x.device).perturb(x, y)
    size = lambda d: d.flatten(1).abs().amax(1) if norm == "linf" else d.flatten(1).norm(dim=1)  # noqa: E731
    with torch.no_grad():
        ok = m(x).argmax(1) == y
        sa, sb = ok & (m(ours).argmax(1) != y), ok & (m(theirs).argmax(1) != y)
        margin = success(m(ours), y, False)
        clear = success(m(theirs), y, False)
    both = sa & sb
    assert int(both.sum()) >= 80 and bool((margin | ~sa).all())
    gap = size(ours - x) - size(theirs - x)
    same = both & clear
    assert int(same.sum()) >= int(both.sum()) - 2
    assert float(gap[same].abs().max()) <= 1e-4, f"{int((gap[same].abs() > 1e-4).sum())} points differ"
    assert bool((gap[both & ~clear] >= -1e-6).all())
