"""at-mnist: every profile's recipes build, the cpu profile keeps each paper's architecture,
objective and eps, and the cpu path runs end to end on a few points."""
from __future__ import annotations

from dataclasses import replace

import pytest

import advgeom.experiments.at_mnist as at
from advgeom.attacks.spec import parse_attacks
from advgeom.experiments.runner import reproduce
from advgeom.models import create_model
from advgeom.registry import create, get

PAPER_MODELS = {"natural": "small_cnn", "pgd_at": "madry_mnist_cnn", "fgsm_at": "fast_at_mnist_net",
                "trades": "small_cnn", "mart": "small_cnn", "mmc_at": "mmc"}


@pytest.mark.parametrize("profile", ["quick", "cpu", "paper"])
def test_every_recipe_builds(profile):
    assert profile in get("experiment", "at-mnist").profiles
    for defense, cfg in at.at_configs(profile).items():
        create_model(cfg.model, **cfg.model_kwargs)
        create("defense", cfg.objective, **cfg.objective_kwargs)
        assert cfg.objective_kwargs.get("eps", at.EPS) == at.EPS
    parse_attacks(at._attacks(profile))


def test_the_cpu_profile_keeps_the_papers_models_and_objectives():
    cpu, paper = at.at_configs("cpu"), at.at_configs("paper")
    for defense in at.DEFENSES:
        assert cpu[defense].model == paper[defense].model == PAPER_MODELS[defense]
        assert cpu[defense].objective == paper[defense].objective
        assert cpu[defense].model_kwargs.get("base", "") == paper[defense].model_kwargs.get("base", "")
    assert cpu["fgsm_at"] == paper["fgsm_at"]   # Wong et al.'s recipe is already a CPU recipe
    fast = cpu["fgsm_at"]
    assert (fast.schedule, fast.lr_knots, fast.lr_factors, fast.lr) == ("piecewise", (0.0, 0.4, 1.0),
                                                                      (0.0, 1.0, 0.0), 5e-3)
    assert (fast.batch_size, fast.epochs, fast.objective_kwargs["alpha"]) == (100, 10, 0.375)
    assert "apgd-t:num_targets=3" in at._attacks("cpu") and len(at._attacks("cpu")) == 4


def test_cpu_profile_end_to_end_on_a_few_points(tmp_path, monkeypatch):
    """The cpu path (five defenses, the 1,000-point attacks, the suite on its subset) with two
    training steps and a handful of points: every model trains, every number has its n."""
    monkeypatch.setitem(at.CPU, "n", 12)
    monkeypatch.setitem(at.CPU, "suite_n", 6)
    configs = at.at_configs

    def tiny(profile):
        return {d: replace(c, iterations=2, batch_size=16, monitor=replace(c.monitor, size=16))
                for d, c in configs(profile).items()}

    monkeypatch.setattr(at, "at_configs", tiny)
    rep = reproduce("at-mnist", "cpu", root=tmp_path, progress=False, log=lambda m: None)
    comps = {c.label: c for c in rep.outcome.comparisons}
    assert len(comps) == 7 * len(at.DEFENSES)
    suite = [c for c in comps.values() if "standard suite" in c.label]
    assert len(suite) == len(at.DEFENSES) and all(c.n == 6 for c in suite)
    assert all(c.n == 12 for label, c in comps.items() if "standard suite" not in label)
    text = rep.path.read_text()
    assert "Profile `cpu`" in text and "assumption: training length" in text and "| 95% interval |" in text
    assert "Expected cost of this profile: about 6-7 hours on 2 idle CPU cores" in text
