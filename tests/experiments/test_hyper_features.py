"""hyper-features (Fig. 2 from 2-D feature layers, Appendix A): the configs are hyper-mnist's
natural cells with a 2-wide feature layer, the models' features are truly 2-D and signed,
and the measuring helpers give exact answers on hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from advgeom.experiments import hyper_features as HF
from advgeom.experiments import hyper_mnist as HM
from advgeom.registry import get
from advgeom.seeding import seed_everything
from advgeom.train.build import build_model


def test_registered_with_three_profiles():
    exp = get("experiment", "hyper-features")
    assert exp.profiles == ("quick", "cpu", "paper") and exp.reference == "hyperspherical.projection_illustration"


@pytest.mark.parametrize("profile", ["quick", "cpu", "paper"])
def test_configs_are_hyper_mnist_natural_cells_with_2d_features(profile):
    cfgs = HF.feature_configs(profile)
    assert sorted(cfgs) == ["baseline/natural", "dsphere/natural", "dsphere_wm/natural"]
    for label, cfg in cfgs.items():
        arch = label.split("/")[0]
        assert cfg.model == HM.ARCHS[arch] and cfg.model_kwargs["fc_dim"] == 2
        assert cfg.model_kwargs["feature_activation"] is False
        assert (cfg.optimizer, cfg.lr, cfg.train_size) == ("adam", 1e-3, 60_000)
        assert cfg.objective == ("ce" if arch == "baseline" else "dsphere")
    paper = HF.feature_configs("paper")["baseline/natural"]
    assert (paper.iterations, tuple(paper.milestones), paper.batch_size) == (30_000, (10_000, 20_000), 128)
    assert set(paper.model_kwargs) == {"fc_dim", "feature_activation"}   # Table 4's CNN otherwise


def test_sources_cover_the_2d_layer():
    for profile in ("quick", "cpu", "paper"):
        src = HF.feature_sources(profile)
        assert "Figure 2" in src["model_kwargs"].where
    assert HF.feature_sources("cpu")["iterations"].kind == "assumption"


def test_models_have_signed_2d_features():
    seed_everything(0)
    x = torch.rand(64, 1, 28, 28)
    for cfg in HF.feature_configs("quick").values():
        model = build_model(cfg).eval()
        f = HF.features(model, x)
        assert f.shape == (64, 2) and model.feature_dim == 2
        assert (f < 0).any()            # no ReLU after the feature layer


def test_inside_natural_on_a_grid():
    g = np.stack(np.meshgrid(np.arange(5.0), np.arange(5.0)), -1).reshape(-1, 2)   # spacing 1: median NN 1
    adv = np.array([[2.0, 2.0], [2.5, 2.0], [2.0, 3.9], [7.0, 7.0], [-1.2, 0.0]])
    assert HF.inside_natural(adv, g).tolist() == [True, True, True, False, False]
    assert HF.inside_natural(np.zeros((0, 2)), g).shape == (0,)


def test_trajectory_point_prefers_a_fooled_correct_point():
    y = torch.tensor([3, 1, 3, 3])
    pred = torch.tensor([5, 1, 3, 3])
    adv = torch.tensor([5, 1, 3, 8])
    assert HF.trajectory_point(y, pred, adv, 3) == 3      # correct and fooled
    assert HF.trajectory_point(y, pred, pred, 3) == 2     # none fooled: the first correct one
    assert HF.trajectory_point(y, torch.zeros(4, dtype=torch.long), adv, 3) == 0
    with pytest.raises(ValueError):
        HF.trajectory_point(y, pred, adv, 7)


def test_model_view_ends_of_the_trajectory():
    seed_everything(0)
    model = build_model(HF.feature_configs("quick")["dsphere/natural"]).eval()
    x, y = torch.rand(40, 1, 28, 28), torch.arange(40) % 10
    view, st = HF.model_view(model, x, y, 0.3, sphere=True)
    i = st["index"]
    assert y[i] == HF.TRAJECTORY_DIGIT and view.feats.shape == (40, 2) and view.weights.shape == (10, 2)
    assert np.allclose(view.trajectory[0], view.feats[i])
    adv = HF.fgsm_batched(model, x[i:i + 1], y[i:i + 1], 0.3)
    assert np.allclose(view.trajectory[-1], HF.features(model, adv)[0], atol=1e-6)
    assert len(view.adversarial) == st["fooled"] and 0 <= st["inside"] <= st["fooled"]
    assert 0 < st["min_norm_ratio"] <= 1
