"""The robust-accuracy monitor of the training loop and its catastrophic-overfitting rule.

Wong et al. (2020), "Fast is better than free", Section 5: FGSM adversarial training
can collapse within a few steps: PGD accuracy falls to ~0 while FGSM accuracy rises.
Their guard, reproduced here: attack a fixed held-out batch with PGD every N steps,
flag a fall of the robust accuracy far below its best, and keep the best weights.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from advgeom.attacks._common import as_logits, eval_mode
from advgeom.attacks.spec import parse_attack_spec
from advgeom.errors import ConfigError
from advgeom.seeding import derive_seed, make_generator
from advgeom.train.config import TrainConfig


class Monitor:
    """Clean and robust accuracy of the model on a fixed held-out batch and, for training
    curves, on fixed training and test points (``curves``: ``{"train": (x, y), "test": (x, y)}``)."""

    def __init__(self, cfg: TrainConfig, x: Tensor, y: Tensor,
                 curves: dict[str, tuple[Tensor, Tensor]] | None = None) -> None:
        mc = cfg.monitor
        try:
            self.spec = parse_attack_spec(mc.attack)
        except ConfigError as e:
            raise ConfigError(f"monitor.attack: {e}") from None
        eps = mc.eps or cfg.objective_kwargs.get("eps")
        if eps is None:
            raise ConfigError(f"monitor.eps: objective {cfg.objective!r} has no eps; set monitor.eps")
        self.eps = float(eps)
        self.norm = mc.norm or str(cfg.objective_kwargs.get("norm", "linf"))
        self.x, self.y = x, y
        self.curves = dict(curves or {})
        self.seed = cfg.seed

    def _accuracy(self, model: nn.Module, x: Tensor, y: Tensor, g: torch.Generator) -> tuple[float, float]:
        with torch.no_grad():
            clean = as_logits(model(x), len(y)).argmax(1) == y
        adv = self.spec.fn(model, x, y, eps=self.eps, norm=self.norm, generator=g, **self.spec.call_kwargs())
        with torch.no_grad():
            robust = (as_logits(model(adv), len(y)).argmax(1) == y) & clean
        return float(clean.float().mean()), float(robust.float().mean())

    def measure(self, model: nn.Module, step: int) -> dict[str, float]:
        """``{"monitor_clean": .., "monitor_robust": ..}`` in [0, 1] at ``step`` (held-out
        points; none when no point is held out), plus ``monitor_<set>_clean/robust`` per
        curve set."""
        g = make_generator(derive_seed("monitor", self.seed, step), self.x.device)
        out: dict[str, float] = {}
        with eval_mode(model):
            if len(self.y):
                out["monitor_clean"], out["monitor_robust"] = self._accuracy(model, self.x, self.y, g)
            for name, (x, y) in self.curves.items():
                out[f"monitor_{name}_clean"], out[f"monitor_{name}_robust"] = self._accuracy(model, x, y, g)
        return out


def best_monitored(history: list[dict[str, Any]]) -> tuple[float, int]:
    """``(best robust accuracy, its step)`` over the history (``(-1, 0)`` if none);
    the earliest step wins a tie."""
    best, at = -1.0, 0
    for h in history:
        r = h.get("monitor_robust")
        if r is not None and r > best:
            best, at = float(r), int(h["step"])
    return best, at


def overfitting_steps(history: list[dict[str, Any]], drop: float) -> list[int]:
    """Steps whose monitored robust accuracy lies ``drop`` (absolute) or more below the
    best robust accuracy seen up to then: catastrophic overfitting."""
    best, out = -1.0, []
    for h in history:
        r = h.get("monitor_robust")
        if r is None:
            continue
        if best >= 0.0 and best - r >= drop - 1e-12:
            out.append(int(h["step"]))
        best = max(best, float(r))
    return out
