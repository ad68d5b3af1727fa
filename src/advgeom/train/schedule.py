"""Learning-rate schedules of the training loop, each a closed form of the step.

- ``step`` (the default): ``lr * gamma ** (milestones passed)``, milestones counted in
  iterations or epochs (``schedule_unit``); the schedules of Madry et al. and most
  papers' tables.
- ``piecewise``: linear interpolation of ``lr * lr_factors`` at the knots ``lr_knots``
  (fractions of the run, from 0 to 1), evaluated at ``(step + 1) / total`` as the fast-AT
  code does. Wong, Rice & Kolter (2020), "Fast is better than free", train MNIST with
  knots (0, 0.4, 1) and factors (0, 1, 0) and CIFAR-10 with (0, 0.5, 1) / (0, 1, 0) (the
  "cyclic" rate of their Section 5.1).
- ``onecycle``: Smith & Topin (2019), "Super-convergence": cosine from ``lr / div`` up to
  ``lr`` over the first ``onecycle_pct`` of the steps, then cosine down to
  ``lr / (div * final_div)``; the same values as ``torch.optim.lr_scheduler.OneCycleLR``
  (``anneal_strategy="cos"``, ``three_phase=False``) stepped once per optimizer step.
"""
from __future__ import annotations

import math
from bisect import bisect_right
from typing import TYPE_CHECKING

from advgeom.errors import ConfigError

if TYPE_CHECKING:  # config.py checks its schedule with this module
    from advgeom.train.config import TrainConfig

SCHEDULES = ("step", "piecewise", "onecycle")


def learning_rate(cfg: TrainConfig, step: int, steps_per_epoch: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based) of a run of ``total`` steps."""
    if cfg.schedule == "piecewise":
        return cfg.lr * piecewise(cfg.lr_knots, cfg.lr_factors, (step + 1) / max(total, 1))
    if cfg.schedule == "onecycle":
        return onecycle(cfg.lr, step, total, cfg.onecycle_pct, cfg.onecycle_div, cfg.onecycle_final_div)
    t = step if cfg.schedule_unit == "iteration" else step // max(steps_per_epoch, 1)
    return cfg.lr * cfg.gamma ** sum(t >= m for m in cfg.milestones)


def piecewise(knots: tuple[float, ...], values: tuple[float, ...], t: float) -> float:
    """Linear interpolation of ``values`` at ``knots`` (increasing), constant outside them
    (as ``numpy.interp``)."""
    if t <= knots[0]:
        return float(values[0])
    if t >= knots[-1]:
        return float(values[-1])
    i = bisect_right(knots, t) - 1
    w = (t - knots[i]) / (knots[i + 1] - knots[i])
    return float(values[i] + w * (values[i + 1] - values[i]))


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def onecycle(lr: float, step: int, total: int, pct: float = 0.3, div: float = 25.0,
             final_div: float = 1e4) -> float:
    """One-cycle learning rate at ``step`` of ``total`` (see the module docstring)."""
    initial, low = lr / div, lr / div / final_div
    peak = float(pct * total) - 1.0           # the step at which the rate is ``lr``
    end = float(total - 1)
    if step <= peak:
        return _cos(initial, lr, step / peak) if peak > 0 else lr
    return _cos(lr, low, (step - peak) / (end - peak)) if end > peak else low


def check_schedule(cfg: TrainConfig) -> None:
    """One clear error for a schedule whose settings cannot describe a rate."""
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {cfg.schedule!r}")
    if cfg.schedule == "piecewise":
        k, v = tuple(cfg.lr_knots), tuple(cfg.lr_factors)
        if len(k) < 2 or len(k) != len(v):
            raise ConfigError(f"schedule 'piecewise' needs lr_knots and lr_factors of one length >= 2, "
                              f"got {len(k)} and {len(v)}")
        if k[0] != 0.0 or k[-1] != 1.0 or any(b <= a for a, b in zip(k, k[1:])):
            raise ConfigError(f"lr_knots must increase from 0 to 1 (fractions of the run), got {k}")
        if any(not (math.isfinite(f) and f >= 0) for f in v):
            raise ConfigError(f"lr_factors must be finite and >= 0, got {v}")
    if cfg.schedule == "onecycle":
        if not 0 < cfg.onecycle_pct < 1:
            raise ConfigError(f"onecycle_pct must be in (0, 1), got {cfg.onecycle_pct}")
        for name in ("onecycle_div", "onecycle_final_div"):
            value = getattr(cfg, name)
            if not (math.isfinite(value) and value >= 1):
                raise ConfigError(f"{name} must be finite and >= 1, got {value}")
