"""Robust geodesic inference (hyperspherical-defense.txt Section 4.3): thresholds from a
constructed feature set, accept/reject by hand, calibration hitting its target on
held-out data, the rejection protocol and the corrected metric (reject-all scores 0)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advgeom.errors import AdvgeomError, ConfigError
from advgeom.eval.rejection import adversarial_rejection_metrics, defended, predict
from advgeom.eval.runner import evaluate
from advgeom.inference import GeodesicRejector, angle_statistics
from advgeom.models.base import Classifier
from advgeom.nn.sphere import SphereHead


def plane_model(classes: int = 2) -> Classifier:
    """Features = the 2-D input itself; class weights along the axes / their negatives."""
    head = SphereHead(2, classes, scale="norm")
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])[:classes]
    with torch.no_grad():
        head.weight.copy_(w)
    return Classifier(nn.Identity(), head, num_classes=classes, input_shape=(2,), feature_dim=2).eval()


def at_angles(angles, radius: float = 1.0) -> torch.Tensor:
    a = torch.tensor(angles)
    return torch.stack([radius * a.cos(), radius * a.sin()], 1)


def test_statistics_and_thresholds_from_constructed_features():
    model = plane_model()
    # class 0 at 0.1 and 0.3 rad from W_0 = e1; class 1 at 0.2, 0.4, 0.6 rad from W_1 = e2
    x = torch.cat([at_angles([0.1, 0.3]), at_angles([math.pi / 2 - 0.2, math.pi / 2 - 0.4,
                                                     math.pi / 2 - 0.6], radius=3.0)])
    y = torch.tensor([0, 0, 1, 1, 1])
    mean, std = angle_statistics(model, x, y)
    torch.testing.assert_close(mean, torch.tensor([0.2, 0.4]), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.tensor([math.sqrt(0.02), 0.2]), atol=1e-4, rtol=0)
    rej = GeodesicRejector.fit(model, x, y, p=1.5)
    torch.testing.assert_close(rej.thresholds, 1.5 * (mean + std))
    # class 0 threshold 1.5 * 0.3414 = 0.512: accept at 0.45 rad, reject at 0.6 rad (still class 0)
    logits, accept = rej.predict_with_rejection(at_angles([0.45, 0.6, -0.5]))
    torch.testing.assert_close(logits, model(at_angles([0.45, 0.6, -0.5])))
    assert logits.argmax(1).tolist() == [0, 0, 0]
    assert accept.tolist() == [True, False, True]


def test_calibration_hits_the_target_on_held_out_data():
    model = plane_model()
    g = torch.Generator().manual_seed(0)
    def draw(n):
        return at_angles((torch.randn(n, generator=g).abs() * 0.3).tolist())
    held, fresh = draw(2000), draw(4000)
    rej = GeodesicRejector(model, torch.tensor([0.25, 0.25]), torch.tensor([0.15, 0.15]))
    p = rej.calibrate(held, 0.1)
    assert p == rej.p and p > 0
    rate_held = 1 - rej.predict_with_rejection(held)[1].float().mean().item()
    rate_fresh = 1 - rej.predict_with_rejection(fresh)[1].float().mean().item()
    assert 0.1 - 1 / 2000 - 1e-6 <= rate_held <= 0.1 + 1e-6
    assert abs(rate_fresh - 0.1) < 0.02
    assert rej.calibrate(held, 0.0) >= float(rej.ratios(held).max())
    assert rej.predict_with_rejection(held)[1].all()


def test_bad_p_and_bad_target_are_clear_errors():
    model = plane_model()
    mean, std = torch.tensor([0.2, 0.2]), torch.tensor([0.1, 0.1])
    for bad in (0, -1.0, float("nan"), float("inf"), "one"):
        with pytest.raises(ConfigError, match="p must"):
            GeodesicRejector(model, mean, std, p=bad)
    rej = GeodesicRejector(model, mean, std)
    for bad in (1.0, -0.1, 2):
        with pytest.raises(ConfigError, match="target"):
            rej.calibrate(torch.rand(4, 2), bad)
    with pytest.raises(ConfigError, match="every class"):
        GeodesicRejector(model, torch.tensor([0.2, float("nan")]), std)
    with pytest.raises(ConfigError, match="head"):
        GeodesicRejector(nn.Linear(2, 2), mean, std)


def test_p_is_part_of_the_state_hash():
    rej = GeodesicRejector(plane_model(), torch.tensor([0.2, 0.2]), torch.tensor([0.1, 0.1]))
    before = {k: v.clone() for k, v in rej.state_dict().items()}
    rej.p = 2.0
    assert not torch.equal(before["p_factor"], rej.state_dict()["p_factor"])


def test_reject_all_scores_zero_and_protocol_works_in_evaluate():
    model = plane_model()
    rej = GeodesicRejector(model, torch.tensor([0.2, 0.2]), torch.tensor([0.1, 0.1]), p=1e-6)
    x = at_angles([0.05, 0.1, 1.5, 1.45], radius=0.5) + 0.5  # inputs in [0, 1]
    y = predict(model, x)[0]
    pred, accept = predict(rej, x)
    assert not accept.any()
    m = adversarial_rejection_metrics(pred == y, accept, defended(pred == y, accept), accept)
    assert m["robust_accuracy_with_rejection"] == 0.0 and m["adv_rejection_rate"] == 100.0
    res = evaluate(rej, (x, y), ["pgd:steps=2"], [0.01], checks=False, progress=False)
    assert res.value("robust_accuracy_with_rejection", "worst_case", 0.01) == 0.0
    assert res.value("clean_rejection_rate", "none") == 100.0


def test_fit_measures_in_eval_mode_and_restores_the_mode():
    """Fitting a BatchNorm model left in training mode must not move its running
    statistics, and must give the statistics of the eval-mode network (issue 28)."""
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.ReLU())
    model = Classifier(body, SphereHead(8, 3), num_classes=3, input_shape=(2,), feature_dim=8)
    x, y = torch.randn(64, 2) * 3 + 1, torch.randint(0, 3, (64,))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rej = GeodesicRejector.fit(model, x, y)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    mean, std = angle_statistics(model, x, y)
    assert torch.equal(rej.mean, mean) and torch.equal(rej.std, std)


def test_statistics_refuse_mismatched_or_malformed_input():
    model = plane_model(3)
    x, y = at_angles([0.1, 0.2, 1.5, 1.6]), torch.tensor([0, 0, 1, 1])
    for labels, match in ((y[:3], r"shape \(3,\) does not match batch size 4"), (y.float(), "int64"),
                          (y.unsqueeze(1), r"shape \(4, 1\)"),
                          (torch.tensor([0, 0, 1, 3]), "label 3 out of range for a model with 3 classes"),
                          (torch.tensor([0, -1, 1, 1]), ">= 0, got -1")):
        with pytest.raises(AdvgeomError, match=match):
            GeodesicRejector.fit(model, x, labels)
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        GeodesicRejector.fit(model, x, y, batch_size=0)
    with pytest.raises(ConfigError, match="3 classes"):
        GeodesicRejector(model, torch.ones(1), torch.ones(1) * 0.1)
    rej = GeodesicRejector(model, torch.ones(3), torch.ones(3) * 0.1)
    with pytest.raises(AdvgeomError, match="geodesic inference: inputs must be a non-empty batch"):
        rej.calibrate(x[:0], 0.1)
