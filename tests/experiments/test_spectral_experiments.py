"""Experiments spectral-mnist / spectral-cifar: registration, the eps rule, figure data and plots."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advgeom.errors import AdvgeomError
from advgeom.experiments import _spectral_figures as SF
from advgeom.experiments import spectral as S
from advgeom.experiments.base import Context
from advgeom.registry import get, names
from advgeom.results import ResultStore


class _Curve:
    def __init__(self, acc: dict[float, int]) -> None:
        self.acc = acc   # percent of 100 points

    def accuracy(self, attack: str, eps: float) -> float:
        return self.acc[eps] / 100   # a fraction, as EvalResult.accuracy


def test_registered_with_reference():
    assert {"spectral-mnist", "spectral-cifar"} <= set(names("experiment"))
    assert get("experiment", "spectral-cifar").reference == "spectral.cifar10_cnn7"


def test_eps_rule_picks_the_smallest_eps_that_breaks_almost_all():
    grid = (0.5, 1.0, 2.0, 3.0)
    assert S.choose_eps(_Curve({0.5: 60, 1.0: 6, 2.0: 4, 3.0: 0}), grid, 0.05) == 2.0
    assert S.choose_eps(_Curve({0.5: 5, 1.0: 0, 2.0: 0, 3.0: 0}), grid, 0.05) == 0.5
    assert S.choose_eps(_Curve({0.5: 90, 1.0: 80, 2.0: 70, 3.0: 60}), grid, 0.05) == 3.0


def test_profiles_and_configs():
    q = S.settings("spectral-mnist", "quick")
    assert S.settings("spectral-cifar", "paper")["model"] == "cnn7"
    assert S.settings("spectral-cifar", "paper")["global_lams"] == (3e-4,)
    cfg = S.finetune_config(q, "data_snr", {"lam": 0.1, "eps": 2.0, "iters": 5})
    assert cfg.objective == "data_snr" and cfg.iterations == q["finetune_iters"]
    assert S.natural_config(q).iterations == q["natural_iters"]


def test_spectral_cifar_refuses_the_quick_profile(tmp_path: Path):
    ctx = Context("spectral-cifar", "quick", tmp_path, ResultStore(tmp_path / "r.sqlite"), show_progress=False)
    with pytest.raises(AdvgeomError, match="paper profile"):
        get("experiment", "spectral-cifar").fn(ctx)


def _tiny() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    g = torch.Generator().manual_seed(0)
    return net, torch.rand(6, 1, 4, 4, generator=g), torch.randint(0, 3, (6,), generator=g)


def test_figure_data_shapes_and_plots(tmp_path: Path):
    net, x, y = _tiny()
    g = torch.Generator().manual_seed(1)
    f1 = SF.spectrum_data(net, x, y, 0.5, "l2", g)
    assert len(f1["sv"]) == 3 and f1["sv"] == sorted(f1["sv"], reverse=True)
    assert all(0 <= a <= 1 for a in f1["align"] + f1["align_random"])
    f2 = SF.linearity_data(net, x, y, 0.5, "l2", [0.0, 0.5, 1.0], g)
    assert f2["dev_random"][0] == 0.0 and f2["dev_adversarial"][0] == 0.0
    f3 = SF.alignment_data(net, x, y, [0.1, 0.5], "linf", g)
    assert len(f3["align"]) == 2
    data = {"standard": f1, "random net": f1}
    paths = [SF.figure1(tmp_path / "f1.png", data, "t"),
             SF.figure_linearity(tmp_path / "f2.png", {"standard": f2}, 0.5, "t"),
             SF.figure_accuracy(tmp_path / "f3.png", [0.1, 0.5], {"standard": [50.0, 10.0]},
                                {"standard": f3}, None, "eps", "t")]
    theorem = SF.theorem1_data((1e-5, 1.0), (1.0, 1e6), iters=3)
    paths.append(SF.figure_theorem1(tmp_path / "t1.png", theorem))
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    small = theorem["gaps"]["1e-05"]
    assert small[-1] < small[0] and small[-1] < 1e-4
