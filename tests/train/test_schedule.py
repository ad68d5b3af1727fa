"""Learning-rate schedules against their closed forms and PyTorch's OneCycleLR."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from advgeom.errors import ConfigError
from advgeom.train import TrainConfig
from advgeom.train.schedule import learning_rate, onecycle, piecewise


def test_step_schedule_by_iteration_and_epoch() -> None:
    it = TrainConfig(lr=1e-2, milestones=(20, 30), iterations=40)
    assert [learning_rate(it, s, 1, 40) for s in (0, 19, 20, 29, 30, 39)] == pytest.approx(
        [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4])
    ep = TrainConfig(lr=1.0, milestones=(2,), schedule_unit="epoch", gamma=0.5)
    assert learning_rate(ep, 19, 10, 100) == 1.0 and learning_rate(ep, 20, 10, 100) == 0.5


@pytest.mark.parametrize("knots,factors", [((0.0, 0.4, 1.0), (0.0, 1.0, 0.0)),
                                           ((0.0, 0.5, 1.0), (0.0, 1.0, 0.0)),
                                           ((0.0, 0.25, 0.75, 1.0), (0.1, 1.0, 0.5, 0.0))])
def test_piecewise_is_numpy_interp_at_the_fast_at_positions(knots, factors) -> None:
    """Wong et al.'s code: lr = interp(epoch + (i + 1) / batches, [0, 2E/5, E], [0, lr, 0])."""
    epochs, per_epoch, lr = 10, 7, 5e-3
    cfg = TrainConfig(lr=lr, epochs=epochs, schedule="piecewise", lr_knots=knots, lr_factors=factors)
    total = epochs * per_epoch
    for step in range(total):
        epoch, i = divmod(step, per_epoch)
        t = epoch + (i + 1) / per_epoch
        want = np.interp([t], [k * epochs for k in knots], [f * lr for f in factors])[0]
        assert learning_rate(cfg, step, per_epoch, total) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert piecewise((0.0, 1.0), (2.0, 3.0), -1.0) == 2.0 and piecewise((0.0, 1.0), (2.0, 3.0), 2.0) == 3.0


@pytest.mark.parametrize("total,pct,div,final", [(100, 0.3, 25.0, 1e4), (37, 0.25, 10.0, 100.0),
                                                 (8, 0.5, 25.0, 1e4), (1000, 0.1, 5.0, 1.0)])
def test_onecycle_equals_torch_onecyclelr(total, pct, div, final) -> None:
    lr = 0.05
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=pct,
                                                div_factor=div, final_div_factor=final,
                                                anneal_strategy="cos", cycle_momentum=False)
    cfg = TrainConfig(lr=lr, iterations=total, schedule="onecycle", onecycle_pct=pct,
                      onecycle_div=div, onecycle_final_div=final)
    for step in range(total):
        assert learning_rate(cfg, step, 1, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-10)
        opt.step()
        sched.step()
    assert onecycle(lr, 0, total, pct, div, final) == pytest.approx(lr / div)
    assert onecycle(lr, total - 1, total, pct, div, final) == pytest.approx(lr / div / final)


@pytest.mark.parametrize("kw,msg", [
    ({"schedule": "cosine"}, "schedule must be one of"),
    ({"schedule": "piecewise"}, "one length >= 2"),
    ({"schedule": "piecewise", "lr_knots": (0.0, 1.0), "lr_factors": (1.0,)}, "one length"),
    ({"schedule": "piecewise", "lr_knots": (0.0, 0.5), "lr_factors": (0.0, 1.0)}, "from 0 to 1"),
    ({"schedule": "piecewise", "lr_knots": (0.0, 0.6, 0.4, 1.0), "lr_factors": (0, 1, 1, 0)}, "increase"),
    ({"schedule": "piecewise", "lr_knots": (0.0, 1.0), "lr_factors": (0.0, float("nan"))}, "finite"),
    ({"schedule": "onecycle", "onecycle_pct": 1.0}, "onecycle_pct"),
    ({"schedule": "onecycle", "onecycle_div": 0.5}, "onecycle_div"),
])
def test_bad_schedules_are_refused(kw, msg) -> None:
    with pytest.raises(ConfigError, match=msg):
        TrainConfig(**kw)
