"""The spheres experiments (adversarial-spheres.txt): registration, profile settings,
and an end-to-end smoke run of every one at a tiny scale (reports, figures,
comparisons against the reference numbers, cached reruns)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from advgeom.experiments import _spheres_setup as setup
from advgeom.experiments import spheres
from advgeom.experiments.base import reference
from advgeom.experiments.runner import reproduce
from advgeom.registry import names

NAMES = ["spheres-relu", "spheres-quadratic", "spheres-dimension", "spheres-bound", "spheres-slices"]

TINY = dataclasses.replace(
    setup.QUICK, d=8, relu_width=8, relu_steps=30, random_samples=300, attack_points=4,
    attack_steps=30, attack_step=0.05, shell_points=3, sweep_dims=(3,), sweep_steps=20,
    sweep_points=2, quad_hidden=8, quad_steps=30, quad_n=200, quad_early_steps=(10,),
    mc_samples=500, perfect_d=6, perfect_hidden=8, perfect_steps=20, perfect_eval_every=10,
    perfect_n_eval=50, large_width=8, large_depth=3, bound_sizes=(100, 0), bound_snapshots=(10, 20),
    bound_error_samples=500, bound_points=4, slice_resolution=21, norm_step=0.8, norm_samples=50,
    norm_attack_points=2, d2_n=20, d2_steps=20, dim_grid=(50, 100), dim_targets=(1e-2, 1e-4),
    checkpoint_every=10)


def test_registered():
    registered = names("experiment")
    for n in NAMES:
        assert n in registered


def test_profiles_follow_the_paper_and_quick_is_smaller():
    ref = reference("spheres.setup")
    paper, quick = setup.SETTINGS["paper"], setup.SETTINGS["quick"]
    assert paper.d == ref["d"] and paper.R == ref["R"] == quick.R
    assert (paper.relu_width, paper.relu_depth, paper.relu_steps, paper.relu_lr) == (1000, 2, 10**6, 1e-4)
    assert (paper.large_width, paper.large_depth, paper.quad_hidden) == (2000, 8, 1000)
    tr = reference("spheres.tradeoff")
    assert paper.bound_error_samples == tr["error_rate_samples"] and paper.bound_points == tr["distance_points"]
    assert (paper.attack_steps, paper.attack_step) == (1000, 0.001)
    assert paper.quad_n == reference("spheres.quadratic")["finite_N"]
    assert quick.d < paper.d and quick.relu_steps < paper.relu_steps
    assert quick.random_samples < paper.random_samples
    cfg = setup.relu_config(paper)
    assert cfg.objective == "bce" and cfg.batch_size == 50 and cfg.dataset_kwargs["online"]
    assert setup.quad_config(paper, n=1000).dataset_kwargs == {"d": 500, "R": 1.3, "seed": 0, "n": 1000}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Run every spheres experiment once at the TINY scale in a fresh root."""
    mp = pytest.MonkeyPatch()
    mp.setitem(setup.SETTINGS, "quick", TINY)
    root = tmp_path_factory.mktemp("spheres-runs")
    n = torch.get_num_threads()
    try:
        reports = {name: reproduce(name, "quick", root=root, progress=False, log=lambda *_: None)
                   for name in NAMES}
        yield root, reports
    finally:
        mp.undo()
        torch.set_num_threads(n)


def test_every_experiment_writes_report_figures_and_comparisons(tiny_runs):
    root, reports = tiny_runs
    for name, rep in reports.items():
        assert rep.path.is_file(), name
        assert rep.outcome.comparisons, name
        for fig in rep.outcome.figures:
            assert fig.is_file() and fig.stat().st_size > 1000, (name, fig)
        text = rep.path.read_text()
        assert "Measured vs paper" in text
    assert torch.get_num_threads() >= 1


def test_comparisons_carry_the_paper_numbers(tiny_runs):
    _root, reports = tiny_runs
    rel = reference("spheres.relu_h1000_d2")
    paper = {c.label: c.paper for c in reports["spheres-relu"].outcome.comparisons}
    assert paper["mean l2 to nearest error on the manifold"] == rel["mean_l2_to_nearest_error_on_manifold"]
    assert paper["mean norm of that point"] == rel["mean_norm_of_that_point"]
    quad = {c.label: c for c in reports["spheres-quadratic"].outcome.comparisons}
    assert quad["finite N: CLT estimated inner error rate"].paper == 1e-11
    pi = quad["perfect init: p(y=1) on the inner sphere"]
    assert pi.paper == 0.0016 and abs(pi.measured - 0.0016) < 2e-4  # by construction
    dim = {c.label: c for c in reports["spheres-dimension"].outcome.comparisons}
    assert 0 < dim["d=3000, k/d=0.5: exact error (Beta law)"].measured < 1e-14


def test_rerun_uses_the_cache(tiny_runs):
    """A rerun recomputes no unit and trains nothing: every unit function is made to
    fail, and the stored checkpoints are left untouched (behaviour, not timing)."""
    root, reports = tiny_runs

    def recomputed(*_a, **_k):
        raise AssertionError("a cached unit was recomputed")

    ckpts = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "train" in p.parts}
    assert ckpts
    mp = pytest.MonkeyPatch()
    mp.setitem(setup.SETTINGS, "quick", TINY)
    for name in ("_quad_unit", "worst_case_found"):
        mp.setattr(spheres, name, recomputed)
    mp.setattr(spheres.Q, "track_training", recomputed)
    try:
        again = reproduce("spheres-quadratic", "quick", root=root, progress=False)
    finally:
        mp.undo()
    first = {c.label: c.measured for c in reports["spheres-quadratic"].outcome.comparisons}
    second = {c.label: c.measured for c in again.outcome.comparisons}
    assert first == second
    assert {p: p.stat().st_mtime_ns for p in ckpts} == ckpts
