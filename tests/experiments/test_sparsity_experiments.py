"""The sparsity experiments are registered, their configs build the intended models and
their attack lists validate (running them takes minutes: `advgeom reproduce sparsity-*`)."""
from __future__ import annotations

import pytest
import torch

from advgeom.models.sparse_frontend import SparseFrontendModel
from advgeom.attacks.spec import parse_attacks
from advgeom.experiments import sparsity as S
from advgeom.registry import get, names
from advgeom.train.build import build_model


def test_experiments_registered() -> None:
    for name in ("sparsity-table1", "sparsity-table2", "sparsity-curves", "sparsity-cw", "sparsity-theory",
                 "sparsity-l1-sweep"):
        assert name in names("experiment")
        assert get("experiment", name).paper == "sparsification-robustness.txt"


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_configs_build_the_paper_models(profile: str) -> None:
    fe = build_model(S.cnn_config(profile, True))
    assert isinstance(fe, SparseFrontendModel) and fe.front_end.k == 23
    assert fe.front_end.transform.wavelet == "bior4.4" and fe.front_end.transform.level == 1
    for task in S.TASKS:
        sparse = S.fc2_config(profile, task, "sparse_network")
        assert sparse.objective == "l1" and sparse.objective_kwargs["lam"] > 0
        model = build_model(S.fc2_config(profile, task, "none"))
        assert model.body.fc1.out_features == 10 and model.num_classes == 2
    assert S.SETTINGS[profile]["n_cnn"] > 0


@pytest.mark.parametrize("front_end", [False, True])
@pytest.mark.parametrize("binary", [False, True])
def test_attack_lists_validate(front_end: bool, binary: bool) -> None:
    specs = S.paper_specs(front_end, binary) + S.adaptive_specs("quick", front_end, binary)
    labels = [s.label for s in parse_attacks(specs)]
    assert len(labels) == len(set(labels))
    assert ("ll_white" in labels) == front_end
    assert any(s.kind == "black_box" for s in specs)


def test_bpda_attack_runs_on_the_identity_backward_view() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(S.fc2_config("quick", "mnist", "front_end")).eval()
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    kw = dict(eps=0.1, steps=3, step_size=0.05, generator=torch.Generator().manual_seed(2))
    adv = S.bpda("pgd")(model, x, y, **kw)
    kw["generator"] = torch.Generator().manual_seed(2)
    ref = get("attack", "pgd")(model.with_bpda(), x, y, **kw)
    torch.testing.assert_close(adv, ref)
    assert float((adv - x).abs().max()) <= 0.1 + 1e-6
    assert not model.front_end.bpda


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_l1_sweep_is_one_factor_at_a_time_around_table2(profile: str) -> None:
    """The sweep varies the l1 weight at Table 2's length and the length at Table 2's
    weight; it includes Table 2's own setting once, and its configs carry both values."""
    pts = S.sweep_points(profile)
    base = (S.L1_LAM, S.SETTINGS[profile]["fc_iters"])
    assert pts.count(base) == 1 and len(set(pts)) == len(pts)
    assert {lam for lam, it in pts if it == base[1]} == set(S.SWEEP[profile]["lams"])
    assert {it for lam, it in pts if lam == S.L1_LAM} == set(S.SWEEP[profile]["iters"]) | {base[1]}
    for lam, it in pts:
        cfg = S.fc2_config(profile, "mnist", "sparse_network", lam=lam, iterations=it)
        assert cfg.objective == "l1" and cfg.objective_kwargs["lam"] == lam and cfg.iterations == it
    assert S.fc2_config(profile, "mnist", "sparse_network") == S.fc2_config(
        profile, "mnist", "sparse_network", lam=S.L1_LAM, iterations=base[1])
